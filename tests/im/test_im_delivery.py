"""The sequencer and the fan-out, driven directly: real futures and in-memory sinks.

The rules under test (flare_runtime/im/delivery.py): gap-free seq order however
appends complete, foreign gaps skipped, one order per conversation across
events, fan-outs cut into bounded loop steps, slow consumers cut off.
"""

from __future__ import annotations

import asyncio
import itertools

from flare.im.v1 import events_pb2

from flare_runtime.im import events
from flare_runtime.im.delivery import Channel, Delivery, Fanout
from flare_runtime.im.limits import ImLimits
from flare_runtime.im.sessions import DevicePolicy, Session, Sessions
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage.base import AppendResult, Role, StoredMessage
from flare_runtime.server_connection import PreparedPush


class Room(Channel):
    """A conversation's delivery state with a settable epoch."""

    __slots__ = ("current_epoch",)

    def __init__(self, members: dict[str, Role], last_seq: int = 0) -> None:
        super().__init__(members, last_seq)
        self.current_epoch = 1

    @property
    def epoch(self) -> int:
        return self.current_epoch


class Rig:
    """A session registry, a delivery over it, and helpers to log users in."""

    def __init__(self, **limits: float) -> None:
        self.limits = ImLimits(**limits)  # type: ignore[arg-type]
        self.closed: list[Session] = []
        self.sessions = Sessions(
            DevicePolicy.ALLOW_ALL,
            self.limits,
            opened=lambda user: None,
            closed=lambda session, last: self.closed.append(session),
        )
        self.delivery = Delivery(self.sessions, self.limits)

    def login(self, user: str, device: str = "d") -> tuple[Session, QueueSink]:
        sink = QueueSink()
        session, _ = self.sessions.login(user, device, 1, sink)
        return session, sink


def stored(seq: int, epoch: int = 1) -> StoredMessage:
    return StoredMessage("c", seq, epoch, f"m{seq}", "alice", "d", f"c{seq}", 0, b"")


def append(rig: Rig, room: Room) -> asyncio.Future[AppendResult]:
    """An append under way (the future storage resolves), wired like `History.send`."""
    future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
    rig.delivery.append_started(room)
    future.add_done_callback(lambda done: rig.delivery.appended(room, done))
    return future


def seqs(sink: QueueSink) -> list[int]:
    return [
        events_pb2.MessageReceived.FromString(payload).message.seq
        for type_id, payload in sink.take()
        if type_id == events.MESSAGE_RECEIVED
    ]


def event(name: str) -> PreparedPush:
    return PreparedPush(events.TYPING_CHANGED, name.encode())


def names(sink: QueueSink) -> list[str]:
    return [payload.decode() for _, payload in sink.take()]


async def settle() -> None:
    """Let every scheduled step and done-callback run."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_appends_completing_out_of_order_are_delivered_in_seq_order() -> None:
    rig = Rig()
    _, sink = rig.login("bob")
    room = Room({"alice": Role.MEMBER, "bob": Role.MEMBER})
    first, second, third = append(rig, room), append(rig, room), append(rig, room)
    third.set_result(AppendResult(stored(3), duplicate=False))
    await settle()
    assert seqs(sink) == []  # 1 and 2 are still being written
    first.set_result(AppendResult(stored(1), duplicate=False))
    await settle()
    assert seqs(sink) == [1]
    second.set_result(AppendResult(stored(2), duplicate=False))
    await settle()
    assert seqs(sink) == [2, 3]
    assert (room.next_delivery_seq, room.last_seq, room.pending) == (4, 3, {})


async def test_a_gap_no_append_of_ours_can_fill_is_skipped() -> None:
    """Seq 1 went to another process (shared PostgreSQL): it reaches devices by Sync."""
    rig = Rig()
    _, sink = rig.login("bob")
    room = Room({"bob": Role.MEMBER})
    failing, ours = append(rig, room), append(rig, room)
    ours.set_result(AppendResult(stored(2), duplicate=False))
    await settle()
    assert seqs(sink) == []  # our failing append might still take seq 1
    failing.set_exception(OSError("disk full"))
    await settle()
    assert seqs(sink) == [2]
    assert room.next_delivery_seq == 3


async def test_a_retry_and_a_message_of_an_old_epoch_deliver_nothing() -> None:
    rig = Rig()
    _, sink = rig.login("bob")
    room = Room({"bob": Role.MEMBER})
    retry = append(rig, room)
    retry.set_result(AppendResult(stored(1), duplicate=True))
    old = append(rig, room)
    room.current_epoch = 2
    Delivery.reset(room, 0)
    old.set_result(AppendResult(stored(1, epoch=1), duplicate=False))
    await settle()
    assert seqs(sink) == []
    fresh = append(rig, room)
    fresh.set_result(AppendResult(stored(1, epoch=2), duplicate=False))
    await settle()
    assert seqs(sink) == [1]


async def test_a_slow_consumer_is_cut_off_and_everyone_else_gets_every_event() -> None:
    rig = Rig(outbound_buffer_bytes=100)
    slow, slow_sink = rig.login("bob", "slow")
    fast, fast_sink = rig.login("bob", "fast")
    room = Room({"bob": Role.MEMBER})
    got: list[str] = []
    for index in range(20):
        rig.delivery.publish(room, Fanout(event(f"e{index:02}-" + "x" * 20), room.members))
        got += [name[:3] for name in names(fast_sink)]
    await settle()
    assert got == [f"e{index:02}" for index in range(20)]
    assert slow.closed and slow_sink.closed
    assert slow_sink.close_reason.startswith("slow_consumer")
    assert rig.closed == [slow] and rig.sessions.of("bob") == [fast]


async def test_a_fan_out_bigger_than_a_batch_runs_in_loop_steps_and_keeps_the_order() -> None:
    rig = Rig(fanout_batch=10)
    sinks = [rig.login(f"user-{index}")[1] for index in range(35)]
    room = Room({f"user-{index}": Role.MEMBER for index in range(35)})
    rig.delivery.publish(room, Fanout(event("first"), room.members))
    rig.delivery.publish(room, Fanout(event("second"), room.members))
    reached = [sum(1 for sink in sinks if sink.buffered_bytes)]
    for _ in range(6):
        await asyncio.sleep(0)  # one pass of the event loop: one step
        reached.append(sum(1 for sink in sinks if sink.buffered_bytes))
    assert reached[:4] == [10, 20, 30, 35]  # at most a batch per step
    assert all(names(sink) == ["first", "second"] for sink in sinks)


async def test_a_fan_out_walks_the_online_users_when_they_are_fewer_than_the_members() -> None:
    rig = Rig(fanout_batch=10)
    online = [rig.login(f"user-{index}")[1] for index in range(3)]
    room = Room({f"user-{index}": Role.MEMBER for index in range(10_000)})
    rig.delivery.publish(room, Fanout(event("hi"), room.members))
    # Four recipients' worth of work (3 online + 1): within one batch, no step needed.
    assert all(names(sink) == ["hi"] for sink in online)
    assert not room.queue and not room.draining


async def test_the_inline_budget_is_shared_by_everything_one_loop_pass_publishes() -> None:
    rig = Rig(fanout_batch=10)
    rooms, sinks = [], []
    for index in range(4):
        users = [f"room{index}-user{member}" for member in range(4)]
        sinks.append([rig.login(user)[1] for user in users])
        rooms.append(Room(dict.fromkeys(users, Role.MEMBER)))
    for room in rooms:
        rig.delivery.publish(room, Fanout(event("hi"), room.members))
    delivered_at_once = [all(sink.buffered_bytes for sink in group) for group in sinks]
    assert delivered_at_once == [True, True, False, False]  # 5 + 5 recipients fill the batch
    await settle()
    assert all(names(sink) == ["hi"] for group in sinks for sink in group)


async def test_conversations_with_big_fan_outs_take_turns() -> None:
    rig = Rig(fanout_batch=10)
    rooms = []
    for name in ("a", "b"):
        users = [f"{name}-{index}" for index in range(100)]
        for user in users:
            rig.login(user)
        rooms.append(Room(dict.fromkeys(users, Role.MEMBER)))
    for room in rooms:
        rig.delivery.publish(room, Fanout(event("big"), room.members))
    progress = []
    for _ in range(4):
        await asyncio.sleep(0)
        progress.append([fanout.offset for room in rooms for fanout in room.queue])
    # Both conversations advance every pass: neither waits for the other to finish.
    assert all(len(step) == 2 and min(step) > 0 for step in progress)
    await settle()
    assert not any(room.queue for room in rooms)


async def test_also_exclude_and_skip_choose_the_recipients() -> None:
    rig = Rig()
    alice, alice_sink = rig.login("alice", "phone")
    _, alice_web = rig.login("alice", "web")
    _, bob_sink = rig.login("bob")
    _, leaver_sink = rig.login("leaver")
    room = Room({"alice": Role.MEMBER, "bob": Role.MEMBER})
    rig.delivery.publish(room, Fanout(event("typing"), room.members, skip=alice))
    rig.delivery.publish(room, Fanout(event("receipt"), room.members, exclude="alice"))
    rig.delivery.publish(room, Fanout(event("left"), room.members, also="leaver"))
    assert names(alice_sink) == ["left"]
    assert names(alice_web) == ["typing", "left"]
    assert names(bob_sink) == ["typing", "receipt", "left"]
    assert names(leaver_sink) == ["left"]


async def test_a_presence_fan_out_to_sessions_skips_those_closed_meanwhile() -> None:
    rig = Rig(fanout_batch=2)
    watchers = [rig.login(f"watcher-{index}") for index in range(5)]
    outbox = Room({})
    rig.delivery.publish(outbox, Fanout(event("online"), sessions=[s for s, _ in watchers]))
    rig.sessions.drop(watchers[4][0])
    await settle()
    assert [names(sink) for _, sink in watchers] == [["online"]] * 4 + [[]]


def test_a_member_table_counts_every_change() -> None:
    from flare_runtime.im.delivery import MemberTable

    table = MemberTable({"alice": Role.OWNER})
    versions = [table.version]
    table["bob"] = Role.MEMBER
    versions.append(table.version)
    table.update({"carol": Role.ADMIN})
    versions.append(table.version)
    table.pop("bob")
    versions.append(table.version)
    table.pop("nobody", None)  # counted too: a version may move without a change, never stay
    versions.append(table.version)
    del table["carol"]
    versions.append(table.version)
    table.setdefault("dave", Role.MEMBER)
    versions.append(table.version)
    table.clear()
    versions.append(table.version)
    assert all(later > earlier for earlier, later in itertools.pairwise(versions))
    assert table == {}
