"""Presence: the visibility policy, watch limits, the grace period, typing rates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from pathlib import Path

import pytest
from flare.im.v1 import events_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im import events
from flare_runtime.im.core import EveryonePolicy, ImCore, ImLimits, PresencePolicy, Session
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.status import StatusCode


async def open_core(path: Path, policy: PresencePolicy | None = None, **limits: float) -> ImCore:
    core = ImCore(
        SqliteStorage(path / "im.db", KeyRing.generate()),
        limits=ImLimits(**limits),  # type: ignore[arg-type]
        presence_policy=policy,
    )
    await core.start()
    return core


def login(core: ImCore, user: str, device: str = "d") -> tuple[Session, QueueSink]:
    sink = QueueSink()
    return core.login(user, device, 1, sink)[0], sink


async def code_of(call: Awaitable[object]) -> StatusCode:
    with pytest.raises(RpcError) as error:
        await call
    return error.value.code


def presence(sink: QueueSink) -> list[tuple[str, bool]]:
    return [
        (change.user_id, change.online)
        for change in (
            events_pb2.PresenceChanged.FromString(payload)
            for type_id, payload in sink.take()
            if type_id == events.PRESENCE_CHANGED
        )
    ]


async def test_by_default_only_users_who_share_a_conversation_see_each_other(
    tmp_path: Path,
) -> None:
    core = await open_core(tmp_path, presence_grace_seconds=0.01)
    try:
        watcher, sink = login(core, "watcher")
        assert await code_of(core.watch_presence(watcher, ["stranger"])) is (
            StatusCode.PERMISSION_DENIED
        )
        # All or nothing: a visible user named beside a hidden one is not watched either.
        await core.open_direct(watcher, "friend")
        assert await code_of(core.watch_presence(watcher, ["friend", "stranger"])) is (
            StatusCode.PERMISSION_DENIED
        )
        assert watcher.watching == set()
        assert await core.watch_presence(watcher, ["friend", "watcher"]) == {
            "friend": False,
            "watcher": True,
        }
        login(core, "friend")
        stranger, _ = login(core, "stranger")
        core.logout(stranger)
        await asyncio.sleep(0.1)
        assert presence(sink) == [("friend", True)]  # nothing about the stranger
    finally:
        await core.close()


class Friends:
    """An application's own policy: a friends list."""

    def __init__(self, pairs: set[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.asked: list[tuple[str, list[str]]] = []

    async def visible(self, watcher_user_id: str, user_ids: Sequence[str]) -> set[str]:
        self.asked.append((watcher_user_id, list(user_ids)))
        return {user for user in user_ids if (watcher_user_id, user) in self.pairs}


async def test_the_policy_is_pluggable(tmp_path: Path) -> None:
    friends = Friends({("alice", "bob")})
    core = await open_core(tmp_path, friends)
    try:
        alice, _ = login(core, "alice")
        assert await core.watch_presence(alice, ["bob"]) == {"bob": False}
        assert await code_of(core.watch_presence(alice, ["carol"])) is (
            StatusCode.PERMISSION_DENIED
        )
        # Already watched users are not asked about again.
        await core.watch_presence(alice, ["bob"])
        assert friends.asked == [("alice", ["bob"]), ("alice", ["carol"])]
    finally:
        await core.close()
    (tmp_path / "everyone").mkdir()
    anyone = await open_core(tmp_path / "everyone", EveryonePolicy())
    try:
        alice, _ = login(anyone, "alice")
        assert await anyone.watch_presence(alice, ["stranger"]) == {"stranger": False}
    finally:
        await anyone.close()


async def test_unwatching_answers_only_for_users_that_were_watched(tmp_path: Path) -> None:
    core = await open_core(tmp_path, EveryonePolicy())
    try:
        alice, _ = login(core, "alice")
        login(core, "bob")
        login(core, "carol")
        await core.watch_presence(alice, ["bob"])
        states = await core.watch_presence(alice, ["bob", "carol"], unwatch=True)
        assert states == {"bob": True} and alice.watching == set()
        assert core.state_sizes()["watched_users"] == 0
    finally:
        await core.close()


async def test_watch_sizes_and_rates_are_bounded(tmp_path: Path) -> None:
    core = await open_core(
        tmp_path,
        EveryonePolicy(),
        max_watched_users=50,
        watch_rate_per_second=0.001,
        watch_burst=3,
    )
    try:
        alice, _ = login(core, "alice")
        huge = [f"user-{index}" for index in range(100_000)]
        assert await code_of(core.watch_presence(alice, huge)) is StatusCode.RESOURCE_EXHAUSTED
        await core.watch_presence(alice, huge[:40])
        assert await code_of(core.watch_presence(alice, huge[40:60])) is (
            StatusCode.RESOURCE_EXHAUSTED
        )
        await core.watch_presence(alice, huge[40:50])
        assert await code_of(core.watch_presence(alice, huge[:1])) is (
            StatusCode.RESOURCE_EXHAUSTED  # the watch rate: 3 calls spent
        )
    finally:
        await core.close()


async def test_typing_is_rate_limited_per_user(tmp_path: Path) -> None:
    core = await open_core(tmp_path, typing_rate_per_second=0.001, typing_burst=4)
    try:
        phone, _ = login(core, "alice", "phone")
        web, _ = login(core, "alice", "web")
        _, bob_sink = login(core, "bob")
        conversation = (await core.open_direct(phone, "bob")).record.conversation_id
        for session in (phone, web, phone, web):
            await core.set_typing(session, conversation, True)
        # The limit is the user's: another device of the same user has no fresh budget.
        assert await code_of(core.set_typing(web, conversation, False)) is (
            StatusCode.RESOURCE_EXHAUSTED
        )
        typed = [type_id for type_id, _ in bob_sink.take() if type_id == events.TYPING_CHANGED]
        assert len(typed) == 4
    finally:
        await core.close()


async def test_a_watch_ends_with_its_session(tmp_path: Path) -> None:
    core = await open_core(tmp_path, EveryonePolicy(), presence_grace_seconds=0.01)
    try:
        watcher, sink = login(core, "watcher")
        await core.watch_presence(watcher, ["bob"])
        core.logout(watcher)
        login(core, "bob")
        await asyncio.sleep(0.05)
        assert presence(sink) == [] and core.state_sizes()["watched_users"] == 0
    finally:
        await core.close()
