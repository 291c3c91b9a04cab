"""The `Storage` contract, run against every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from flare_runtime.im.storage import (
    ConversationExistsError,
    ConversationKind,
    ConversationRecord,
    KeyRing,
    NewMessage,
    Role,
    Storage,
    StorageError,
)
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.im.storage.sqlite import SqliteStorage


def room(conversation_id: str = "room-1", *, member_limit: int = 100) -> ConversationRecord:
    return ConversationRecord(
        conversation_id=conversation_id,
        kind=ConversationKind.ROOM,
        title="Room",
        open=True,
        member_limit=member_limit,
        epoch=0,
        first_seq=0,
        last_seq=0,
        created_at_ms=1_000,
    )


def message(
    client_id: str, body: bytes = b"hello", *, sender: str = "alice", at: int = 5_000
) -> NewMessage:
    return NewMessage(
        message_id=f"m-{sender}-{client_id}",
        sender_user_id=sender,
        sender_device_id="phone",
        client_message_id=client_id,
        sent_at_ms=at,
        body=body,
    )


async def test_conversation_and_members_round_trip(storage: Storage) -> None:
    created = await storage.create_conversation(room(), {"alice": Role.OWNER, "bob": Role.MEMBER})
    assert (created.epoch, created.first_seq, created.last_seq) == (1, 1, 0)
    assert created.kind is ConversationKind.ROOM and created.open
    assert await storage.get_conversation("room-1") == created
    assert await storage.get_conversation("nope") is None
    assert await storage.members("room-1") == {"alice": Role.OWNER, "bob": Role.MEMBER}

    await storage.put_members("room-1", {"bob": Role.ADMIN, "carol": Role.MEMBER})
    assert await storage.members("room-1") == {
        "alice": Role.OWNER,
        "bob": Role.ADMIN,
        "carol": Role.MEMBER,
    }
    assert await storage.remove_member("room-1", "carol")
    assert not await storage.remove_member("room-1", "carol")
    with pytest.raises(ConversationExistsError):
        await storage.create_conversation(room(), {"zed": Role.OWNER})
    with pytest.raises(StorageError):
        await storage.put_members("nope", {"bob": Role.MEMBER})

    await storage.create_conversation(room("room-0"), {"bob": Role.OWNER})
    memberships = await storage.memberships("bob")
    assert [(m.conversation.conversation_id, m.role) for m in memberships] == [
        ("room-0", Role.OWNER),
        ("room-1", Role.ADMIN),
    ]


async def test_concurrent_appends_get_gap_free_seqs(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER})
    results = await asyncio.gather(
        *(storage.append("room-1", message(f"c{i}", f"body {i}".encode())) for i in range(50))
    )
    assert sorted(result.message.seq for result in results) == list(range(1, 51))
    assert not any(result.duplicate for result in results)
    stored = await storage.read_after("room-1", 0, 100)
    assert [m.seq for m in stored] == list(range(1, 51))
    by_client_id = {m.client_message_id: m.body for m in stored}
    assert by_client_id["c7"] == b"body 7"
    record = await storage.get_conversation("room-1")
    assert record is not None and record.last_seq == 50


async def test_append_is_idempotent_on_client_message_id(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER, "bob": Role.MEMBER})
    first = await storage.append("room-1", message("same"))
    retries = await asyncio.gather(*(storage.append("room-1", message("same")) for _ in range(5)))
    assert all(retry.duplicate and retry.message == first.message for retry in retries)
    # The same client id from another sender is another message.
    other = await storage.append("room-1", message("same", sender="bob"))
    assert not other.duplicate and other.message.seq == 2
    assert len(await storage.read_after("room-1", 0, 10)) == 2
    # Each sender has read its own message; the other has not.
    receipts = await storage.receipts("room-1", ["alice", "bob"])
    assert (receipts["alice"].read_seq, receipts["bob"].read_seq) == (1, 2)


async def test_append_to_unknown_conversation_fails(storage: Storage) -> None:
    with pytest.raises(StorageError):
        await storage.append("nope", message("x"))


async def test_paging_forward_and_backward(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER})
    for i in range(25):
        await storage.append("room-1", message(f"c{i}"))
    assert [m.seq for m in await storage.read_after("room-1", 10, 5)] == [11, 12, 13, 14, 15]
    assert [m.seq for m in await storage.read_after("room-1", 25, 5)] == []
    assert [m.seq for m in await storage.read_before("room-1", None, 3)] == [23, 24, 25]
    assert [m.seq for m in await storage.read_before("room-1", 5, 10)] == [1, 2, 3, 4]


async def test_receipts_only_move_forward(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER, "bob": Role.MEMBER})
    receipt = await storage.update_receipt("room-1", "bob", 5, 0)
    assert (receipt.delivered_seq, receipt.read_seq) == (5, 0)
    receipt = await storage.update_receipt("room-1", "bob", 3, 2)
    assert (receipt.delivered_seq, receipt.read_seq) == (5, 2)
    # Reading implies delivery.
    receipt = await storage.update_receipt("room-1", "bob", 0, 9)
    assert (receipt.delivered_seq, receipt.read_seq) == (9, 9)
    receipts = await storage.receipts("room-1", ["alice", "bob", "stranger"])
    assert (
        receipts["bob"].read_seq,
        receipts["alice"].read_seq,
        receipts["stranger"].read_seq,
    ) == (9, 0, 0)
    with pytest.raises(StorageError):
        await storage.update_receipt("room-1", "stranger", 1, 1)


async def test_trim_by_count_and_age_then_append_continues(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER})
    for i in range(10):
        await storage.append("room-1", message(f"c{i}", at=1_000 + i))
    record = await storage.trim("room-1", keep_last=6)
    assert (record.first_seq, record.last_seq) == (5, 10)
    record = await storage.trim("room-1", older_than_ms=1_007)
    assert (record.first_seq, record.last_seq) == (8, 10)
    assert [m.seq for m in await storage.read_after("room-1", 0, 100)] == [8, 9, 10]
    record = await storage.trim("room-1", keep_last=0)
    assert (record.first_seq, record.last_seq) == (11, 10)
    appended = await storage.append("room-1", message("after"))
    assert appended.message.seq == 11
    reread = await storage.get_conversation("room-1")
    assert reread is not None and (reread.first_seq, reread.last_seq) == (11, 11)


async def test_reset_history_starts_a_new_epoch(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER})
    for i in range(3):
        await storage.append("room-1", message(f"c{i}"))
    await storage.update_receipt("room-1", "alice", 3, 3)
    record = await storage.reset_history("room-1")
    assert (record.epoch, record.first_seq, record.last_seq) == (2, 1, 0)
    receipts = await storage.receipts("room-1", ["alice"])
    assert receipts["alice"].read_seq == 0
    appended = await storage.append("room-1", message("new"))
    assert (appended.message.epoch, appended.message.seq) == (2, 1)


async def test_key_rotation_keeps_old_messages_readable(storage: Storage, keyring: KeyRing) -> None:
    assert isinstance(storage, SqliteStorage | PostgresStorage)
    await storage.create_conversation(room(), {"alice": Role.OWNER})
    await storage.append("room-1", message("old", b"sealed with key one"))
    storage.set_keyring(keyring.rotated(2))
    await storage.append("room-1", message("new", b"sealed with key two"))
    bodies = [m.body for m in await storage.read_after("room-1", 0, 10)]
    assert bodies == [b"sealed with key one", b"sealed with key two"]
    # A ring that lost key 1 cannot open the old row: a typed error, not garbage.
    storage.set_keyring(KeyRing.generate(key_id=3))
    with pytest.raises(StorageError, match="unknown key id 1"):
        await storage.read_after("room-1", 0, 10)


async def test_reads_stop_at_max_bytes_and_return_at_least_one_message(storage: Storage) -> None:
    await storage.create_conversation(room(), {"alice": Role.OWNER})
    for index in range(10):
        await storage.append("room-1", message(f"c{index}", bytes(100)))
    after = await storage.read_after("room-1", 0, 100, max_bytes=250)
    assert [m.seq for m in after] == [1, 2, 3]  # the third brings the bodies to 300 >= 250
    before = await storage.read_before("room-1", None, 100, max_bytes=250)
    assert [m.seq for m in before] == [8, 9, 10]  # counted from the newest
    assert [m.seq for m in await storage.read_after("room-1", 4, 100, max_bytes=1)] == [5]
    assert [m.seq for m in await storage.read_before("room-1", 3, 100, max_bytes=1)] == [2]
    assert len(await storage.read_after("room-1", 0, 4, max_bytes=10_000)) == 4


async def test_memberships_page_by_conversation_id(storage: Storage) -> None:
    for index in range(5):
        await storage.create_conversation(room(f"room-{index}"), {"bob": Role.MEMBER})
    first = await storage.memberships("bob", limit=2)
    rest = await storage.memberships("bob", after=first[-1].conversation.conversation_id)
    assert [m.conversation.conversation_id for m in first + rest] == [
        f"room-{index}" for index in range(5)
    ]


async def test_peers_are_the_users_sharing_a_conversation(storage: Storage) -> None:
    await storage.create_conversation(room("room-a"), {"alice": Role.OWNER, "bob": Role.MEMBER})
    await storage.create_conversation(room("room-b"), {"carol": Role.OWNER, "dave": Role.MEMBER})
    await storage.create_conversation(room("room-c"), {"alice": Role.OWNER, "erin": Role.MEMBER})
    candidates = ["bob", "carol", "erin", "nobody"]
    assert await storage.peers("alice", candidates) == {"bob", "erin"}
    assert await storage.peers("nobody", candidates) == set()
    # The generic walk over memberships (what a backend without a query of its own gets).
    assert await Storage.peers(storage, "alice", candidates) == {"bob", "erin"}
