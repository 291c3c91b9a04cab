"""The IM domain core without sockets: real SQLite storage, in-memory sinks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2, events_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im import events
from flare_runtime.im.core import (
    DevicePolicy,
    ImCore,
    ImLimits,
    RetentionPolicy,
    Session,
    SyncCursor,
)
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, Role, SqliteStorage
from flare_runtime.im.storage.base import ConversationRecord
from flare_runtime.status import StatusCode

WEB, DESKTOP, MOBILE = 1, 2, 3


def text(value: str) -> bytes:
    return content_pb2.Content(text=content_pb2.TextContent(text=value)).SerializeToString()


def pushed(sink: QueueSink, type_id: int) -> list[bytes]:
    return [payload for kind, payload in sink.take() if kind == type_id]


def received(sink: QueueSink) -> list[events_pb2.Message]:
    return [
        events_pb2.MessageReceived.FromString(payload).message
        for payload in pushed(sink, events.MESSAGE_RECEIVED)
    ]


async def make_core(path: Path, **kwargs: object) -> ImCore:
    core = ImCore(SqliteStorage(path / "im.db", KeyRing.generate()), **kwargs)  # type: ignore[arg-type]
    await core.start()
    return core


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[ImCore]:
    limits = ImLimits(presence_grace_seconds=0.05, send_rate_per_second=1e4, send_burst=10_000)
    im = await make_core(tmp_path, limits=limits)
    yield im
    await im.close()


def login(core: ImCore, user: str, device: str, platform: int = WEB) -> tuple[Session, QueueSink]:
    sink = QueueSink()
    session, _ = core.login(user, device, platform, sink)
    return session, sink


async def test_messages_reach_every_device_of_every_member_in_order(core: ImCore) -> None:
    alice_phone, alice_phone_sink = login(core, "alice", "phone", MOBILE)
    _alice_web, alice_web_sink = login(core, "alice", "web")
    bob_phone, bob_phone_sink = login(core, "bob", "phone", MOBILE)
    _bob_web, bob_web_sink = login(core, "bob", "web")
    _carol, carol_sink = login(core, "carol", "web")
    room = await core.create_room(alice_phone, "team", ["bob"])
    conversation = room.record.conversation_id
    assert room.members == {"alice": Role.OWNER, "bob": Role.MEMBER}

    first = await core.send(alice_phone, conversation, "a-1", text("hi bob"))
    second = await core.send(bob_phone, conversation, "b-1", text("hi alice"))
    assert (first.message.seq, second.message.seq) == (1, 2)
    for sink in (alice_phone_sink, alice_web_sink, bob_phone_sink, bob_web_sink):
        got = received(sink)
        assert [(m.seq, m.sender_user_id) for m in got] == [(1, "alice"), (2, "bob")]
        assert got[0].content.text.text == "hi bob"
    assert received(carol_sink) == []


async def test_fifty_concurrent_senders_give_gap_free_order_everywhere(core: ImCore) -> None:
    owner, _ = login(core, "user-0", "d")
    users = [f"user-{i}" for i in range(50)]
    room = await core.create_room(owner, "big", users[1:])
    conversation = room.record.conversation_id
    sessions = [owner] + [login(core, user, "d")[0] for user in users[1:]]
    watcher, watcher_sink = login(core, "user-1", "second-device")

    async def send_five(session: Session) -> list[int]:
        seqs = []
        for n in range(5):
            reply = await core.send(session, conversation, f"{session.user_id}-{n}", text("x"))
            seqs.append(reply.message.seq)
        return seqs

    replies = await asyncio.gather(*(send_five(session) for session in sessions))
    assert sorted(seq for seqs in replies for seq in seqs) == list(range(1, 251))
    assert [m.seq for m in received(watcher_sink)] == list(range(1, 251))
    assert watcher.closed is False


async def test_retried_send_returns_the_original_and_stores_once(core: ImCore) -> None:
    alice, _ = login(core, "alice", "phone")
    _bob, bob_sink = login(core, "bob", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    first = await core.send(alice, conversation, "same-id", text("once"))
    retry = await core.send(alice, conversation, "same-id", text("once"))
    assert retry.duplicate and not first.duplicate
    assert retry.message == first.message
    assert len(received(bob_sink)) == 1
    messages, _, _ = await core.history(alice, conversation)
    assert [m.client_message_id for m in messages] == ["same-id"]


async def test_history_before_a_seq_beyond_64_bits_reads_from_the_newest(core: ImCore) -> None:
    """before_seq is a uint64 on the wire: UINT64_MAX reads from the newest, never overflows."""
    alice, _ = login(core, "alice", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    for i in range(3):
        await core.send(alice, conversation, f"m-{i}", text(f"m{i}"))
    for before in (2**64 - 1, 2**63, 2**63 - 1):
        messages, has_more, _ = await core.history(alice, conversation, before, limit=2)
        assert ([m.seq for m in messages], has_more) == ([2, 3], True)


async def test_sync_returns_exactly_the_missing_messages_paged(core: ImCore) -> None:
    alice, _ = login(core, "alice", "phone")
    bob, _ = login(core, "bob", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    for i in range(10):
        await core.send(alice, conversation, f"before-{i}", text(f"m{i}"))
    core.logout(bob)
    for i in range(100):
        await core.send(alice, conversation, f"after-{i}", text(f"n{i}"))
    bob, _ = login(core, "bob", "phone")
    got: list[int] = []
    cursor = SyncCursor(conversation, epoch=1, last_seq=10)
    while True:
        (result,) = await core.sync(bob, [cursor], limit=30)
        assert not result.resync_required
        got += [m.seq for m in result.messages]
        if not result.has_more:
            break
        cursor = SyncCursor(conversation, result.epoch, result.messages[-1].seq)
    assert got == list(range(11, 111))


async def test_sync_asks_for_a_resync_after_trim_reset_or_a_bad_cursor(core: ImCore) -> None:
    alice, _ = login(core, "alice", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    for i in range(20):
        await core.send(alice, conversation, f"c{i}", text("x"))
    await core.apply_retention(conversation, keep_last=5)
    (trimmed,) = await core.sync(alice, [SyncCursor(conversation, 1, 3)])
    assert trimmed.resync_required and "trimmed" in trimmed.resync_reason
    assert trimmed.first_seq == 16 and trimmed.messages == []
    (fine,) = await core.sync(alice, [SyncCursor(conversation, 1, 15)])
    assert [m.seq for m in fine.messages] == [16, 17, 18, 19, 20]
    (fresh,) = await core.sync(alice, [SyncCursor(conversation, 0, 0)])
    assert [m.seq for m in fresh.messages] == [16, 17, 18, 19, 20]
    (ahead,) = await core.sync(alice, [SyncCursor(conversation, 1, 99)])
    assert ahead.resync_required and "ahead" in ahead.resync_reason

    await core.reset_history(conversation)
    (reset,) = await core.sync(alice, [SyncCursor(conversation, 1, 20)])
    assert reset.resync_required and reset.epoch == 2 and "epoch" in reset.resync_reason
    reply = await core.send(alice, conversation, "after-reset", text("x"))
    assert (reply.message.epoch, reply.message.seq) == (2, 1)


@pytest.mark.parametrize(
    ("policy", "logins", "survivors"),
    [
        (DevicePolicy.ALLOW_ALL, [("phone", MOBILE), ("web", WEB), ("tab", MOBILE)], 3),
        (DevicePolicy.ONE_PER_PLATFORM, [("phone", MOBILE), ("web", WEB), ("tab", MOBILE)], 2),
        (DevicePolicy.ONE_IN_TOTAL, [("phone", MOBILE), ("web", WEB), ("tab", MOBILE)], 1),
    ],
)
async def test_multi_device_policy_newest_login_wins(
    tmp_path: Path, policy: DevicePolicy, logins: list[tuple[str, int]], survivors: int
) -> None:
    core = await make_core(tmp_path, policy=policy)
    sinks = []
    for device, platform in logins:
        sinks.append(login(core, "alice", device, platform))
    open_sessions = core.sessions_of("alice")
    assert len(open_sessions) == survivors
    assert open_sessions[-1].device_id == "tab"
    for session, sink in sinks:
        if session.closed:
            assert sink.closed and sink.close_reason.startswith("replaced")
            (notice,) = pushed(sink, events.SESSION_CLOSED)
            closed = events_pb2.SessionClosed.FromString(notice)
            assert closed.reason == events_pb2.SessionClosed.REASON_REPLACED
            later = [s.session_id for s, _ in sinks[sinks.index((session, sink)) + 1 :]]
            assert closed.replaced_by_session_id in later
    # The same device logging in again always replaces its old session.
    old = core.sessions_of("alice")[-1]
    login(core, "alice", "tab", MOBILE)
    assert old.closed
    await core.close()


async def test_kick_session_and_kick_member(core: ImCore) -> None:
    owner, _ = login(core, "owner", "d")
    admin, _ = login(core, "admin", "d")
    member, member_sink = login(core, "member", "d")
    room = await core.create_room(owner, "r", ["admin", "member"])
    conversation = room.record.conversation_id
    await core.set_member_role(owner, conversation, "admin", Role.ADMIN)
    with pytest.raises(RpcError) as denied:
        await core.kick_member(member, conversation, "admin")
    assert denied.value.code is StatusCode.PERMISSION_DENIED
    with pytest.raises(RpcError) as admin_vs_owner:
        await core.kick_member(admin, conversation, "owner")
    assert admin_vs_owner.value.code is StatusCode.PERMISSION_DENIED
    member_sink.take()
    await core.kick_member(admin, conversation, "member")
    (change,) = pushed(member_sink, events.MEMBERSHIP_CHANGED)
    assert events_pb2.MembershipChanged.FromString(change).change == (
        events_pb2.MembershipChanged.CHANGE_KICKED
    )
    with pytest.raises(RpcError) as gone:
        await core.send(member, conversation, "late", text("x"))
    assert gone.value.code is StatusCode.NOT_FOUND  # as to any non-member

    core.kick_session(member, "bye")
    assert member.closed and member_sink.closed and member_sink.close_reason == "kicked: bye"
    with pytest.raises(RpcError) as closed:
        await core.send(member, conversation, "x", text("x"))
    assert closed.value.code is StatusCode.FAILED_PRECONDITION


async def test_room_membership_rules(core: ImCore) -> None:
    owner, _ = login(core, "owner", "d")
    guest, _ = login(core, "guest", "d")
    closed_room = await core.create_room(owner, "closed", [], member_limit=2)
    with pytest.raises(RpcError) as not_open:
        await core.join_room(guest, closed_room.record.conversation_id)
    assert not_open.value.code is StatusCode.NOT_FOUND  # as if it did not exist
    open_room = await core.create_room(owner, "open", [], open=True, member_limit=2)
    conversation = open_room.record.conversation_id
    joined = await core.join_room(guest, conversation)
    assert joined.members["guest"] is Role.MEMBER
    late, _ = login(core, "late", "d")
    with pytest.raises(RpcError) as full:
        await core.join_room(late, conversation)
    assert full.value.code is StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(RpcError) as owner_leaves:
        await core.leave_room(owner, conversation)
    assert owner_leaves.value.code is StatusCode.FAILED_PRECONDITION
    transferred = await core.set_member_role(owner, conversation, "guest", Role.OWNER)
    assert transferred.members == {"owner": Role.ADMIN, "guest": Role.OWNER}
    await core.leave_room(owner, conversation)
    assert (await core.get_conversation(guest, conversation)).members == {"guest": Role.OWNER}
    lobby = await core.ensure_room("lobby", "Lobby")
    assert lobby.record.open and lobby.members == {}
    assert (await core.ensure_room("lobby", "other title")).record.title == "Lobby"
    assert (await core.join_room(late, "lobby")).members == {"late": Role.MEMBER}
    direct = await core.open_direct(owner, "guest")
    with pytest.raises(RpcError) as fixed:
        await core.join_room(owner, direct.record.conversation_id)
    assert fixed.value.code is StatusCode.FAILED_PRECONDITION
    with pytest.raises(RpcError) as hidden:
        await core.join_room(late, direct.record.conversation_id)
    assert hidden.value.code is StatusCode.NOT_FOUND


async def test_receipts_and_unread_counts(core: ImCore) -> None:
    alice, alice_sink = login(core, "alice", "phone")
    bob, bob_sink = login(core, "bob", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    for i in range(7):
        await core.send(alice, conversation, f"c{i}", text("x"))
    listed, _ = await core.list_conversations(bob)
    summaries = {s.membership.receipt.user_id: s for s in listed}
    assert summaries["bob"].unread_count == 7
    alice_sink.take()
    bob_sink.take()
    receipt, unread = await core.ack(bob, conversation, delivered_seq=7, read_seq=4)
    assert (receipt.delivered_seq, receipt.read_seq, unread) == (7, 4, 3)
    (to_alice,) = pushed(alice_sink, events.RECEIPT_UPDATED)
    (to_bob,) = pushed(bob_sink, events.RECEIPT_UPDATED)
    assert events_pb2.ReceiptUpdated.FromString(to_alice).read_seq == 4
    assert events_pb2.ReceiptUpdated.FromString(to_bob).unread_count == 3
    # Acks never move back and are clamped to the log.
    receipt, unread = await core.ack(bob, conversation, read_seq=2)
    assert (receipt.read_seq, unread) == (4, 3)
    receipt, unread = await core.ack(bob, conversation, read_seq=1_000)
    assert (receipt.read_seq, unread) == (7, 0)
    # The sender has read its own messages.
    (own,), more = await core.list_conversations(alice)
    assert own.unread_count == 0 and not more


async def test_typing_is_pushed_to_others_and_never_stored(core: ImCore) -> None:
    alice, alice_sink = login(core, "alice", "phone")
    _alice_web, alice_web_sink = login(core, "alice", "web")
    _bob, bob_sink = login(core, "bob", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    await core.set_typing(alice, conversation, True)
    (typing,) = pushed(bob_sink, events.TYPING_CHANGED)
    assert events_pb2.TypingChanged.FromString(typing).typing
    assert pushed(alice_sink, events.TYPING_CHANGED) == []
    assert len(pushed(alice_web_sink, events.TYPING_CHANGED)) == 1
    messages, _, _ = await core.history(alice, conversation)
    assert messages == []


async def test_presence_grace_period_absorbs_quick_reconnects(core: ImCore) -> None:
    watcher, watcher_sink = login(core, "watcher", "d")
    room = await core.create_room(watcher, "r", ["alice", "bob"])
    assert await core.watch_presence(watcher, ["alice"]) == {"alice": False}
    alice, _ = login(core, "alice", "phone")
    changes = pushed(watcher_sink, events.PRESENCE_CHANGED)
    assert [events_pb2.PresenceChanged.FromString(c).online for c in changes] == [True]

    core.logout(alice)
    alice, _ = login(core, "alice", "phone")  # back within the grace period
    await asyncio.sleep(0.15)
    assert pushed(watcher_sink, events.PRESENCE_CHANGED) == []
    assert core.is_online("alice")

    core.logout(alice)
    assert core.is_online("alice")  # still within the grace period
    await asyncio.sleep(0.15)
    changes = pushed(watcher_sink, events.PRESENCE_CHANGED)
    assert [events_pb2.PresenceChanged.FromString(c).online for c in changes] == [False]
    assert not core.is_online("alice")

    login(core, "bob", "d")
    assert await core.online_members(watcher, room.record.conversation_id) == ["bob", "watcher"]


async def test_closed_sessions_leave_no_per_user_state(core: ImCore) -> None:
    sessions = [login(core, f"user-{i}", device)[0] for i in range(20) for device in ("a", "b")]
    users = [f"user-{i}" for i in range(1, 20)]
    await core.create_room(sessions[0], "everyone", [*users, "someone"])
    for session in sessions:
        await core.watch_presence(session, ["user-0", "user-1", "someone"])
    assert core.state_sizes()["sessions"] == 40
    for session in sessions:
        core.logout(session)
    await asyncio.sleep(0.15)
    sizes = core.state_sizes()
    per_session = ("users_with_sessions", "sessions", "watched_users")
    per_user = ("online_users", "offline_timers")
    assert {key: sizes[key] for key in per_session + per_user} == dict.fromkeys(
        per_session + per_user, 0
    )
    # What stays is bounded: a rate bucket per recently active user (forgotten once
    # refilled, see test_im_limits) and the conversation cache.
    assert sizes["rate_limited_users"] <= 20 * 3 and sizes["cached_rooms"] == 1


async def test_slow_consumer_is_disconnected_without_slowing_the_room(tmp_path: Path) -> None:
    core = await make_core(tmp_path, limits=ImLimits(outbound_buffer_bytes=2_000))
    alice, alice_sink = login(core, "alice", "phone")
    slow, slow_sink = login(core, "bob", "slow-phone")
    _fast, fast_sink = login(core, "bob", "fast-web")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    for i in range(60):
        await core.send(alice, conversation, f"c{i}", text("y" * 100))
        fast_sink.take()  # these devices keep up
        alice_sink.take()
    assert slow.closed and slow_sink.closed
    assert slow_sink.close_reason.startswith("slow_consumer")
    assert not _fast.closed
    assert core.sessions_of("bob") == [_fast]
    await core.close()


async def test_bad_input_gets_typed_errors(tmp_path: Path) -> None:
    core = await make_core(
        tmp_path, limits=ImLimits(max_content_bytes=1_000, send_rate_per_second=1, send_burst=5)
    )
    alice, _ = login(core, "alice", "phone")
    outsider, _ = login(core, "mallory", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id

    async def code_of(coroutine: object) -> StatusCode:
        with pytest.raises(RpcError) as error:
            await coroutine  # type: ignore[misc]
        return error.value.code

    assert await code_of(core.send(outsider, conversation, "x", text("hi"))) is (
        StatusCode.NOT_FOUND
    )
    assert await code_of(core.send(alice, "room:nope", "x", text("hi"))) is StatusCode.NOT_FOUND
    assert await code_of(core.send(alice, conversation, "x", text("z" * 2_000))) is (
        StatusCode.INVALID_ARGUMENT
    )
    assert await code_of(core.send(alice, conversation, "", text("hi"))) is (
        StatusCode.INVALID_ARGUMENT
    )
    assert await code_of(core.send(alice, conversation, "x", b"")) is StatusCode.INVALID_ARGUMENT
    assert await code_of(core.sync(alice, [SyncCursor(conversation, 1, 0)], limit=5_000)) is (
        StatusCode.INVALID_ARGUMENT
    )
    with pytest.raises(RpcError) as invalid_login:
        core.login("alice", "x" * 500, WEB, QueueSink())
    assert invalid_login.value.code is StatusCode.INVALID_ARGUMENT
    codes = []
    for i in range(20):
        try:
            await core.send(alice, conversation, f"flood-{i}", text("x"))
            codes.append(StatusCode.OK)
        except RpcError as error:
            codes.append(error.code)
    # The burst (5, one already spent on the oversized attempt) passes, then the limit holds.
    assert codes.count(StatusCode.OK) <= 5
    assert codes[-1] is StatusCode.RESOURCE_EXHAUSTED
    await core.close()


async def test_a_cancelled_send_still_delivers_in_order(core: ImCore) -> None:
    alice, _ = login(core, "alice", "phone")
    _bob, bob_sink = login(core, "bob", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    first = asyncio.ensure_future(core.send(alice, conversation, "cancelled", text("one")))
    await asyncio.sleep(0)  # the append is under way
    first.cancel()
    second = await core.send(alice, conversation, "kept", text("two"))
    assert second.message.seq == 2
    assert [m.seq for m in received(bob_sink)] == [1, 2]
    # The retry of the cancelled send finds it stored.
    retry = await core.send(alice, conversation, "cancelled", text("one"))
    assert retry.duplicate and retry.message.seq == 1


async def test_retention_policy_trims_in_the_background(tmp_path: Path) -> None:
    limits = ImLimits(send_rate_per_second=1e4, send_burst=10_000)
    core = await make_core(
        tmp_path, limits=limits, retention=RetentionPolicy(keep_last=10, check_every=25)
    )
    alice, _ = login(core, "alice", "phone")
    conversation = (await core.open_direct(alice, "bob")).record.conversation_id
    for index in range(60):
        await core.send(alice, conversation, f"c{index}", text("x"))
    async with asyncio.timeout(10):
        while (await core.get_conversation(alice, conversation)).record.first_seq != 41:
            await asyncio.sleep(0.01)  # trimmed at 50 stored messages: 41..50 kept, then 51..60
    messages, _, _ = await core.history(alice, conversation, limit=100)
    assert [m.seq for m in messages] == list(range(41, 61))
    (old,) = await core.sync(alice, [SyncCursor(conversation, 1, 5)])
    assert old.resync_required
    await core.close()


class _SlowLookupStorage(SqliteStorage):
    """SQLite whose conversation lookups wait on a gate: loads overlap deterministically."""

    gate: asyncio.Event | None = None

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        if self.gate is not None:
            await self.gate.wait()
        return await super().get_conversation(conversation_id)


async def test_a_cancelled_room_load_does_not_fail_the_calls_waiting_for_it(
    tmp_path: Path,
) -> None:
    """The first caller's cancellation never reaches the other callers waiting on the same load."""
    storage = _SlowLookupStorage(tmp_path / "im.db", KeyRing.generate())
    writer = ImCore(storage)
    await writer.start()
    alice, _ = login(writer, "alice", "phone")
    conversation = (await writer.open_direct(alice, "bob")).record.conversation_id
    await writer.close()

    storage = _SlowLookupStorage(tmp_path / "im.db", storage.keyring)
    core = ImCore(storage)  # a fresh core: the room is not cached
    await core.start()
    try:
        alice, _ = login(core, "alice", "phone")
        bob, _ = login(core, "bob", "phone")
        storage.gate = asyncio.Event()
        first = asyncio.ensure_future(core.get_conversation(alice, conversation))
        await asyncio.sleep(0.01)  # first is loading the room
        second = asyncio.ensure_future(core.get_conversation(bob, conversation))
        await asyncio.sleep(0.01)  # second waits for that load
        first.cancel()
        await asyncio.sleep(0.01)
        storage.gate.set()
        view = await asyncio.wait_for(second, 5)
        assert view.record.conversation_id == conversation
        assert first.cancelled()
    finally:
        await core.close()
