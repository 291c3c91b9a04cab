"""`ClusterNode` over every backend: one suite, run on the in-process bus and on real Redis.

Several nodes in one process stand for the cluster's processes; connections
are real WebSocket connections to a conformance server per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf.message import Message

from flare_runtime.cluster import (
    ClusterEvent,
    ClusterNode,
    ConnectionAddress,
    LinkState,
    MemberChanged,
    Subscription,
)
from flare_runtime.protocol import frames
from flare_runtime.server_connection import ServerConnection
from flare_runtime.testing.cluster import UNIT, Cluster, Recorder, eventually, text_push
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import BytesValue, Routes, StringValue
from flare_runtime.wire.client import WireChannel


@dataclass
class Client:
    """A real WebSocket client and its connection as the server sees it."""

    channel: WireChannel
    connection: ServerConnection
    pushes: list[Message] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [push.value for push in self.pushes if isinstance(push, StringValue)]


class Servers:
    """One WebSocket server per node, and the clients connected to them."""

    def __init__(self) -> None:
        self.rigs: list[Rig] = []
        self.clients: list[Client] = []

    async def server(self) -> Rig:
        rig = await start_rig("websocket")
        self.rigs.append(rig)
        return rig

    async def client(self, rig: Rig) -> Client:
        before = set(rig.server.connections)
        channel = await rig.channel()
        assert isinstance(channel, WireChannel)
        await channel.unary_unary(Routes.ECHO, BytesValue())
        (connection,) = set(rig.server.connections) - before
        client = Client(channel, connection)
        channel.on_push(client.pushes.append)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.channel.close()
        for rig in self.rigs:
            await rig.server.shutdown(grace=UNIT)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    rigs = Servers()
    try:
        yield rigs
    finally:
        await rigs.close()


async def three_nodes(cluster: Cluster, **options: Any) -> tuple[ClusterNode, ...]:
    return tuple([await cluster.node(**options) for _ in range(3)])


# -- publish: topic, user, connection -------------------------------------------------


async def test_a_topic_event_reaches_every_subscriber_on_every_node_once(cluster: Cluster) -> None:
    a, b, c = await three_nodes(cluster)
    on_a, on_b, on_c, also_on_c = Recorder(), Recorder(), Recorder(), Recorder()
    subscriptions = [
        a.subscribe("room", on_a, on_missed=on_a.on_missed),
        b.subscribe("room", on_b, on_missed=on_b.on_missed),
        c.subscribe("room", on_c, on_missed=on_c.on_missed),
        c.subscribe("room", also_on_c, on_missed=also_on_c.on_missed),
    ]
    for subscription in subscriptions:
        await subscription.ready()
    a.publish("room", text_push("hello"))
    assert on_a.texts == ["hello"]  # the publisher's own subscriber: at once, no broker trip
    await eventually(lambda: on_b.texts == ["hello"] and on_c.texts == ["hello"])
    assert also_on_c.texts == ["hello"]
    assert on_c.events[0] is also_on_c.events[0]  # one event object per node
    assert on_b.events[0].origin_node == a.node_id
    assert on_b.events[0].topic == "room"
    assert on_b.events[0].user_id is None
    await asyncio.sleep(0.2 * UNIT)  # an echo from the broker would arrive by now
    assert on_a.texts == ["hello"]
    assert (len(on_b.events), len(on_c.events), len(also_on_c.events)) == (1, 1, 1)
    assert not (on_a.missed or on_b.missed or on_c.missed)


async def test_events_of_one_publisher_arrive_in_publish_order(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    on_b = Recorder()
    await b.subscribe("log", on_b, on_missed=on_b.on_missed).ready()
    sent = [str(n) for n in range(500)]
    for text in sent:
        a.publish("log", text_push(text))
    await eventually(lambda: len(on_b.events) == len(sent))
    assert on_b.texts == sent


async def test_a_user_event_reaches_every_connection_bound_to_the_user(
    cluster: Cluster, servers: Servers
) -> None:
    a, b, c = await three_nodes(cluster)
    server_b, server_c = await servers.server(), await servers.server()
    alice_phone = await servers.client(server_b)
    alice_laptop = await servers.client(server_c)
    bob = await servers.client(server_c)
    await b.bind_user(alice_phone.connection, "alice").ready()
    await c.bind_user(alice_laptop.connection, "alice").ready()
    await c.bind_user(bob.connection, "bob").ready()
    a.publish_to_user("alice", text_push("for alice"))
    await eventually(lambda: alice_phone.texts == ["for alice"] == alice_laptop.texts)
    await asyncio.sleep(0.2 * UNIT)
    assert bob.pushes == []
    assert alice_phone.texts == ["for alice"]
    # An in-process subscriber of a user's events is told too, on the publishing node.
    on_a = Recorder()
    await a.subscribe_user("alice", on_a, on_missed=on_a.on_missed).ready()
    c.publish_to_user("alice", text_push("again"))
    await eventually(lambda: on_a.texts == ["again"] and alice_phone.texts[-1:] == ["again"])
    assert alice_laptop.texts == ["for alice", "again"]
    assert on_a.events[0].user_id == "alice"


async def test_rebinding_a_connection_moves_it_to_the_new_user(
    cluster: Cluster, servers: Servers
) -> None:
    a, b = await cluster.node(), await cluster.node()
    client = await servers.client(await servers.server())
    b.bind_user(client.connection, "alice")
    await b.bind_user(client.connection, "carol").ready()
    assert b.user_channel("alice") not in b.subscribed_channels()
    a.publish_to_user("alice", text_push("not yours"))
    a.publish_to_user("carol", text_push("yours"))
    await eventually(lambda: client.texts == ["yours"])


async def test_a_connection_is_addressable_from_any_node(
    cluster: Cluster, servers: Servers
) -> None:
    a, b, c = await three_nodes(cluster, count_channels=True)
    client = await servers.client(await servers.server())
    other = await servers.client(servers.rigs[0])
    address = b.address(client.connection)
    assert address.node_id == b.node_id
    assert b.address(client.connection) == address  # stable
    assert ConnectionAddress.parse(str(address)) == address
    assert b.connection(address) is client.connection
    assert a.connection(address) is None  # not a's
    a.publish_to_connection(address, text_push("from a"))
    c.publish_to_connection(address, text_push("from c"))
    b.publish_to_connection(address, text_push("from b"))  # local: directly
    await eventually(lambda: sorted(client.texts) == ["from a", "from b", "from c"])
    await asyncio.sleep(0.2 * UNIT)
    assert other.pushes == []
    # Only the addressed node receives it: the others' links carry nothing of it
    # (nothing but the control channel's heartbeats).
    for node in (a, c):
        assert set(node.stats.by_channel) <= {node.control_channel}


async def test_a_connection_can_be_closed_from_any_node(cluster: Cluster, servers: Servers) -> None:
    a, b = await cluster.node(), await cluster.node()
    client = await servers.client(await servers.server())
    address = b.address(client.connection)
    a.close_connection(address, "kicked: logged in elsewhere")
    async with asyncio.timeout(10 * UNIT):
        await client.connection.wait_closed()
    await eventually(lambda: client.channel.closed)
    assert client.channel.endpoint.close_reason == "kicked: logged in elsewhere"
    assert b.connection(address) is None
    # A push to a connection that is gone does nothing.
    a.publish_to_connection(address, text_push("too late"))
    b.publish_to_connection(address, text_push("too late"))


# -- interest routing -----------------------------------------------------------------


async def test_a_node_without_local_interest_receives_none_of_the_topic(
    cluster: Cluster,
) -> None:
    a, b, c = await three_nodes(cluster, count_channels=True)
    on_b = Recorder()
    await b.subscribe("busy", on_b, on_missed=on_b.on_missed).ready()
    for n in range(50):
        a.publish("busy", text_push(str(n)))
        a.publish("nobody-listens", text_push(str(n)))
    await eventually(lambda: len(on_b.events) == 50)
    await asyncio.sleep(0.2 * UNIT)
    busy = a.topic_channel("busy")
    assert b.stats.by_channel[busy].messages == 50
    assert set(b.stats.by_channel) - {b.control_channel} == {busy}
    # c has no subscriber of either topic: its broker connection carried none of
    # their messages (only the heartbeats every node gets).
    assert set(c.stats.by_channel) <= {c.control_channel}
    assert a.stats.published == 100
    assert await cluster.bus_subscribers(busy) == 1
    assert await cluster.bus_subscribers(a.topic_channel("nobody-listens")) == 0


async def test_the_last_subscriber_leaving_unsubscribes_the_node(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node(count_channels=True)
    first, second = Recorder(), Recorder()
    one = b.subscribe("t", first, on_missed=first.on_missed)
    two = b.subscribe("t", second, on_missed=second.on_missed)
    await two.ready()
    channel = b.topic_channel("t")
    assert b.stats.broker_subscribes == 1  # one broker subscription for both
    one.close()
    one.close()  # idempotent
    assert channel in b.subscribed_channels()
    assert b.stats.broker_unsubscribes == 0
    a.publish("t", text_push("still wanted"))
    await eventually(lambda: second.texts == ["still wanted"])
    assert first.texts == []
    two.close()
    assert channel not in b.subscribed_channels()
    assert b.stats.broker_unsubscribes == 1
    await cluster.wait_bus_subscribers(channel, 0)
    received = b.stats.received_messages
    a.publish("t", text_push("nobody"))
    await asyncio.sleep(0.2 * UNIT)
    assert b.stats.received_messages == received  # not even carried to b
    assert second.texts == ["still wanted"]
    # Subscribing again works from a clean slate.
    third = Recorder()
    await b.subscribe("t", third, on_missed=third.on_missed).ready()
    a.publish("t", text_push("back"))
    await eventually(lambda: third.texts == ["back"])


async def test_a_closing_connection_leaves_all_its_topics(
    cluster: Cluster, servers: Servers
) -> None:
    a, b = await cluster.node(), await cluster.node()
    rig = await servers.server()
    leaving, staying = await servers.client(rig), await servers.client(rig)
    for topic in ("x", "y", "z"):
        b.join(leaving.connection, topic)
    b.join(staying.connection, "z")
    await b.bind_user(leaving.connection, "alice").ready()
    assert b.join(leaving.connection, "x") is b.join(leaving.connection, "x")  # idempotent
    assert sorted(b.topics_of(leaving.connection)) == ["x", "y", "z"]
    b.leave(leaving.connection, "y")
    b.leave(leaving.connection, "y")
    assert sorted(b.topics_of(leaving.connection)) == ["x", "z"]
    wanted = {b.topic_channel("x"), b.topic_channel("z"), b.user_channel("alice")}
    assert b.subscribed_channels() == wanted
    await leaving.channel.close()
    async with asyncio.timeout(10 * UNIT):
        await leaving.connection.wait_closed()
    assert b.subscribed_channels() == {b.topic_channel("z")}
    assert b.topics_of(leaving.connection) == []
    for channel in wanted - {b.topic_channel("z")}:
        await cluster.wait_bus_subscribers(channel, 0)
    a.publish("z", text_push("z"))
    await eventually(lambda: staying.texts == ["z"])
    with pytest.raises(Exception, match="closed"):
        b.join(leaving.connection, "x")


# -- encode once ----------------------------------------------------------------------


async def test_a_fan_out_to_many_connections_builds_one_frame_per_node(
    cluster: Cluster, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await cluster.node(), await cluster.node()
    rig_a, rig_b = await servers.server(), await servers.server()
    on_a = [await servers.client(rig_a) for _ in range(3)]
    on_b = [await servers.client(rig_b) for _ in range(4)]
    for client in on_a:
        a.join(client.connection, "room")
    for client in on_b:
        await b.join(client.connection, "room").ready()
    built: list[int] = []
    encode_push = frames.encode_push

    def counting_encode_push(type_id: int, payload: bytes) -> bytes:
        built.append(type_id)
        return encode_push(type_id, payload)

    monkeypatch.setattr(frames, "encode_push", counting_encode_push)
    a.publish("room", text_push("once"))
    assert len(built) == 1  # a's three connections share one frame
    await eventually(lambda: all(client.texts == ["once"] for client in on_a + on_b))
    assert len(built) == 2  # and b's four share another
    assert b.stats.prepared_pushes == 1
    assert b.stats.delivered == 4


# -- delivery details -----------------------------------------------------------------


async def test_a_failing_subscriber_does_not_stop_the_others(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await cluster.node(), await cluster.node()

    def broken(event: ClusterEvent) -> None:
        raise RuntimeError("subscriber bug")

    on_b = Recorder()
    b.subscribe("t", broken, on_missed=on_b.on_missed)
    await b.subscribe("t", on_b, on_missed=on_b.on_missed).ready()
    for n in range(3):
        a.publish("t", text_push(str(n)))
    await eventually(lambda: on_b.texts == ["0", "1", "2"])
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, not per event


async def test_a_subscriber_may_publish_and_unsubscribe_during_delivery(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    echoes = Recorder()
    await a.subscribe("echo", echoes, on_missed=echoes.on_missed).ready()
    subscriptions: list[Subscription] = []

    def reply_once(event: ClusterEvent) -> None:
        b.publish("echo", event.push)
        subscriptions[0].close()

    subscriptions.append(b.subscribe("ping", reply_once, on_missed=echoes.on_missed))
    await subscriptions[0].ready()
    a.publish("ping", text_push("1"))
    await eventually(lambda: echoes.texts == ["1"])
    a.publish("ping", text_push("2"))
    await asyncio.sleep(0.2 * UNIT)
    assert echoes.texts == ["1"]


async def test_a_slow_connection_is_closed_not_buffered_without_bound(
    cluster: Cluster, servers: Servers
) -> None:
    a, b = await cluster.node(), await cluster.node(max_connection_backlog=64 * 1024)
    rig = await servers.server()
    slow, fast = await servers.client(rig), await servers.client(rig)
    b.join(slow.connection, "firehose")
    await b.join(fast.connection, "firehose").ready()
    slow.channel.endpoint.transport.pause_reading()
    big = "x" * 16 * 1024
    async with asyncio.timeout(30 * UNIT):
        while not slow.connection.closed:
            a.publish("firehose", text_push(big))
            await asyncio.sleep(0.001)
    assert b.stats.slow_consumers == 1
    assert b.topics_of(slow.connection) == [] or slow.connection.closed
    async with asyncio.timeout(10 * UNIT):
        await slow.connection.wait_closed()  # aborted if it never reads the close
    assert b.topics_of(slow.connection) == []
    a.publish("firehose", text_push("after"))
    await eventually(lambda: fast.texts[-1:] == ["after"])


async def test_the_link_state_is_up_once_started(cluster: Cluster) -> None:
    node = await cluster.node()
    assert node.state is LinkState.UP
    changes: list[object] = []
    node.add_link_listener(changes.append)
    await node.close()
    assert node.state is not LinkState.UP
    assert changes == []  # closing is not an outage
    with pytest.raises(Exception, match="closed"):
        node.subscribe("t", Recorder(), on_missed=Recorder().on_missed)


# -- membership -----------------------------------------------------------------------


async def test_nodes_learn_of_each_other_and_of_a_node_that_leaves(cluster: Cluster) -> None:
    a, b, c = await three_nodes(cluster, heartbeat_interval=0.05, node_timeout=2.0)
    changes: list[MemberChanged] = []
    a.add_member_listener(changes.append)
    await eventually(lambda: a.members() == {b.node_id, c.node_id})
    await eventually(lambda: b.members() == {a.node_id, c.node_id})
    assert {change.node_id for change in changes if change.joined} <= {b.node_id, c.node_id}
    on_a = Recorder()
    await a.subscribe("t", on_a, on_missed=on_a.on_missed).ready()
    c.publish("t", text_push("last words"))
    await c.close()
    await eventually(lambda: a.members() == {b.node_id} and b.members() == {a.node_id})
    assert changes[-1] == MemberChanged(c.node_id, joined=False, reason="left")
    assert on_a.texts == ["last words"]  # published before it left: delivered
    assert on_a.missed == []  # a graceful leave is no gap


async def test_a_node_that_falls_silent_times_out_and_is_reported_as_a_gap(
    cluster: Cluster,
) -> None:
    a = await cluster.node(heartbeat_interval=0.05, node_timeout=0.5)
    b = await cluster.node(heartbeat_interval=0.05, node_timeout=0.5)
    silent_broker = cluster.broker()
    silent = await cluster.node(broker=silent_broker, heartbeat_interval=0.05, node_timeout=0.5)
    on_a = Recorder()
    await a.subscribe("t", on_a, on_missed=on_a.on_missed).ready()
    await eventually(lambda: silent.node_id in a.members())
    changes: list[MemberChanged] = []
    a.add_member_listener(changes.append)
    await silent_broker.close()  # its link vanishes: no goodbye, as when a process dies
    await eventually(lambda: silent.node_id not in a.members())
    assert MemberChanged(silent.node_id, joined=False, reason="timed out") in changes
    assert on_a.missed  # it may have died with events never published
    await eventually(lambda: silent.node_id not in b.members())


def test_heartbeats_must_fit_in_the_node_timeout() -> None:
    with pytest.raises(ValueError, match="node_timeout"):
        ClusterNode(heartbeat_interval=1.0, node_timeout=2.0)


def test_node_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="node id"):
        ClusterNode(node_id="has space")
    with pytest.raises(ValueError, match="node id"):
        ClusterNode(node_id="x" * 256)
    assert ClusterNode().node_id != ClusterNode().node_id
    with pytest.raises(ValueError, match="not a connection address"):
        ConnectionAddress.parse("no-slash")
    with pytest.raises(ValueError, match="not a connection address"):
        ConnectionAddress.parse("node/-1")


async def test_a_subscriber_closed_during_a_fan_out_gets_nothing_more(cluster: Cluster) -> None:
    node = await cluster.node()
    later = Recorder()
    subscriptions: list[Subscription] = []

    def close_the_other(event: ClusterEvent) -> None:
        subscriptions[1].close()

    subscriptions.append(node.subscribe("t", close_the_other, on_missed=later.on_missed))
    subscriptions.append(node.subscribe("t", later, on_missed=later.on_missed))
    node.publish("t", text_push("first"))
    assert later.texts == []
