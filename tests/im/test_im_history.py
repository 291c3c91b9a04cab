"""The log read back: Sync and GetHistory pages bounded in count and in bytes, receipts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im.core import ImCore, ImLimits, Session, SyncCursor
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.status import StatusCode

KB = 1024


def body(size: int) -> bytes:
    return content_pb2.Content(text=content_pb2.TextContent(text="x" * size)).SerializeToString()


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[ImCore]:
    limits = ImLimits(
        max_reply_bytes=50 * KB,
        max_sync_cursors=8,
        send_rate_per_second=1e4,
        send_burst=10_000,
        create_burst=100,
    )
    started = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()), limits=limits)
    await started.start()
    yield started
    await started.close()


async def filled(core: ImCore, alice: Session, rooms: int, messages: int, size: int) -> list[str]:
    conversations = []
    for index in range(rooms):
        conversation = (await core.create_room(alice, f"r{index}", [])).record.conversation_id
        for seq in range(messages):
            await core.send(alice, conversation, f"m{seq}", body(size))
        conversations.append(conversation)
    return conversations


def login(core: ImCore, user: str) -> Session:
    return core.login(user, "d", 1, QueueSink())[0]


async def test_a_sync_reply_holds_at_most_max_reply_bytes_and_recovery_stays_exact(
    core: ImCore,
) -> None:
    alice = login(core, "alice")
    conversations = await filled(core, alice, rooms=5, messages=20, size=2 * KB)
    cursors = {conversation: 0 for conversation in conversations}
    got: dict[str, list[int]] = {conversation: [] for conversation in conversations}
    replies = 0
    while cursors:
        results = await core.sync(
            alice, [SyncCursor(c, 1 if seq else 0, seq) for c, seq in cursors.items()]
        )
        replies += 1
        assert sum(len(m.body) for r in results for m in r.messages) <= 50 * KB + 3 * KB
        for result in results:
            assert not result.resync_required
            got[result.conversation_id] += [m.seq for m in result.messages]
            if result.messages:
                cursors[result.conversation_id] = result.messages[-1].seq
            if not result.has_more:
                del cursors[result.conversation_id]
    assert all(seqs == list(range(1, 21)) for seqs in got.values())
    assert replies >= 4  # ~200 KB of messages through 50 KB replies


async def test_a_message_bigger_than_the_reply_budget_still_comes_alone(core: ImCore) -> None:
    alice = login(core, "alice")
    (conversation,) = await filled(core, alice, rooms=1, messages=3, size=60 * KB)
    (result,) = await core.sync(alice, [SyncCursor(conversation, 1, 0)])
    assert [m.seq for m in result.messages] == [1] and result.has_more
    messages, has_more, _ = await core.history(alice, conversation)
    assert [m.seq for m in messages] == [3] and has_more  # the newest first
    messages, has_more, _ = await core.history(alice, conversation, before_seq=2)
    assert [m.seq for m in messages] == [1] and not has_more


async def test_history_pages_backwards_within_the_byte_budget(core: ImCore) -> None:
    alice = login(core, "alice")
    (conversation,) = await filled(core, alice, rooms=1, messages=30, size=4 * KB)
    seen: list[int] = []
    before, has_more = 0, True
    while has_more:
        messages, has_more, _ = await core.history(alice, conversation, before, limit=1000)
        assert sum(len(m.body) for m in messages) <= 50 * KB + 5 * KB
        seen = [m.seq for m in messages] + seen
        before = messages[0].seq
    assert seen == list(range(1, 31))


async def test_one_sync_names_at_most_max_sync_cursors(core: ImCore) -> None:
    alice = login(core, "alice")
    (conversation,) = await filled(core, alice, rooms=1, messages=1, size=10)
    with pytest.raises(RpcError) as too_many:
        await core.sync(alice, [SyncCursor(conversation, 0, 0)] * 9)
    assert too_many.value.code is StatusCode.INVALID_ARGUMENT
    assert len(await core.sync(alice, [SyncCursor(conversation, 0, 0)] * 8)) == 8


async def test_acks_are_rate_limited_per_user(tmp_path: Path) -> None:
    limits = ImLimits(ack_rate_per_second=0.001, ack_burst=3)
    core = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()), limits=limits)
    await core.start()
    try:
        alice = login(core, "alice")
        conversation = (await core.open_direct(alice, "bob")).record.conversation_id
        await core.send(alice, conversation, "m", body(10))
        for _ in range(3):
            await core.ack(alice, conversation, 1, 1)
        with pytest.raises(RpcError) as limited:
            await core.ack(alice, conversation, 1, 1)
        assert limited.value.code is StatusCode.RESOURCE_EXHAUSTED
    finally:
        await core.close()
