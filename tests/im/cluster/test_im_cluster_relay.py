"""The IM across nodes, in one process: cores on one bus (or Redis) and one PostgreSQL schema.

Each core is a node of its own (its own `ClusterNode`, storage pool and
registry lease); devices are `QueueSink`s. The multi-process tests
(test_im_cluster_processes.py) run the same promises over real sockets.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from flare.im.v1 import content_pb2, events_pb2

from flare_runtime.errors import ConfigurationError
from flare_runtime.im import events
from flare_runtime.im.cluster.relay import conversation_topic
from flare_runtime.im.core import DevicePolicy, ImCore, Session, SyncCursor
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, NewMessage, SqliteStorage
from flare_runtime.testing.cluster import RedisProcess, eventually
from flare_runtime.testing.im_cluster import ImNodes

_CHANGE = events_pb2.MembershipChanged


def text(body: str) -> bytes:
    return content_pb2.Content(text=content_pb2.TextContent(text=body)).SerializeToString()


class Device:
    """A device's sink and what it received, decoded."""

    def __init__(self) -> None:
        self.sink = QueueSink()
        self.received: list[events_pb2.Event] = []
        self.session: Session | None = None

    def read(self) -> list[events_pb2.Event]:
        self.received.extend(events.to_event(t, p) for t, p in self.sink.take())
        return self.received

    def of(self, kind: str) -> list[Any]:
        return [getattr(e, kind) for e in self.read() if e.WhichOneof("event") == kind]

    def seqs(self, conversation_id: str) -> list[int]:
        return [
            m.message.seq
            for m in self.of("message_received")
            if m.message.conversation_id == conversation_id
        ]

    async def wait(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        await eventually(lambda: len(self.of(kind)) >= count, timeout)
        return self.of(kind)


async def login(core: ImCore, user: str, device_id: str, **kwargs: Any) -> Device:
    device = Device()
    device.session, _ = await core.open_session(user, device_id, 1, device.sink, **kwargs)
    return device


def session(device: Device) -> Session:
    assert device.session is not None
    return device.session


def followed(core: ImCore) -> dict[str, set[str]]:
    """The conversations the core's node follows, and for which local users."""
    assert core.cluster is not None
    return core.cluster.followed()


async def following(core: ImCore, *conversation_ids: str) -> None:
    """Wait until the core's node follows these conversations."""
    await eventually(lambda: set(conversation_ids) <= set(followed(core)))


async def has_messages(device: Device, conversation_id: str, count: int) -> list[int]:
    """Wait until the device has `count` messages of the conversation; their seqs."""
    await eventually(lambda: len(device.seqs(conversation_id)) >= count)
    return device.seqs(conversation_id)


async def test_a_room_and_a_direct_conversation_reach_every_device_once_in_order(
    nodes: ImNodes,
) -> None:
    """Senders on two nodes, devices on three: every device gets every message once, by seq."""
    a, b, c = await nodes.core(), await nodes.core(), await nodes.core()
    alice_laptop, bob_phone = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    alice_phone = await login(c, "alice", "phone")
    room = await a.create_room(session(alice_laptop), "r", ["bob"])
    direct = await b.open_direct(session(bob_phone), "alice")
    room_id, direct_id = room.record.conversation_id, direct.record.conversation_id
    # Both nodes follow both conversations before anyone sends.
    for core in (a, b, c):
        await following(core, room_id, direct_id)

    async def send(core: ImCore, device: Device, conversation: str, prefix: str) -> None:
        for n in range(20):
            await core.send(session(device), conversation, f"{prefix}{n}", text(f"{prefix}{n}"))

    await asyncio.gather(
        send(a, alice_laptop, room_id, "a"),
        send(b, bob_phone, room_id, "b"),
        send(c, alice_phone, direct_id, "c"),
        send(b, bob_phone, direct_id, "d"),
    )
    for device in (alice_laptop, bob_phone, alice_phone):
        assert await has_messages(device, room_id, 40) == list(range(1, 41))
        assert await has_messages(device, direct_id, 40) == list(range(1, 41))


async def test_a_retry_on_another_node_returns_the_original_reply(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    on_a, on_b = await login(a, "alice", "laptop"), await login(b, "alice", "phone")
    room = await a.create_room(session(on_a), "r", [])
    first = await a.send(session(on_a), room.record.conversation_id, "m-1", text("once"))
    retry = await b.send(session(on_b), room.record.conversation_id, "m-1", text("once"))
    assert retry.duplicate and not first.duplicate
    assert retry.message == first.message


async def test_a_login_on_one_node_replaces_the_same_device_on_another(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    old = await login(a, "alice", "phone")
    new = await login(b, "alice", "phone")
    (closed,) = await old.wait("session_closed")
    assert closed.reason == events_pb2.SessionClosed.REASON_REPLACED
    assert closed.replaced_by_session_id == session(new).session_id
    await eventually(lambda: old.sink.closed)
    assert a.sessions_of("alice") == [] and b.sessions_of("alice") == [session(new)]


async def test_the_device_policy_counts_every_node(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    for core in (a, b):
        core._sessions.policy = DevicePolicy.ONE_IN_TOTAL
    laptop = await login(a, "alice", "laptop")
    phone = await login(b, "alice", "phone")
    await laptop.wait("session_closed")
    assert not phone.sink.closed
    assert a.cluster is not None
    assert [s.session_id for s in await a.cluster.registry.sessions_of("alice")] == [
        session(phone).session_id
    ]


async def test_concurrent_logins_of_one_device_on_two_nodes_leave_one_session(
    nodes: ImNodes,
) -> None:
    a, b = await nodes.core(), await nodes.core()
    first, second = await asyncio.gather(login(a, "alice", "phone"), login(b, "alice", "phone"))
    await eventually(lambda: first.sink.closed or second.sink.closed)
    assert first.sink.closed != second.sink.closed
    assert a.cluster is not None
    assert len(await a.cluster.registry.sessions_of("alice")) == 1


async def test_a_session_is_kicked_from_any_node(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    device = await login(a, "alice", "phone")
    assert await b.kick(session(device).session_id, "bye")
    (closed,) = await device.wait("session_closed")
    assert (closed.reason, closed.detail) == (events_pb2.SessionClosed.REASON_KICKED, "bye")
    await eventually(lambda: device.sink.closed and not a.sessions_of("alice"))
    assert not await b.kick(session(device).session_id)


async def test_presence_across_nodes_with_the_grace_period(nodes: ImNodes) -> None:
    """Bob watched on A; online from B; a reconnect to C within the grace does not flap;
    offline after the grace once he is gone."""
    a, b, c = await nodes.core(), await nodes.core(), await nodes.core()
    alice = await login(a, "alice", "laptop")
    direct_id = (await a.open_direct(session(alice), "bob")).record.conversation_id
    assert await a.watch_presence(session(alice), ["bob"]) == {"bob": False}
    bob = await login(b, "bob", "phone")
    (online,) = await alice.wait("presence_changed")
    assert (online.user_id, online.online) == ("bob", True)
    assert a.is_online("bob")
    assert await c.online_members(session(await login(c, "alice", "tablet")), direct_id) == [
        "alice",
        "bob",
    ]
    b.logout(session(bob))
    await asyncio.sleep(nodes.timing.presence_grace / 3)
    again = await login(c, "bob", "phone")
    await asyncio.sleep(nodes.timing.presence_grace * 2)
    assert len(alice.of("presence_changed")) == 1  # no flap
    c.logout(session(again))
    changes = await alice.wait("presence_changed", 2)
    assert (changes[1].user_id, changes[1].online) == ("bob", False)
    assert changes[1].changed_at_ms >= changes[0].changed_at_ms
    assert await a.online_members(session(alice), direct_id) == ["alice"]


async def test_typing_receipts_and_membership_cross_nodes(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    alice_phone = await login(b, "alice", "phone")
    room = await a.create_room(session(alice), "r", [])
    room_id = room.record.conversation_id
    await a.add_members(session(alice), room_id, ["bob"])
    (joined,) = [m for m in await bob.wait("membership_changed") if m.user_id == "bob"]
    assert (joined.change, joined.actor_user_id) == (_CHANGE.CHANGE_JOINED, "alice")
    # Bob's node follows the room now: his typing and receipts reach Alice's devices.
    await b.set_typing(session(bob), room_id, True)
    (typing,) = await alice.wait("typing_changed")
    assert (typing.user_id, typing.typing) == ("bob", True)
    assert (await alice_phone.wait("typing_changed"))[0].device_id == "phone"
    assert bob.of("typing_changed") == []  # not to the typing device itself
    reply = await a.send(session(alice), room_id, "m1", text("hi"))
    await bob.wait("message_received")
    await b.ack(session(bob), room_id, read_seq=reply.message.seq)
    (receipt,) = await alice.wait("receipt_updated")
    assert (receipt.user_id, receipt.read_seq, receipt.unread_count) == ("bob", 1, 0)
    own = [r for r in await bob.wait("receipt_updated") if r.user_id == "bob"]
    assert own[0].unread_count == 0 and own[0].read_seq == 1
    # Kicked: Bob's device is told, and his node stops following the room.
    await a.kick_member(session(alice), room_id, "bob")
    await eventually(
        lambda: any(m.change == _CHANGE.CHANGE_KICKED for m in bob.of("membership_changed"))
    )
    await eventually(lambda: followed(b).get(room_id, set()) == {"alice"})
    await a.send(session(alice), room_id, "m2", text("after"))
    await alice_phone.wait("message_received", 2)
    assert bob.seqs(room_id) == [1]


async def test_a_member_added_while_messages_flow_misses_none_after_its_join(
    nodes: ImNodes,
) -> None:
    """Bob's node starts following as he is added; messages sent before it has read the
    room (held here by taking its read slots) come from storage, then live ones."""
    a, b = await nodes.core(), await nodes.core()
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    room_id = (await a.create_room(session(alice), "r", [])).record.conversation_id
    await a.send(session(alice), room_id, "before", text("before"))
    assert b.cluster is not None
    slots = b.cluster._loads
    for _ in range(b.cluster.settings.load_concurrency):
        await slots.acquire()
    await a.add_members(session(alice), room_id, ["bob", "carol"])
    for n in range(5):
        await a.send(session(alice), room_id, f"m{n}", text(f"{n}"))
    await asyncio.sleep(0.1)
    assert bob.seqs(room_id) == []  # the room is not read yet on Bob's node
    for _ in range(b.cluster.settings.load_concurrency):
        slots.release()
    for n in range(5, 10):
        await a.send(session(alice), room_id, f"m{n}", text(f"{n}"))
    assert await has_messages(bob, room_id, 10) == list(range(2, 12))
    joined = {m.user_id for m in bob.of("membership_changed")}
    assert joined == {"bob", "carol"}  # his own and the one added with him, once each
    assert len(bob.of("membership_changed")) == 2


async def test_a_new_room_tells_each_member_of_every_member_once(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    await a.create_room(session(alice), "r", ["bob", "carol"])
    for device in (alice, bob):
        await device.wait("membership_changed", 3)
        await asyncio.sleep(0.2)
        assert sorted(m.user_id for m in device.of("membership_changed")) == [
            "alice",
            "bob",
            "carol",
        ]


async def test_a_gap_that_does_not_fill_is_read_from_storage(nodes: ImNodes) -> None:
    """A message stored and never published (its node died) still reaches every device, in order."""
    a, b = await nodes.core(), await nodes.core()
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    room_id = (await a.create_room(session(alice), "r", ["bob"])).record.conversation_id
    await following(b, room_id)
    silent = NewMessage("x1", "alice", "laptop", "silent", 0, text("never published"))
    await a.storage.append(room_id, silent)  # committed, not published
    await a.send(session(alice), room_id, "loud", text("published"))
    for device in (alice, bob):
        assert await has_messages(device, room_id, 2) == [1, 2]


async def test_a_history_reset_reaches_the_other_nodes(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    room_id = (await a.create_room(session(alice), "r", ["bob"])).record.conversation_id
    await a.send(session(alice), room_id, "m1", text("old"))
    await bob.wait("message_received")
    await a.reset_history(room_id)
    await asyncio.sleep(0.3)
    reply = await a.send(session(alice), room_id, "m2", text("new epoch"))
    assert (reply.message.epoch, reply.message.seq) == (2, 1)
    messages = await bob.wait("message_received", 2)
    assert (messages[1].message.epoch, messages[1].message.seq) == (2, 1)


async def test_a_node_with_no_member_of_a_room_receives_none_of_its_traffic(
    redis_nodes: ImNodes,
) -> None:
    """Counted at each node's broker connection (real Redis)."""
    a, b, c = [await redis_nodes.core(count_channels=True) for _ in range(3)]
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    await login(c, "carol", "phone")  # C holds a user, but not of this room
    room_id = (await a.create_room(session(alice), "r", ["bob"])).record.conversation_id
    assert b.cluster is not None and c.cluster is not None
    await following(b, room_id)
    for n in range(20):
        await a.send(session(alice), room_id, f"m{n}", text("x" * 100))
    await a.set_typing(session(alice), room_id, True)
    await bob.wait("message_received", 20)
    channel = c.cluster.node.topic_channel(conversation_topic(room_id))
    assert channel not in c.cluster.node.stats.by_channel  # C: nothing of the room
    assert b.cluster.node.stats.by_channel[channel].messages >= 21  # B: every event


async def test_a_broken_link_tells_devices_to_sync_and_nothing_is_lost(
    redis_nodes: ImNodes,
) -> None:
    """Bob's node is cut from Redis while Alice sends: sends succeed; Bob's device gets
    SyncRequired once the link is back, and Sync then has everything."""
    a = await redis_nodes.core()
    b = await redis_nodes.core(broker_options={"client_name": "im-test-b"})
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    room_id = (await a.create_room(session(alice), "r", ["bob"])).record.conversation_id
    await following(b, room_id)
    await a.send(session(alice), room_id, "m0", text("before"))
    await bob.wait("message_received")
    admin = redis.asyncio.Redis.from_url(redis_nodes.redis_url)
    try:
        for client in await admin.client_list():
            if client.get("name") == "im-test-b":
                await admin.client_kill_filter(_id=client["id"])
    finally:
        await admin.aclose()
    for n in range(1, 6):
        await a.send(session(alice), room_id, f"m{n}", text(f"{n}"))
    notice, *_ = await bob.wait("sync_required")  # the room's and the user's channel
    assert notice.reason
    assert b.cluster is not None and b.cluster.node.state.value == "up"
    (result,) = await b.sync(session(bob), [SyncCursor(room_id, 1, 1)])
    live = bob.seqs(room_id)
    assert sorted(set(live) | {m.seq for m in result.messages}) == list(range(1, 7))
    assert not bob.sink.closed  # told to Sync, not disconnected


async def test_sqlite_on_a_cluster_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    from flare_runtime.cluster import ClusterNode

    with pytest.raises(ConfigurationError, match="PostgresStorage"):
        ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()), cluster=ClusterNode())


async def test_closed_sessions_leave_no_cluster_state(nodes: ImNodes) -> None:
    a, b = await nodes.core(), await nodes.core()
    alice = await login(a, "alice", "laptop")
    bob = await login(b, "bob", "phone")
    room_id = (await a.create_room(session(alice), "r", ["bob"])).record.conversation_id
    await a.watch_presence(session(alice), ["bob"])
    await following(b, room_id)
    a.logout(session(alice))
    b.logout(session(bob))
    for core in (a, b):
        await eventually(lambda: not followed(a) and not followed(b))
        sizes = core.state_sizes()
        assert sizes["cluster_users"] == sizes["watched_presence"] == sizes["cached_rooms"] == 0


async def test_sync_on_a_node_behind_its_peers_trusts_the_log(nodes: ImNodes) -> None:
    """A device that moved to a node which has not seen the newest messages yet (they are in
    flight, or the node missed them) syncs from its position instead of being told to
    start over ("ahead of the log")."""
    a, b = await nodes.core(), await nodes.core()
    alice, bob = await login(a, "alice", "laptop"), await login(b, "bob", "phone")
    room_id = (await a.create_room(session(alice), "r", ["bob"])).record.conversation_id
    await following(b, room_id)
    for n in range(3):  # stored, and not (yet) seen by B
        await a.storage.append(room_id, NewMessage(f"x{n}", "alice", "l", f"c{n}", 0, text("x")))
    (result,) = await b.sync(session(bob), [SyncCursor(room_id, 1, 3)])
    assert not result.resync_required, result.resync_reason
    assert (result.last_seq, result.messages) == (3, [])
    (ahead,) = await b.sync(session(bob), [SyncCursor(room_id, 1, 4)])
    assert ahead.resync_required  # beyond the log itself: still refused


async def test_while_redis_is_down_logins_and_sends_go_on_and_devices_sync_after(
    tmp_path: Path,
) -> None:
    """Redis killed: a login and sends succeed (PostgreSQL holds everything); once Redis is
    back, the devices that may have missed events are told to Sync, and Sync has them."""
    if shutil.which("redis-server") is None:
        pytest.skip("SKIPPED LOUDLY: redis-server is not installed")
    server = RedisProcess(tmp_path)
    await server.start()
    nodes = ImNodes(backend="redis", redis_url=server.url)
    try:
        a, b = await nodes.core(), await nodes.core()
        alice, carol = await login(a, "alice", "laptop"), await login(b, "carol", "phone")
        room_id = (
            await a.create_room(session(alice), "r", ["bob", "carol"])
        ).record.conversation_id
        await following(b, room_id)
        server.kill()
        await eventually(lambda: b.cluster is not None and b.cluster.node.state.value == "down")
        async with asyncio.timeout(5):
            bob = await login(b, "bob", "phone")  # no waiting for the broker
            for n in range(3):
                await a.send(session(alice), room_id, f"m{n}", text(f"{n}"))
        await server.start()
        for device in (bob, carol):
            await device.wait("sync_required")
            (result,) = await b.sync(session(device), [SyncCursor(room_id, 0, 0)])
            assert [m.seq for m in result.messages] == [1, 2, 3]
            assert not device.sink.closed
        await a.send(session(alice), room_id, "after", text("live again"))
        assert 4 in await has_messages(bob, room_id, 1)
    finally:
        server.kill()
        await nodes.close()


async def test_a_login_cancelled_midway_leaves_no_session_behind(nodes: ImNodes) -> None:
    """The client leaves while its login waits for its node to read its conversations (held
    here by taking the node's read slots): no local session, no registry row after."""
    a = await nodes.core()
    owner = await login(a, "alice", "laptop")
    await a.create_room(session(owner), "r", ["bob"])
    assert a.cluster is not None
    slots = a.cluster._loads
    for _ in range(a.cluster.settings.load_concurrency):
        await slots.acquire()
    attempt = asyncio.ensure_future(a.open_session("bob", "phone", 1, QueueSink()))
    await eventually(lambda: bool(a.sessions_of("bob")))  # registered, waiting to follow
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    for _ in range(a.cluster.settings.load_concurrency):
        slots.release()
    assert a.sessions_of("bob") == []
    registry = a.cluster.registry
    async with asyncio.timeout(5):
        while await registry.sessions_of("bob"):
            await asyncio.sleep(0.01)
