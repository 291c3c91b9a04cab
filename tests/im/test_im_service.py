"""The IM API served by the Flare runtime over real WebSocket sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flare.im.v1 import content_pb2, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient
from google.protobuf.message import Message

from flare_runtime.auth import Principal, TokenAuth
from flare_runtime.client import connect
from flare_runtime.errors import RpcError
from flare_runtime.im.core import DevicePolicy, ImCore, ImLimits
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.server import Server
from flare_runtime.status import StatusCode
from flare_runtime.testing.timing import UNIT
from flare_runtime.wire.client import WireChannel

USERS = [f"user{i}" for i in range(60)]
TIMEOUT = 10 * UNIT


def text(value: str) -> content_pb2.Content:
    return content_pb2.Content(text=content_pb2.TextContent(text=value))


@dataclass
class ImServerHarness:
    """A real server: ImCore on SQLite, served over WebSocket on an ephemeral port."""

    path: Path
    keyring: KeyRing
    policy: DevicePolicy = DevicePolicy.ALLOW_ALL
    limits: ImLimits = field(
        default_factory=lambda: ImLimits(
            send_rate_per_second=10_000, send_burst=10_000, presence_grace_seconds=1.0
        )
    )
    core: ImCore | None = None
    server: Server | None = None
    url: str = ""

    async def start(self) -> None:
        self.core = ImCore(
            SqliteStorage(self.path / "im.db", self.keyring), policy=self.policy, limits=self.limits
        )
        await self.core.start()
        tokens = {f"token-{user}": Principal(user) for user in USERS}
        self.server = Server(
            [ImService(self.core)], auth=TokenAuth(tokens), push_tables=[ImService.PUSH_TYPES]
        )
        await self.server.start(websocket="127.0.0.1:0")
        self.url = f"ws://127.0.0.1:{self.server.port('websocket')}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown(grace=1.0)
        if self.core is not None:
            await self.core.close()


@dataclass
class Device:
    """One logged-in client device: a channel, a typed client, the events it received."""

    user: str
    channel: WireChannel
    client: ImServiceClient
    events: list[Message] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def messages(self) -> list[events_pb2.Message]:
        return [event.message for event in self.of_type(events_pb2.MessageReceived)]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.arrived.clear()
                await self.arrived.wait()

    def kill(self) -> None:
        """Drop the TCP connection at once, as a crashed client or a lost network would."""
        self.channel.endpoint.transport.abort()


async def open_device(
    url: str,
    user: str,
    device_id: str,
    platform: im_pb2.Platform.ValueType = im_pb2.PLATFORM_WEB,
    **options: Any,
) -> Device:
    channel = await connect(
        url, token=f"token-{user}", push_tables=[ImService.PUSH_TYPES], **options
    )
    assert isinstance(channel, WireChannel)
    device = Device(user, channel, ImServiceClient(channel))

    def on_push(message: Message) -> None:
        device.events.append(message)
        device.arrived.set()

    if "max_pending_pushes" not in options:
        channel.on_push(on_push)
    await device.client.login(
        im_pb2.LoginRequest(device_id=device_id, platform=platform), timeout=TIMEOUT
    )
    return device


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ImServerHarness]:
    running = ImServerHarness(tmp_path, KeyRing.generate())
    await running.start()
    yield running
    await running.stop()


@contextlib.asynccontextmanager
async def devices(*opened: Device) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for device in opened:
            await device.channel.close()


async def send(device: Device, conversation: str, client_id: str, body: str) -> im_pb2.SendReply:
    request = im_pb2.SendRequest(
        conversation_id=conversation, client_message_id=client_id, content=text(body)
    )
    return await device.client.send(request, timeout=TIMEOUT)


async def test_two_users_with_several_devices_exchange_messages(harness: ImServerHarness) -> None:
    alice_phone = await open_device(harness.url, "user1", "phone", im_pb2.PLATFORM_MOBILE)
    alice_web = await open_device(harness.url, "user1", "web")
    bob_phone = await open_device(harness.url, "user2", "phone", im_pb2.PLATFORM_MOBILE)
    bob_desktop = await open_device(harness.url, "user2", "desktop", im_pb2.PLATFORM_DESKTOP)
    everyone = (alice_phone, alice_web, bob_phone, bob_desktop)
    async with devices(*everyone):
        direct = await alice_phone.client.open_direct(
            im_pb2.OpenDirectRequest(peer_user_id="user2"), timeout=TIMEOUT
        )
        conversation = direct.conversation_id
        assert [m.user_id for m in direct.members] == ["user1", "user2"]
        for i in range(5):
            await send(alice_phone, conversation, f"a{i}", f"from alice {i}")
            await send(bob_desktop, conversation, f"b{i}", f"from bob {i}")
        for device in everyone:
            await device.wait_until(lambda d=device: len(d.messages()) == 10)  # type: ignore[misc]
            got = device.messages()
            assert [m.seq for m in got] == list(range(1, 11))
            assert got[0].content.text.text == "from alice 0"
            assert got[1].sender_user_id == "user2" and got[1].sender_device_id == "desktop"


async def test_fifty_concurrent_senders_in_one_room_give_gap_free_order(
    harness: ImServerHarness,
) -> None:
    senders = [await open_device(harness.url, USERS[i], "d") for i in range(50)]
    watcher = await open_device(harness.url, USERS[1], "watcher-device")
    async with devices(*senders, watcher):
        room = await senders[0].client.create_room(
            im_pb2.CreateRoomRequest(title="busy", member_user_ids=USERS[1:50]), timeout=TIMEOUT
        )

        async def burst(device: Device) -> list[int]:
            replies = [
                await send(device, room.conversation_id, f"{device.user}-{n}", "x")
                for n in range(4)
            ]
            return [reply.seq for reply in replies]

        seqs = await asyncio.gather(*(burst(device) for device in senders))
        assert sorted(seq for batch in seqs for seq in batch) == list(range(1, 201))
        for device in (watcher, senders[0], senders[49]):
            await device.wait_until(lambda d=device: len(d.messages()) == 200)  # type: ignore[misc]
            assert [m.seq for m in device.messages()] == list(range(1, 201))


async def test_retried_send_returns_the_original_reply(harness: ImServerHarness) -> None:
    alice = await open_device(harness.url, "user1", "phone")
    bob = await open_device(harness.url, "user2", "phone")
    async with devices(alice, bob):
        direct = await alice.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user2"))
        first = await send(alice, direct.conversation_id, "retry-me", "hello")
        retries = await asyncio.gather(
            *(send(alice, direct.conversation_id, "retry-me", "hello") for _ in range(3))
        )
        for retry in retries:
            assert retry.duplicate and not first.duplicate
            assert (retry.message_id, retry.seq, retry.sent_at_ms) == (
                first.message_id,
                first.seq,
                first.sent_at_ms,
            )
        history = await bob.client.get_history(
            im_pb2.GetHistoryRequest(conversation_id=direct.conversation_id)
        )
        assert [m.client_message_id for m in history.messages] == ["retry-me"]
        await bob.wait_until(lambda: len(bob.messages()) == 1)
        await asyncio.sleep(0.05)
        assert len(bob.messages()) == 1


async def sync_all(device: Device, conversation: str, epoch: int, last_seq: int) -> list[int]:
    seqs: list[int] = []
    while True:
        reply = await device.client.sync(
            im_pb2.SyncRequest(
                cursors=[
                    im_pb2.SyncCursor(conversation_id=conversation, epoch=epoch, last_seq=last_seq)
                ],
                limit=30,
            ),
            timeout=TIMEOUT,
        )
        (entry,) = reply.conversations
        assert entry.status == im_pb2.ConversationSync.STATUS_OK, entry.resync_reason
        seqs += [m.seq for m in entry.messages]
        if not entry.has_more:
            return seqs
        epoch, last_seq = entry.epoch, entry.messages[-1].seq


async def test_killed_connection_recovers_exactly_the_missing_messages(
    harness: ImServerHarness,
) -> None:
    alice = await open_device(harness.url, "user1", "phone")
    bob = await open_device(harness.url, "user2", "phone")
    async with devices(alice):
        direct = await alice.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user2"))
        conversation = direct.conversation_id
        for i in range(20):
            await send(alice, conversation, f"before-{i}", "x")
        await bob.wait_until(lambda: len(bob.messages()) == 20)
        last_seen = bob.messages()[-1]
        bob.kill()
        for i in range(100):
            await send(alice, conversation, f"after-{i}", f"missed {i}")
        bob = await open_device(harness.url, "user2", "phone")
        async with devices(bob):
            seqs = await sync_all(bob, conversation, last_seen.epoch, last_seen.seq)
            assert seqs == list(range(21, 121))

            # After trimming, a cursor that old cannot be continued: explicit re-sync.
            assert harness.core is not None
            await harness.core.apply_retention(conversation, keep_last=10)
            reply = await bob.client.sync(
                im_pb2.SyncRequest(
                    cursors=[im_pb2.SyncCursor(conversation_id=conversation, epoch=1, last_seq=20)]
                )
            )
            (entry,) = reply.conversations
            assert entry.status == im_pb2.ConversationSync.STATUS_RESYNC_REQUIRED
            assert entry.first_seq == 111 and not entry.messages
            assert "trimmed" in entry.resync_reason


async def test_server_restart_loses_no_acknowledged_message(tmp_path: Path) -> None:
    keyring = KeyRing.generate()
    first = ImServerHarness(tmp_path, keyring)
    await first.start()
    alice = await open_device(first.url, "user1", "phone")
    direct = await alice.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user2"))
    conversation = direct.conversation_id
    acknowledged = await asyncio.gather(
        *(send(alice, conversation, f"c{i}", f"durable {i}") for i in range(150))
    )
    assert sorted(reply.seq for reply in acknowledged) == list(range(1, 151))
    await alice.channel.close()
    await first.stop()

    # New rotated key for new messages; the old one stays in the ring to read history.
    second = ImServerHarness(tmp_path, keyring.rotated(2))
    await second.start()
    try:
        bob = await open_device(second.url, "user2", "laptop")
        async with devices(bob):
            assert await sync_all(bob, conversation, 0, 0) == list(range(1, 151))
            assert await sync_all(bob, conversation, 1, 140) == list(range(141, 151))
            reply = await send(bob, conversation, "after-restart", "still ordered")
            assert reply.seq == 151
            history = await bob.client.get_history(
                im_pb2.GetHistoryRequest(conversation_id=conversation, before_seq=3, limit=2)
            )
            assert [m.content.text.text for m in history.messages] == ["durable 0", "durable 1"]
    finally:
        await second.stop()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("im.db*"))
    assert b"durable" not in raw and b"still ordered" not in raw


@pytest.mark.parametrize("policy", [DevicePolicy.ONE_IN_TOTAL, DevicePolicy.ONE_PER_PLATFORM])
async def test_device_policy_kicks_the_older_session_with_a_reason(
    tmp_path: Path, policy: DevicePolicy
) -> None:
    harness = ImServerHarness(tmp_path, KeyRing.generate(), policy=policy)
    await harness.start()
    try:
        old = await open_device(harness.url, "user1", "old-phone", im_pb2.PLATFORM_MOBILE)
        new = await open_device(harness.url, "user1", "new-phone", im_pb2.PLATFORM_MOBILE)
        desk = await open_device(harness.url, "user1", "desk", im_pb2.PLATFORM_DESKTOP)
        async with devices(old, new, desk):
            await old.wait_until(lambda: bool(old.of_type(events_pb2.SessionClosed)))
            (closed,) = old.of_type(events_pb2.SessionClosed)
            assert closed.reason == events_pb2.SessionClosed.REASON_REPLACED
            async with asyncio.timeout(TIMEOUT):
                while not old.channel.closed:
                    await asyncio.sleep(0.01)
            with pytest.raises(RpcError):
                await old.client.list_conversations(im_pb2.ListConversationsRequest())
            # One per platform keeps the desktop next to the newest phone.
            if policy is DevicePolicy.ONE_IN_TOTAL:
                await new.wait_until(lambda: bool(new.of_type(events_pb2.SessionClosed)))
            else:
                await new.client.list_conversations(im_pb2.ListConversationsRequest())
                assert not new.of_type(events_pb2.SessionClosed)
            await desk.client.list_conversations(im_pb2.ListConversationsRequest())
    finally:
        await harness.stop()


async def test_kick_member_receipts_and_unread_counts(harness: ImServerHarness) -> None:
    owner = await open_device(harness.url, "user1", "d")
    member = await open_device(harness.url, "user2", "d")
    other = await open_device(harness.url, "user3", "d")
    async with devices(owner, member, other):
        room = await owner.client.create_room(
            im_pb2.CreateRoomRequest(title="r", member_user_ids=["user2", "user3"])
        )
        conversation = room.conversation_id
        for i in range(6):
            await send(owner, conversation, f"m{i}", "x")
        listed = await member.client.list_conversations(im_pb2.ListConversationsRequest())
        assert [(c.conversation_id, c.unread_count) for c in listed.conversations] == [
            (conversation, 6)
        ]
        ack = await member.client.ack(
            im_pb2.AckRequest(conversation_id=conversation, delivered_seq=6, read_seq=4)
        )
        assert (ack.delivered_seq, ack.read_seq, ack.unread_count) == (6, 4, 2)
        await owner.wait_until(lambda: bool(owner.of_type(events_pb2.ReceiptUpdated)))
        (receipt,) = owner.of_type(events_pb2.ReceiptUpdated)
        assert (receipt.user_id, receipt.read_seq) == ("user2", 4)

        await owner.client.kick_member(
            im_pb2.KickMemberRequest(conversation_id=conversation, user_id="user3")
        )

        def kicked() -> list[events_pb2.MembershipChanged]:
            return [
                e
                for e in other.of_type(events_pb2.MembershipChanged)
                if e.change == events_pb2.MembershipChanged.CHANGE_KICKED
            ]

        await other.wait_until(lambda: bool(kicked()))
        assert (kicked()[0].user_id, kicked()[0].actor_user_id) == ("user3", "user1")
        with pytest.raises(RpcError) as denied:
            await send(other, conversation, "late", "x")
        assert denied.value.code is StatusCode.NOT_FOUND


async def test_typing_and_presence_with_a_grace_period(harness: ImServerHarness) -> None:
    watcher = await open_device(harness.url, "user1", "d")
    async with devices(watcher):
        # Presence is visible between users who share a conversation.
        await watcher.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user2"))
        states = await watcher.client.watch_presence(
            im_pb2.WatchPresenceRequest(user_ids=["user2"])
        )
        assert [(u.user_id, u.online) for u in states.users] == [("user2", False)]
        bob = await open_device(harness.url, "user2", "d")
        await watcher.wait_until(lambda: len(watcher.of_type(events_pb2.PresenceChanged)) == 1)
        direct = await bob.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user1"))
        await bob.client.set_typing(
            im_pb2.SetTypingRequest(conversation_id=direct.conversation_id, typing=True)
        )
        await watcher.wait_until(lambda: bool(watcher.of_type(events_pb2.TypingChanged)))
        online = await watcher.client.get_online_members(
            im_pb2.GetOnlineMembersRequest(conversation_id=direct.conversation_id)
        )
        assert list(online.user_ids) == ["user1", "user2"]

        bob.kill()  # and back before the grace period (1 s) ends: no flap
        bob = await open_device(harness.url, "user2", "d")
        await asyncio.sleep(1.3)  # past the grace period
        assert [e.online for e in watcher.of_type(events_pb2.PresenceChanged)] == [True]

        await bob.channel.close()
        await watcher.wait_until(lambda: len(watcher.of_type(events_pb2.PresenceChanged)) == 2)
        assert [e.online for e in watcher.of_type(events_pb2.PresenceChanged)] == [True, False]
        history = await watcher.client.get_history(
            im_pb2.GetHistoryRequest(conversation_id=direct.conversation_id)
        )
        assert list(history.messages) == []  # typing is never stored
    assert harness.core is not None
    async with asyncio.timeout(TIMEOUT):
        while harness.core.state_sizes()["sessions"]:
            await asyncio.sleep(0.05)


async def test_slow_consumer_is_disconnected_and_the_room_goes_on(tmp_path: Path) -> None:
    limits = ImLimits(
        send_rate_per_second=10_000, send_burst=10_000, outbound_buffer_bytes=256 * 1024
    )
    harness = ImServerHarness(tmp_path, KeyRing.generate(), limits=limits)
    await harness.start()
    try:
        sender = await open_device(harness.url, "user1", "d")
        fast = await open_device(harness.url, "user2", "fast")
        # This device's application never takes its pushes: the channel stops
        # reading after 4, so the server's buffer towards it grows.
        slow = await open_device(harness.url, "user2", "slow", max_pending_pushes=4)
        async with devices(sender, fast, slow):
            direct = await sender.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user2"))
            big = "z" * 60_000
            assert harness.core is not None and harness.server is not None
            sent = 0
            while len(harness.core.sessions_of("user2")) == 2:
                assert sent < 400, "the slow device was never cut off"
                await send(sender, direct.conversation_id, f"m{sent}", big)
                sent += 1
            assert [s.device_id for s in harness.core.sessions_of("user2")] == ["fast"]
            # Its socket is gone too (aborted: it would never read the CLOSE frame).
            async with asyncio.timeout(TIMEOUT):
                while len(harness.server.connections) > 2:
                    await asyncio.sleep(0.05)
            await send(sender, direct.conversation_id, "after", "the room goes on")
            await fast.wait_until(lambda: len(fast.messages()) == sent + 1)
            assert [m.seq for m in fast.messages()] == list(range(1, sent + 2))
    finally:
        await harness.stop()


async def test_bad_input_gets_typed_errors(tmp_path: Path) -> None:
    limits = ImLimits(send_rate_per_second=5, send_burst=10, max_content_bytes=1_000)
    harness = ImServerHarness(tmp_path, KeyRing.generate(), limits=limits)
    await harness.start()
    try:
        alice = await open_device(harness.url, "user1", "d")
        mallory = await open_device(harness.url, "user9", "d")
        anonymous = await connect(harness.url, push_tables=[ImService.PUSH_TYPES])
        not_logged_in = await connect(harness.url, token="token-user1")
        async with devices(alice, mallory):
            direct = await alice.client.open_direct(im_pb2.OpenDirectRequest(peer_user_id="user2"))

            async def code(call: Any) -> StatusCode:
                with pytest.raises(RpcError) as failure:
                    await call
                return failure.value.code

            conversation = direct.conversation_id
            assert await code(send(mallory, conversation, "x", "hi")) is StatusCode.NOT_FOUND
            assert await code(send(alice, "room:unknown", "x", "hi")) is StatusCode.NOT_FOUND
            assert await code(send(alice, conversation, "x", "y" * 5_000)) is (
                StatusCode.INVALID_ARGUMENT
            )
            empty = im_pb2.SendRequest(conversation_id=conversation, client_message_id="e")
            assert await code(alice.client.send(empty)) is StatusCode.INVALID_ARGUMENT
            login = im_pb2.LoginRequest(device_id="d")
            assert await code(ImServiceClient(anonymous).login(login)) is (
                StatusCode.UNAUTHENTICATED
            )
            listing = im_pb2.ListConversationsRequest()
            assert await code(ImServiceClient(not_logged_in).list_conversations(listing)) is (
                StatusCode.FAILED_PRECONDITION
            )
            results = await asyncio.gather(
                *(send(alice, conversation, f"flood-{i}", "x") for i in range(40)),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, RpcError)]
            assert len(failures) >= 25
            assert {f.code for f in failures} == {StatusCode.RESOURCE_EXHAUSTED}
            # The connection survives all of it.
            await alice.client.list_conversations(listing)
        await anonymous.close()
        await not_logged_in.close()
    finally:
        await harness.stop()


def test_a_room_s_encoded_member_list_is_built_once_per_change() -> None:
    """GetConversation of a big room merges cached bytes instead of encoding every member
    again (encoding 10,000 members holds the loop ~20 ms; merging the bytes ~1 ms)."""
    from flare_runtime.im.conversations import ConversationView
    from flare_runtime.im.delivery import MemberTable
    from flare_runtime.im.service import _conversation_info, _encoded_members
    from flare_runtime.im.storage.base import ConversationKind, ConversationRecord, Role

    record = ConversationRecord(
        conversation_id="room:x",
        kind=ConversationKind.ROOM,
        title="big",
        open=True,
        member_limit=10_000,
        epoch=1,
        first_seq=1,
        last_seq=0,
        created_at_ms=0,
    )
    table = MemberTable({f"user-{index:05}": Role.MEMBER for index in range(10_000)})

    def view() -> ConversationView:
        return ConversationView(record, dict(table), table, table.version)

    first = _encoded_members(view())
    assert _encoded_members(view()) is first  # reused, not rebuilt
    stale = view()
    table["newcomer"] = Role.ADMIN
    assert _encoded_members(stale) == first  # a view taken before the change stays exact
    info = _conversation_info(view())
    assert len(info.members) == 10_001
    assert [member.user_id for member in info.members] == sorted(table)
    assert {member.user_id: member.role for member in info.members}["newcomer"] == int(Role.ADMIN)
    assert _encoded_members(view()) is not first
