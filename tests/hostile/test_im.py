"""Hostile-input catalogue: the IM API (``flare.im.v1.ImService``) over WebSocket.

One test per row; each docstring states the input and the promised outcome.
The server runs `ImCore` on SQLite with the documented default `ImLimits`
unless a row says otherwise, behind the runtime's WebSocket listener on
127.0.0.1. Where a row needs a lot of data (conversations full of large
messages, thousands of memberships), it is written straight into storage
first: the attack is the request that follows.

Loop-holding is measured by `LoopProbe` as CPU time of the event loop's
thread between two ticks of a 1 ms probe (preemption by other processes does
not count); memory by tracemalloc's peak while the request runs. Bounds are
generous multiples of what the limits allow, and far below what the same
request cost before the limits existed (quoted per row).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from flare.im.v1 import content_pb2, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient
from google.protobuf.message import Message

from flare_runtime.auth import Principal, TokenAuth
from flare_runtime.client import connect
from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import (
    ConversationKind,
    ConversationRecord,
    KeyRing,
    NewMessage,
    Role,
    SqliteStorage,
)
from flare_runtime.server import Server
from flare_runtime.server_connection import PreparedPush
from flare_runtime.status import StatusCode
from flare_runtime.wire.client import WireChannel

TIMEOUT = 60.0
USERS = ["alice", "bob", "carol", "mallory"]
LOOP_HELD = 0.25
"""Seconds of CPU the loop may spend between two probe ticks (a generous bound: a
fan-out step or a reply takes a few ms; each request below held the loop for seconds
before its limit existed)."""


class LoopProbe:
    """The longest CPU time the event loop's thread spent between two 1 ms probe ticks.

    While it runs, the objects that existed before it are frozen out of the garbage
    collector (`gc.freeze`): late in the whole suite a full collection walks every object
    the earlier tests left behind (measured at ~250 ms of one tick there, against ~30 ms
    for the same test alone), which is the test process's heap, not the server's work.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.thread_time()
        while True:
            await asyncio.sleep(0.001)
            now = time.thread_time()
            self.longest = max(self.longest, now - last)
            last = now

    async def __aenter__(self) -> LoopProbe:
        gc.collect()
        gc.freeze()
        self._task = asyncio.ensure_future(self._tick())
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.01)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.unfreeze()


class CountingSink:
    """An online device in the server's process that reads everything at once (counts it)."""

    def __init__(self) -> None:
        self.received = 0
        self.closed = False

    def offer(self, event: PreparedPush, limit: int) -> bool:
        if self.closed:
            raise ConnectionClosedError("closed")
        self.received += 1
        return True

    def close(self, reason: str = "") -> None:
        self.closed = True


class Im:
    """A running IM server and the clients of one test."""

    def __init__(self, path: Path, limits: ImLimits) -> None:
        self.storage = SqliteStorage(path / "im.db", KeyRing.generate())
        self.core = ImCore(self.storage, limits=limits)
        self.server = Server(
            [ImService(self.core)],
            auth=TokenAuth({f"token-{user}": Principal(user) for user in USERS}),
            push_tables=[ImService.PUSH_TYPES],
        )
        self.channels: list[WireChannel] = []
        self.readers: list[asyncio.Future[None]] = []
        self.url = ""

    async def start(self) -> None:
        await self.core.start()
        await self.server.start(websocket="127.0.0.1:0")
        self.url = f"ws://127.0.0.1:{self.server.port('websocket')}"

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        for reader in self.readers:
            reader.cancel()
        await self.server.shutdown(grace=1.0)
        await self.core.close()

    async def client(
        self, user: str, device: str = "d", events: list[Message] | None = None
    ) -> ImServiceClient:
        """A connected, logged-in client of `user` (pushes appended to `events`)."""
        channel = await connect(self.url, token=f"token-{user}", push_tables=[ImService.PUSH_TYPES])
        assert isinstance(channel, WireChannel)
        self.channels.append(channel)
        if events is not None:
            self.readers.append(asyncio.ensure_future(self._read_pushes(channel, events)))
        client = ImServiceClient(channel)
        await client.login(im_pb2.LoginRequest(device_id=device), timeout=TIMEOUT)
        return client

    @staticmethod
    async def _read_pushes(channel: WireChannel, events: list[Message]) -> None:
        async for message in channel.pushes():
            events.append(message)

    async def room_with_messages(
        self, conversation_id: str, members: list[str], count: int, size: int
    ) -> None:
        """A room holding `count` messages of `size` bytes, written straight into storage."""
        record = ConversationRecord(
            conversation_id, ConversationKind.ROOM, "", False, 10_000, 1, 1, 0, 0
        )
        await self.storage.create_conversation(record, dict.fromkeys(members, Role.MEMBER))
        body = content(size)
        await asyncio.gather(
            *(
                self.storage.append(
                    conversation_id,
                    NewMessage(f"{conversation_id}-{seq}", "alice", "d", f"c{seq}", 0, body),
                )
                for seq in range(count)
            )
        )


def content(size: int) -> bytes:
    return content_pb2.Content(text=content_pb2.TextContent(text="x" * size)).SerializeToString()


def text(value: str) -> content_pb2.Content:
    return content_pb2.Content(text=content_pb2.TextContent(text=value))


@contextlib.asynccontextmanager
async def running(path: Path, limits: ImLimits | None = None) -> AsyncIterator[Im]:
    im = Im(path, limits or ImLimits())
    await im.start()
    try:
        yield im
    finally:
        await im.stop()


async def code_and_message(call: Awaitable[Any]) -> tuple[StatusCode, str]:
    with pytest.raises(RpcError) as error:
        await call
    return error.value.code, error.value.message


async def outcomes(calls: list[Awaitable[Any]]) -> list[StatusCode]:
    """The status of each call, run concurrently (OK or the RpcError's code)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    codes = []
    for result in results:
        if isinstance(result, RpcError):
            codes.append(result.code)
        elif isinstance(result, BaseException):
            raise result
        else:
            codes.append(StatusCode.OK)
    return codes


# -- cost of one request ------------------------------------------------------------


async def test_create_room_naming_9999_members_is_refused_at_once(tmp_path: Path) -> None:
    """Input: one CreateRoom naming 9,999 members.

    Promised: INVALID_ARGUMENT (at most `max_members_per_request`, default 1,000,
    per request), and the event loop is never held for long (`LOOP_HELD`).
    Before: accepted, with membership fan-out quadratic in the room's size,
    holding the loop 13-19 s.
    """
    async with running(tmp_path) as im:
        alice = await im.client("alice")
        request = im_pb2.CreateRoomRequest(
            title="huge", member_user_ids=[f"user-{index}" for index in range(9_999)]
        )
        async with LoopProbe() as probe:
            code, message = await code_and_message(alice.create_room(request, timeout=TIMEOUT))
        assert code is StatusCode.INVALID_ARGUMENT and "at most 1000 members" in message
        assert probe.longest < LOOP_HELD


async def test_filling_a_room_with_many_devices_online_never_holds_the_loop(
    tmp_path: Path,
) -> None:
    """Input: a room filled to 10,000 members by one CreateRoom and nine AddMembers of
    1,000 each, while 300 of its members are online.

    Promised: every request succeeds, every online member receives every
    membership change after it joined, and the event loop is never held for long
    (`LOOP_HELD`: fan-outs go out in steps of `fanout_batch` recipients). Before:
    each AddMembers held the loop for seconds (quadratic fan-out).
    """
    async with running(tmp_path) as im:
        owner_events: list[Message] = []
        owner = await im.client("alice", events=owner_events)
        users = [f"user-{index:05}" for index in range(9_999)]
        devices = [CountingSink() for _ in range(300)]
        for user, sink in zip(users[:300], devices, strict=False):
            im.core.login(user, "d", 1, sink)
        async with LoopProbe() as probe:
            room = await owner.create_room(
                im_pb2.CreateRoomRequest(title="big", member_user_ids=users[:999]),
                timeout=TIMEOUT,
            )
            for start in range(999, 9_999, 1_000):
                await owner.add_members(
                    im_pb2.AddMembersRequest(
                        conversation_id=room.conversation_id,
                        user_ids=users[start : start + 1_000],
                    ),
                    timeout=TIMEOUT,
                )
            async with asyncio.timeout(TIMEOUT):
                while any(sink.received < 10_000 for sink in devices):
                    await asyncio.sleep(0.01)
        assert all(sink.received == 10_000 for sink in devices)
        assert probe.longest < LOOP_HELD, f"the loop was held {probe.longest * 1000:.0f} ms"


async def test_sync_naming_2000_cursors_is_refused(tmp_path: Path) -> None:
    """Input: one Sync with 2,000 cursors (a 44 KB request).

    Promised: INVALID_ARGUMENT (at most `max_sync_cursors`, default 1,000).
    Before: every cursor was read, 2,000 pages of messages: 3.07 GB and a 37 s stall.
    """
    async with running(tmp_path) as im:
        await im.room_with_messages("room:tiny", ["alice"], count=1, size=10)
        alice = await im.client("alice")
        cursor = im_pb2.SyncCursor(conversation_id="room:tiny")
        code, message = await code_and_message(
            alice.sync(im_pb2.SyncRequest(cursors=[cursor] * 2_000), timeout=TIMEOUT)
        )
        assert code is StatusCode.INVALID_ARGUMENT and "at most 1000 sync cursors" in message


async def test_sync_over_large_histories_is_bounded_in_memory_and_loop_time(
    tmp_path: Path,
) -> None:
    """Input: one Sync of 200 cursors, each from the start of a conversation holding
    120 messages of 8 KB (about 190 MB of pages at the default page of 100).

    Promised: a reply of at most `max_reply_bytes` (default 1 MiB) of messages, with
    ``has_more`` where messages remain; the server's allocations peak under 32 MB
    and the loop is never held for long (`LOOP_HELD`). Before: every page was read
    and encoded (500 cursors: 835 MB and a 5 s stall).
    """
    async with running(tmp_path) as im:
        for index in range(4):
            await im.room_with_messages(f"room:{index}", ["alice"], count=120, size=8_000)
        alice = await im.client("alice")
        cursors = [im_pb2.SyncCursor(conversation_id=f"room:{i % 4}") for i in range(200)]
        tracemalloc.start()
        try:
            async with LoopProbe() as probe:
                reply = await alice.sync(im_pb2.SyncRequest(cursors=cursors), timeout=TIMEOUT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        carried = sum(len(m.content.text.text) for c in reply.conversations for m in c.messages)
        assert 0 < carried <= 1024 * 1024 + 8_000
        assert all(entry.has_more for entry in reply.conversations)
        assert peak < 32 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
        assert probe.longest < LOOP_HELD, f"the loop was held {probe.longest * 1000:.0f} ms"


async def test_get_history_of_large_messages_is_bounded(tmp_path: Path) -> None:
    """Input: GetHistory with limit 1,000 in a conversation of 200 messages of 60 KB.

    Promised: at most `max_reply_bytes` (1 MiB) of messages, the newest, with
    ``has_more``. Before: all 200 (12 MB) in one reply, over the client's 4 MiB
    message limit.
    """
    async with running(tmp_path) as im:
        await im.room_with_messages("room:big", ["alice"], count=200, size=60_000)
        alice = await im.client("alice")
        reply = await alice.get_history(
            im_pb2.GetHistoryRequest(conversation_id="room:big", limit=1_000), timeout=TIMEOUT
        )
        assert reply.has_more and 1 <= len(reply.messages) <= 18
        assert reply.messages[-1].seq == 200


async def test_list_conversations_of_a_user_in_1500_conversations_is_paged(
    tmp_path: Path,
) -> None:
    """Input: ListConversations by a user who belongs to 1,500 conversations.

    Promised: at most `conversations_page_max` (1,000) per reply, ``has_more`` set,
    and the next page after the last id holds the rest. Before: all of them in one
    reply, however many.
    """
    async with running(tmp_path) as im:
        for index in range(1_500):
            record = ConversationRecord(
                f"room:{index:04}", ConversationKind.ROOM, "", False, 10, 1, 1, 0, 0
            )
            await im.storage.create_conversation(record, {"alice": Role.MEMBER})
        alice = await im.client("alice")
        first = await alice.list_conversations(im_pb2.ListConversationsRequest(), timeout=TIMEOUT)
        assert len(first.conversations) == 1_000 and first.has_more
        second = await alice.list_conversations(
            im_pb2.ListConversationsRequest(
                after_conversation_id=first.conversations[-1].conversation_id
            ),
            timeout=TIMEOUT,
        )
        assert len(second.conversations) == 500 and not second.has_more


# -- per-user rates -------------------------------------------------------------------


async def test_a_set_typing_flood_is_rate_limited(tmp_path: Path) -> None:
    """Input: 300 SetTyping calls at once into a conversation.

    Promised: at most `typing_burst` + `typing_rate_per_second` x elapsed (10 + 5/s)
    accepted, the rest RESOURCE_EXHAUSTED; the other member gets one TypingChanged
    per accepted call. Before: every call accepted (1,701/s measured, ~168k
    pushes/s into a room).
    """
    async with running(tmp_path) as im:
        received: list[Message] = []
        mallory = await im.client("mallory")
        await im.client("bob", events=received)
        direct = await mallory.open_direct(im_pb2.OpenDirectRequest(peer_user_id="bob"))
        request = im_pb2.SetTypingRequest(conversation_id=direct.conversation_id, typing=True)
        started = time.monotonic()
        codes = await outcomes([mallory.set_typing(request, timeout=TIMEOUT) for _ in range(300)])
        elapsed = time.monotonic() - started
        accepted = codes.count(StatusCode.OK)
        assert set(codes) == {StatusCode.OK, StatusCode.RESOURCE_EXHAUSTED}
        assert accepted <= 10 + 5 * elapsed + 1
        await asyncio.sleep(0.2)
        typing = [event for event in received if isinstance(event, events_pb2.TypingChanged)]
        assert len(typing) == accepted


async def test_a_conversation_creation_flood_is_rate_limited(tmp_path: Path) -> None:
    """Input: 200 CreateRoom calls at once by one user.

    Promised: at most `create_burst` + `create_rate_per_second` x elapsed (20 + 1/s)
    succeed, the rest RESOURCE_EXHAUSTED. Before: no limit (20,000 in 3 s).
    """
    async with running(tmp_path) as im:
        mallory = await im.client("mallory")
        request = im_pb2.CreateRoomRequest(title="spam")
        started = time.monotonic()
        codes = await outcomes([mallory.create_room(request, timeout=TIMEOUT) for _ in range(200)])
        elapsed = time.monotonic() - started
        assert set(codes) == {StatusCode.OK, StatusCode.RESOURCE_EXHAUSTED}
        assert codes.count(StatusCode.OK) <= 20 + elapsed + 1


async def test_conversations_no_one_uses_leave_memory(tmp_path: Path) -> None:
    """Input: 600 conversations created and left idle (with `max_cached_rooms` 100,
    `room_idle_seconds` 0 and a create burst that allows it).

    Promised: at most `max_cached_rooms` + a quarter of it stay in memory, and an
    evicted conversation works as before when used again. Before: every
    conversation ever loaded stayed in memory for the life of the process.
    """
    limits = ImLimits(max_cached_rooms=100, room_idle_seconds=0.0, create_burst=1_000)
    async with running(tmp_path, limits) as im:
        alice = await im.client("alice")
        first = await alice.create_room(im_pb2.CreateRoomRequest(title="first"))
        for index in range(600):
            await alice.create_room(im_pb2.CreateRoomRequest(title=f"r{index}"))
        assert im.core.state_sizes()["cached_rooms"] <= 125
        reply = await alice.send(
            im_pb2.SendRequest(
                conversation_id=first.conversation_id, client_message_id="m", content=text("hi")
            )
        )
        assert reply.seq == 1


async def test_ack_membership_and_login_floods_are_rate_limited(tmp_path: Path) -> None:
    """Input: 300 Ack, 300 AddMembers and 100 Login calls at once by one user.

    Promised: each route accepts at most its burst plus its rate over the elapsed
    time (Ack 100 + 20/s, membership changes 50 + 5/s, Login 20 + 1/s), the rest
    RESOURCE_EXHAUSTED. Before: Ack and AddMembers (each a fan-out to every
    member) and Login had no limit.
    """
    async with running(tmp_path) as im:
        mallory = await im.client("mallory")
        room = await mallory.create_room(im_pb2.CreateRoomRequest(title="r"))
        conversation = room.conversation_id
        started = time.monotonic()
        acks = await outcomes(
            [
                mallory.ack(im_pb2.AckRequest(conversation_id=conversation), timeout=TIMEOUT)
                for _ in range(300)
            ]
        )
        adds = await outcomes(
            [
                mallory.add_members(
                    im_pb2.AddMembersRequest(conversation_id=conversation, user_ids=[f"u{i}"]),
                    timeout=TIMEOUT,
                )
                for i in range(300)
            ]
        )
        logins = await outcomes(
            [
                mallory.login(im_pb2.LoginRequest(device_id=f"d{i % 3}"), timeout=TIMEOUT)
                for i in range(100)
            ]
        )
        elapsed = time.monotonic() - started
        assert acks.count(StatusCode.OK) <= 100 + 20 * elapsed + 1
        assert adds.count(StatusCode.OK) <= 50 + 5 * elapsed + 1
        assert logins.count(StatusCode.OK) <= 19 + elapsed + 1  # one login was spent above
        for codes in (acks, adds, logins):
            assert set(codes) == {StatusCode.OK, StatusCode.RESOURCE_EXHAUSTED}


# -- privacy --------------------------------------------------------------------------


async def test_watching_the_presence_of_a_stranger_is_refused(tmp_path: Path) -> None:
    """Input: WatchPresence of a user with whom the caller shares no conversation.

    Promised: PERMISSION_DENIED, and no PresenceChanged about that user ever
    reaches the caller (`SharedConversationPolicy`, the default). Before: anyone
    could watch anyone.
    """
    async with running(tmp_path) as im:
        received: list[Message] = []
        mallory = await im.client("mallory", events=received)
        code, _ = await code_and_message(
            mallory.watch_presence(im_pb2.WatchPresenceRequest(user_ids=["alice"]))
        )
        assert code is StatusCode.PERMISSION_DENIED
        await im.client("alice")
        await asyncio.sleep(0.2)
        assert not [event for event in received if isinstance(event, events_pb2.PresenceChanged)]


async def test_room_ids_cannot_be_guessed_from_ones_own(tmp_path: Path) -> None:
    """Input: two rooms created one after the other; their ids compared.

    Promised: ``room:`` and 22 URL-safe characters of 128 random bits, sharing no
    structure. Before: a process prefix and a counter (``...45`` then ``...4c``).
    """
    async with running(tmp_path) as im:
        alice = await im.client("alice")
        ids = [
            (await alice.create_room(im_pb2.CreateRoomRequest(title="r"))).conversation_id
            for _ in range(2)
        ]
        tokens = [conversation_id.removeprefix("room:") for conversation_id in ids]
        assert all(len(base64.urlsafe_b64decode(token + "==")) == 16 for token in tokens)
        assert tokens[0][:6] != tokens[1][:6]


async def test_a_non_member_cannot_tell_a_closed_room_from_no_room(tmp_path: Path) -> None:
    """Input: JoinRoom, GetConversation and Send by a non-member, to a closed room that
    exists and to an id that does not.

    Promised: the same answer for both (NOT_FOUND "unknown conversation <id>").
    Before: NOT_FOUND for the unknown id but PERMISSION_DENIED for the closed room,
    an oracle for which ids exist.
    """
    async with running(tmp_path) as im:
        alice = await im.client("alice")
        mallory = await im.client("mallory")
        closed = (await alice.create_room(im_pb2.CreateRoomRequest(title="r"))).conversation_id
        unknown = "room:" + "A" * 22

        async def answers(conversation_id: str) -> list[tuple[StatusCode, str]]:
            send = im_pb2.SendRequest(
                conversation_id=conversation_id, client_message_id="c", content=text("hi")
            )
            return [
                await code_and_message(
                    mallory.join_room(im_pb2.JoinRoomRequest(conversation_id=conversation_id))
                ),
                await code_and_message(
                    mallory.get_conversation(
                        im_pb2.GetConversationRequest(conversation_id=conversation_id)
                    )
                ),
                await code_and_message(mallory.send(send)),
            ]

        expected = await answers(unknown)
        assert {code for code, _ in expected} == {StatusCode.NOT_FOUND}
        got = await answers(closed)
        assert got == [(code, message.replace(unknown, closed)) for code, message in expected]


# -- sessions -------------------------------------------------------------------------


async def test_a_refused_second_login_keeps_the_session(tmp_path: Path) -> None:
    """Input: Login, then a second Login on the same connection with an invalid
    (500-character) device id.

    Promised: the second Login fails with INVALID_ARGUMENT and the first session
    goes on (Send still works). Before: the refused Login had already logged the
    first session out (FAILED_PRECONDITION on every later call).
    """
    async with running(tmp_path) as im:
        alice = await im.client("alice")
        direct = await alice.open_direct(im_pb2.OpenDirectRequest(peer_user_id="bob"))
        code, _ = await code_and_message(alice.login(im_pb2.LoginRequest(device_id="x" * 500)))
        assert code is StatusCode.INVALID_ARGUMENT
        reply = await alice.send(
            im_pb2.SendRequest(
                conversation_id=direct.conversation_id, client_message_id="m", content=text("hi")
            )
        )
        assert reply.seq == 1


async def test_logging_in_again_does_not_reset_the_send_rate_limit(tmp_path: Path) -> None:
    """Input: 150 Sends at once, then Login again on the same connection, then on a new
    connection, each followed by 100 Sends at once.

    Promised: the user's bucket carries over (rate limits belong to the user): after
    the first burst, each later burst gets only what the rate (50/s) refilled
    meanwhile. Before: each Login started a fresh bucket (1/100 accepted before the
    re-Login, 100/100 after).
    """
    async with running(tmp_path) as im:
        alice = await im.client("alice")
        direct = await alice.open_direct(im_pb2.OpenDirectRequest(peer_user_id="bob"))

        def burst(client: ImServiceClient, tag: str, count: int) -> list[Awaitable[Any]]:
            return [
                client.send(
                    im_pb2.SendRequest(
                        conversation_id=direct.conversation_id,
                        client_message_id=f"{tag}-{index}",
                        content=text("x"),
                    ),
                    timeout=TIMEOUT,
                )
                for index in range(count)
            ]

        started = time.monotonic()
        first = await outcomes(burst(alice, "first", 150))
        assert StatusCode.RESOURCE_EXHAUSTED in first
        await alice.login(im_pb2.LoginRequest(device_id="d"), timeout=TIMEOUT)
        again = await outcomes(burst(alice, "again", 100))
        other = await im.client("alice", "other-device")
        elsewhere = await outcomes(burst(other, "elsewhere", 100))
        # One bucket for all three bursts: its 100 tokens, plus what 50/s refilled.
        allowed = 100 + 50 * (time.monotonic() - started) + 1
        accepted = [codes.count(StatusCode.OK) for codes in (first, again, elsewhere)]
        assert sum(accepted) <= allowed, accepted
