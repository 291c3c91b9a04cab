"""`RedisBroker`'s failures, on real ``redis-server`` processes: restart, cut links, stalls.

Tests that kill, stop or restart Redis use a server of their own (`own_redis`);
the others use the shared one under a namespace of their own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio

from flare_runtime.cluster import (
    ClusterNode,
    LinkChanged,
    LinkState,
    MemberChanged,
)
from flare_runtime.cluster import node as node_module
from flare_runtime.cluster.redis_broker import RedisBroker
from flare_runtime.server_connection import ServerConnection
from flare_runtime.testing.cluster import (
    UNIT,
    Cluster,
    Recorder,
    RedisProcess,
    eventually,
    text_push,
)
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import BytesValue, Routes, StringValue
from flare_runtime.wire.client import WireChannel

NodeFactory = Callable[..., Awaitable[ClusterNode]]


@pytest.fixture
async def fast_node() -> AsyncIterator[NodeFactory]:
    """Make started nodes whose brokers reconnect quickly; all closed at the end."""
    made: list[ClusterNode] = []

    async def make(
        url: str,
        *,
        wait: bool = True,
        ping_interval: float = 5.0,
        max_publish_backlog: int = 1 << 24,
        on_connection_missed: Callable[[ServerConnection], None] | None = None,
    ) -> ClusterNode:
        broker = RedisBroker(
            url,
            reconnect_delay=0.02,
            max_reconnect_delay=0.2,
            ping_interval=ping_interval,
            max_publish_backlog=max_publish_backlog,
        )
        node = ClusterNode(broker, on_connection_missed=on_connection_missed)
        made.append(node)
        await node.start()
        if wait:
            async with asyncio.timeout(10 * UNIT):
                await node.wait_up()
        return node

    try:
        yield make
    finally:
        for node in made:
            await node.close()


async def test_a_redis_restart_is_reported_and_live_delivery_resumes(
    own_redis: RedisProcess, fast_node: NodeFactory
) -> None:
    a, b = await fast_node(own_redis.url), await fast_node(own_redis.url)
    on_a, on_b = Recorder(), Recorder()
    a_changes: list[LinkChanged] = []
    b_changes: list[LinkChanged] = []
    a.add_link_listener(a_changes.append)
    b.add_link_listener(b_changes.append)
    await a.subscribe("room", on_a, on_missed=on_a.on_missed).ready()
    await b.subscribe("room", on_b, on_missed=on_b.on_missed).ready()
    a.publish("room", text_push("before"))
    await eventually(lambda: on_b.texts == ["before"])
    try:
        own_redis.kill()
        await eventually(lambda: a.state is LinkState.DOWN and b.state is LinkState.DOWN)
        assert b_changes == [LinkChanged(LinkState.DOWN, missed=True, reason=b_changes[0].reason)]
        assert on_b.missed == []  # told once the link is back, when a Sync would be complete
        # While Redis is down publishing does not block or fail: it is dropped for the
        # other nodes (and reported to them later) and still reaches local subscribers.
        a.publish("room", text_push("during"))
        assert a.stats.publish_dropped == 1
        assert on_a.texts == ["before", "during"]
        await asyncio.sleep(0.3 * UNIT)  # several reconnect attempts fail meanwhile
        await own_redis.start()
        await eventually(lambda: a.state is LinkState.UP and b.state is LinkState.UP)
        assert [change.state for change in b_changes] == [LinkState.DOWN, LinkState.UP]
        assert b_changes[-1].missed
        # b is told by its own reconnect, and again by a's report of what it dropped:
        # a gap may be reported more than once, never not at all.
        assert on_b.missed and {s.topic for s in on_b.missed} == {"room"}
        assert on_a.missed
        a.publish("room", text_push("after"))
        await eventually(lambda: on_b.texts == ["before", "after"])
        b.publish("room", text_push("back"))
        await eventually(lambda: on_a.texts[-1:] == ["back"])
    finally:
        await a.close()
        await b.close()


async def test_connections_are_told_of_a_gap_by_the_hook_or_closed(
    own_redis: RedisProcess, fast_node: NodeFactory
) -> None:
    told: list[ServerConnection] = []
    a = await fast_node(own_redis.url)
    closing = await fast_node(own_redis.url)  # default hook: close with a reason
    hooked = await fast_node(own_redis.url, on_connection_missed=told.append)
    rig = await start_rig("websocket")
    channels: list[WireChannel] = []
    try:
        for _ in range(2):
            channel = await rig.channel()
            assert isinstance(channel, WireChannel)
            await channel.unary_unary(Routes.ECHO, BytesValue())
            channels.append(channel)
        first, second = rig.server.connections
        await closing.join(first, "news").ready()
        await hooked.join(second, "news").ready()
        own_redis.kill()
        await eventually(lambda: closing.state is LinkState.DOWN)
        await own_redis.start()
        await eventually(lambda: closing.state is hooked.state is a.state is LinkState.UP)
        async with asyncio.timeout(10 * UNIT):
            await first.wait_closed()
        closed = next(channel for channel in channels if channel.closed)
        assert "missed" in closed.endpoint.close_reason
        assert told == [second]
        assert not second.closed
        received: list[object] = []
        open_channel = next(channel for channel in channels if not channel.closed)
        open_channel.on_push(received.append)
        a.publish("news", text_push("live again"))
        await eventually(lambda: received == [StringValue(value="live again")])
    finally:
        for channel in channels:
            await channel.close()
        await rig.server.shutdown(grace=UNIT)
        for node in (a, closing, hooked):
            await node.close()


async def _kill_clients(admin: redis.asyncio.Redis, name: str) -> int:
    """CLIENT KILL every connection named `name`; returns how many."""
    killed = 0
    for client in await admin.client_list():
        if client.get("name") == name:
            killed += int(await admin.client_kill_filter(_id=client["id"]))
    return killed


async def test_a_publisher_cut_off_alone_tells_the_subscribers_what_it_dropped(
    redis_cluster: Cluster,
) -> None:
    """Only the publisher's link breaks: the other nodes see no outage, yet learn of the gap."""
    name = f"flare-{redis_cluster.namespace}-a"
    a = await redis_cluster.node(broker=redis_cluster.broker(client_name=name))
    b = await redis_cluster.node()
    on_b, other_topic = Recorder(), Recorder()
    b_changes: list[LinkChanged] = []
    b.add_link_listener(b_changes.append)
    await b.subscribe("room", on_b, on_missed=on_b.on_missed).ready()
    await b.subscribe("elsewhere", other_topic, on_missed=other_topic.on_missed).ready()
    a.publish("room", text_push("before"))
    await eventually(lambda: on_b.texts == ["before"])
    assert redis_cluster.admin is not None
    assert await _kill_clients(redis_cluster.admin, name) == 2
    a.publish("room", text_push("lost"))  # dropped or unacknowledged: reported either way
    await eventually(lambda: len(on_b.missed) == 1)
    assert on_b.missed[0].topic == "room"
    assert other_topic.missed == []  # only the channels a dropped are reported
    assert b_changes == []  # b's own link never failed
    await eventually(lambda: a.state is LinkState.UP)
    a.publish("room", text_push("after"))
    await eventually(lambda: on_b.texts[-1:] == ["after"])
    assert "lost" not in on_b.texts or on_b.texts.index("lost") == 1


async def test_direct_pushes_a_cut_off_publisher_dropped_are_reported_per_connection(
    redis_cluster: Cluster,
) -> None:
    """A push to one connection, lost with the publisher's link: that node's connections
    are told through the on_connection_missed hook."""
    name = f"flare-{redis_cluster.namespace}-a"
    a = await redis_cluster.node(broker=redis_cluster.broker(client_name=name))
    told: list[ServerConnection] = []
    b = await redis_cluster.node(on_connection_missed=told.append)
    rig = await start_rig("websocket")
    try:
        channel = await rig.channel()
        await channel.unary_unary(Routes.ECHO, BytesValue())
        (connection,) = rig.server.connections
        address = b.address(connection)
        assert redis_cluster.admin is not None
        await _kill_clients(redis_cluster.admin, name)
        a.publish_to_connection(address, text_push("lost"))
        await eventually(lambda: told == [connection])
        await channel.close()
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_too_many_dropped_channels_are_reported_as_a_loss_of_everything(
    redis_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "MAX_LOST_CHANNELS", 3)
    name = f"flare-{redis_cluster.namespace}-a"
    a = await redis_cluster.node(broker=redis_cluster.broker(client_name=name))
    b = await redis_cluster.node()
    on_b = Recorder()
    await b.subscribe("quiet", on_b, on_missed=on_b.on_missed).ready()
    assert redis_cluster.admin is not None
    await _kill_clients(redis_cluster.admin, name)
    await eventually(lambda: a.state is LinkState.DOWN)
    for n in range(5):
        a.publish(f"busy-{n}", text_push("dropped"))
    # "quiet" got nothing, but a can no longer say which channels it dropped.
    await eventually(lambda: len(on_b.missed) == 1)
    assert on_b.missed[0].topic == "quiet"


async def test_a_node_started_before_redis_comes_up_later(
    own_redis: RedisProcess, fast_node: NodeFactory
) -> None:
    own_redis.kill()
    early = await fast_node(own_redis.url, wait=False)
    changes: list[LinkChanged] = []
    early.add_link_listener(changes.append)
    on_early = Recorder()
    subscription = early.subscribe("t", on_early, on_missed=on_early.on_missed)
    early.publish("t", text_push("local only"))  # Redis down: dropped for others
    assert on_early.texts == ["local only"]
    try:
        await asyncio.sleep(0.2 * UNIT)
        assert early.state is LinkState.DOWN
        await own_redis.start()
        async with asyncio.timeout(10 * UNIT):
            await subscription.ready()
        await eventually(lambda: early.state is LinkState.UP)
        assert changes == [LinkChanged(LinkState.UP, missed=False)]  # first start: no gap
        assert on_early.missed == []
        late = await fast_node(own_redis.url)
        late.publish("t", text_push("from late"))
        await eventually(lambda: on_early.texts == ["local only", "from late"])
        await late.close()
    finally:
        await early.close()


async def test_a_stalled_redis_is_detected_by_ping_and_left(
    own_redis: RedisProcess, fast_node: NodeFactory
) -> None:
    """SIGSTOP: the socket stays open but nothing answers (a half-open link)."""
    a = await fast_node(own_redis.url, ping_interval=0.2)
    changes: list[LinkChanged] = []
    a.add_link_listener(changes.append)
    on_a = Recorder()
    await a.subscribe("t", on_a, on_missed=on_a.on_missed).ready()
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        await eventually(lambda: a.state is LinkState.DOWN, timeout=10 * UNIT)
        assert "PING" in changes[0].reason or "Timeout" in changes[0].reason
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    await eventually(lambda: a.state is LinkState.UP)
    assert len(on_a.missed) == 1
    await a.close()


async def test_a_publish_backlog_redis_cannot_take_resets_the_link(
    own_redis: RedisProcess, fast_node: NodeFactory
) -> None:
    a = await fast_node(own_redis.url, max_publish_backlog=64 * 1024, ping_interval=30.0)
    b = await fast_node(own_redis.url)
    on_b = Recorder()
    await b.subscribe("t", on_b, on_missed=on_b.on_missed).ready()
    changes: list[LinkChanged] = []
    a.add_link_listener(changes.append)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        payload = "x" * 4096
        async with asyncio.timeout(10 * UNIT):
            while a.state is LinkState.UP:
                a.publish("t", text_push(payload))
                await asyncio.sleep(0)
        assert "backlog" in changes[0].reason
        assert a.stats.publish_dropped >= 1
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    await eventually(lambda: a.state is LinkState.UP and len(on_b.missed) >= 1)
    a.publish("t", text_push("fine"))
    await eventually(lambda: on_b.texts[-1:] == ["fine"])
    await a.close()
    await b.close()


async def test_subscription_churn_ends_in_the_wanted_state(redis_cluster: Cluster) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    on_b = Recorder()
    for _ in range(50):
        b.subscribe("churn", on_b, on_missed=on_b.on_missed).close()
        await asyncio.sleep(0)
    channel = b.topic_channel("churn")
    await redis_cluster.wait_bus_subscribers(channel, 0)
    for _ in range(20):
        b.subscribe("churn", on_b, on_missed=on_b.on_missed).close()
    last = b.subscribe("churn", on_b, on_missed=on_b.on_missed)
    async with asyncio.timeout(10 * UNIT):
        await last.ready()
    assert await redis_cluster.bus_subscribers(channel) == 1
    a.publish("churn", text_push("in"))
    await eventually(lambda: on_b.texts == ["in"])
    last.close()
    await redis_cluster.wait_bus_subscribers(channel, 0)
    assert isinstance(b._broker, RedisBroker)
    assert channel not in b._broker.active_channels


NODE_PROCESS = """
import asyncio, sys
from flare_runtime.cluster import ClusterNode
from flare_runtime.cluster.redis_broker import RedisBroker

async def main() -> None:
    node = ClusterNode(
        RedisBroker(sys.argv[1]), namespace=sys.argv[2], node_id=sys.argv[3],
        heartbeat_interval=0.05, node_timeout=0.5,
    )
    await node.start()
    await node.wait_up()
    print("READY", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_node_process_killed_with_sigkill_is_found_gone(
    redis_cluster: Cluster,
) -> None:
    """A real process dies without a word: the others drop it and report a possible gap."""
    a = await redis_cluster.node(heartbeat_interval=0.05, node_timeout=0.5)
    on_a = Recorder()
    await a.subscribe("t", on_a, on_missed=on_a.on_missed).ready()
    changes: list[MemberChanged] = []
    a.add_member_listener(changes.append)
    victim_id = f"victim-{redis_cluster.namespace}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NODE_PROCESS,
        redis_cluster.url,
        redis_cluster.namespace,
        victim_id,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30 * UNIT):
            assert (await process.stdout.readline()).strip() == b"READY"
        await eventually(lambda: victim_id in a.members())
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await eventually(lambda: victim_id not in a.members())
        assert changes[-1] == MemberChanged(victim_id, joined=False, reason="timed out")
        assert on_a.missed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
