"""Offline push in one process: who is notified, with what, and that sends never wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2, im_pb2

from flare_runtime.im.core import ImCore, ImLimits, Session
from flare_runtime.im.push import (
    Device,
    OfflinePush,
    PushNotification,
    PushPreview,
    PushProvider,
    PushSettings,
)
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.im.storage.base import StoredMessage
from flare_runtime.testing.timing import UNIT

WEB, MOBILE = im_pb2.PLATFORM_WEB, im_pb2.PLATFORM_MOBILE


class Recording(PushProvider):
    """A provider keeping what it is handed (what a real one would queue for sending)."""

    def __init__(self) -> None:
        self.notifications: list[PushNotification] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    def notify(self, notification: PushNotification) -> None:
        self.notifications.append(notification)

    async def close(self) -> None:
        self.closed = True


def text(value: str) -> bytes:
    return content_pb2.Content(text=content_pb2.TextContent(text=value)).SerializeToString()


async def started(tmp_path: Path, **settings: object) -> tuple[ImCore, Recording]:
    provider = Recording()
    core = ImCore(
        SqliteStorage(tmp_path / "im.db", KeyRing.generate()),
        limits=ImLimits(send_rate_per_second=1e4, send_burst=10_000),
        push=PushSettings(provider, **settings),  # type: ignore[arg-type]
    )
    await core.start()
    assert provider.started
    return core, provider


@pytest.fixture
async def pushing(tmp_path: Path) -> AsyncIterator[tuple[ImCore, Recording]]:
    core, provider = await started(tmp_path)
    yield core, provider
    await core.close()
    assert provider.closed


def login(core: ImCore, user: str, platform: int = WEB, device: str = "d") -> Session:
    return core.login(user, device, platform, QueueSink())[0]


async def settle(provider: Recording, count: int) -> list[PushNotification]:
    for _ in range(100):
        if len(provider.notifications) >= count:
            break
        await asyncio.sleep(UNIT / 20)
    await asyncio.sleep(UNIT / 10)  # and nothing more comes
    return provider.notifications


async def test_only_members_without_a_live_session_are_notified(
    pushing: tuple[ImCore, Recording],
) -> None:
    core, provider = pushing
    alice, _bob = login(core, "alice"), login(core, "bob")
    room = await core.create_room(alice, "r", ["bob", "carol", "dave"])
    sent = await core.send(alice, room.record.conversation_id, "c1", text("secret plans"))
    notes = await settle(provider, 2)
    assert sorted(note.user_id for note in notes) == ["carol", "dave"]
    note = notes[0]
    message = sent.message
    assert (note.conversation_id, note.message_id, note.seq, note.epoch) == (
        message.conversation_id,
        message.message_id,
        message.seq,
        message.epoch,
    )
    assert (note.sender_user_id, note.sent_at_ms) == ("alice", message.sent_at_ms)
    assert (note.platforms, note.online_platforms) == (frozenset(), frozenset())
    # The default preview policy reveals nothing of the body.
    assert (note.content_type, note.preview) == ("", "")
    # A retry of the same client message id stores nothing new: no second notification.
    await core.send(alice, room.record.conversation_id, "c1", text("secret plans"))
    assert len(await settle(provider, 3)) == 2
    counters = core.counters()  # what /metrics exports as flare_im_push_*
    assert (counters["push_notified"], counters["push_dropped"]) == (2, 0)


async def test_per_platform_a_user_online_elsewhere_is_notified_for_the_missing_platform(
    tmp_path: Path,
) -> None:
    core, provider = await started(tmp_path, platforms=frozenset({MOBILE}))
    try:
        alice, bob_web = login(core, "alice"), login(core, "bob", WEB, "laptop")
        room = await core.create_room(alice, "r", ["bob"])
        await core.send(alice, room.record.conversation_id, "c1", text("hi"))
        (note,) = await settle(provider, 1)
        assert (note.user_id, note.platforms, note.online_platforms) == (
            "bob",
            frozenset({MOBILE}),
            frozenset({WEB}),
        )
        login(core, "bob", MOBILE, "phone")
        await core.send(alice, room.record.conversation_id, "c2", text("hi"))
        assert len(await settle(provider, 2)) == 1  # bob's phone is online: nothing
        core.logout(bob_web)
    finally:
        await core.close()


@pytest.mark.parametrize(
    ("preview", "expected"),
    [(PushPreview.CONTENT_TYPE, ("text", "")), (PushPreview.TEXT, ("text", "0123456789"))],
)
async def test_preview_policies(
    tmp_path: Path, preview: PushPreview, expected: tuple[str, str]
) -> None:
    core, provider = await started(tmp_path, preview=preview, preview_chars=10)
    try:
        alice = login(core, "alice")
        room = await core.create_room(alice, "r", ["bob"])
        await core.send(alice, room.record.conversation_id, "c1", text("0123456789abcdef"))
        (note,) = await settle(provider, 1)
        assert (note.content_type, note.preview) == expected
    finally:
        await core.close()


async def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    core, provider = await started(tmp_path, max_pending=3)
    try:
        assert core.push is not None
        members = {"alice": 1, "bob": 1}
        for seq in range(1, 11):  # no await in between: the checking task cannot run
            core.push.message_stored(
                members, StoredMessage("conv", seq, 1, f"m{seq}", "alice", "d", "", 0, b"")
            )
        assert core.push.dropped == 7
        notes = await settle(provider, 3)
        assert [note.seq for note in notes] == [8, 9, 10]
        assert (core.counters()["push_notified"], core.counters()["push_dropped"]) == (3, 7)
    finally:
        await core.close()


async def test_messages_still_queued_at_close_are_counted_dropped() -> None:
    provider = Recording()

    async def nobody_online(users: Sequence[str]) -> dict[str, list[Device]]:
        return {}

    push = OfflinePush(PushSettings(provider), nobody_online)
    await push.start()
    for seq in range(1, 4):  # the checking task has not run yet
        push.message_stored(
            {"alice": 1, "bob": 1},
            StoredMessage("conv", seq, 1, f"m{seq}", "alice", "d", "", 0, b""),
        )
    await push.close()
    assert (push.dropped, push.notified, provider.notifications) == (3, 0, [])
    assert provider.closed


async def test_a_failing_provider_never_fails_a_send(tmp_path: Path) -> None:
    class Broken(Recording):
        def notify(self, notification: PushNotification) -> None:
            raise RuntimeError("provider bug")

    provider = Broken()
    core = ImCore(
        SqliteStorage(tmp_path / "im.db", KeyRing.generate()), push=PushSettings(provider)
    )
    await core.start()
    try:
        alice = login(core, "alice")
        room = await core.create_room(alice, "r", ["bob"])
        for number in range(3):
            await core.send(alice, room.record.conversation_id, f"c{number}", text("x"))
        await asyncio.sleep(UNIT / 5)
        assert core.push is not None
        assert core.push.notified == 0
    finally:
        await core.close()
