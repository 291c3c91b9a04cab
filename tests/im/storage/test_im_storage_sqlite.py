"""SQLite-only guarantees: durability across reopen, encryption visible in the raw file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flare_runtime.im.storage import (
    ConversationKind,
    ConversationRecord,
    KeyRing,
    NewMessage,
    Role,
    SqliteStorage,
    StorageError,
)

SECRET = b"the eagle lands at midnight"


def record() -> ConversationRecord:
    return ConversationRecord("dm:a:b", ConversationKind.DIRECT, "", False, 2, 0, 0, 0, 1)


def new_message(client_id: str, body: bytes) -> NewMessage:
    return NewMessage(f"m-{client_id}", "a", "laptop", client_id, 10, body)


async def test_acknowledged_appends_survive_reopen_and_raw_file_holds_no_plaintext(
    tmp_path: Path,
) -> None:
    path = tmp_path / "im.db"
    keyring = KeyRing.generate()
    storage = SqliteStorage(path, keyring)
    await storage.open()
    await storage.create_conversation(record(), {"a": Role.OWNER, "b": Role.OWNER})
    results = await asyncio.gather(
        *(storage.append("dm:a:b", new_message(f"c{i}", SECRET + b" %d" % i)) for i in range(200))
    )
    assert sorted(r.message.seq for r in results) == list(range(1, 201))
    await storage.close()

    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("im.db"))
    assert b"the eagle" not in raw
    assert b"laptop" in raw  # metadata is stored in clear; only bodies are sealed

    reopened = SqliteStorage(path, keyring)
    await reopened.open()
    stored = await reopened.read_after("dm:a:b", 0, 1000)
    assert [m.seq for m in stored] == list(range(1, 201))
    assert stored[41].body == SECRET + b" 41"
    await reopened.close()


async def test_tampered_body_is_a_storage_error(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "im.db"
    storage = SqliteStorage(path, KeyRing.generate())
    await storage.open()
    await storage.create_conversation(record(), {"a": Role.OWNER})
    await storage.append("dm:a:b", new_message("one", b"first"))
    await storage.append("dm:a:b", new_message("two", b"second"))
    await storage.close()

    # Move row 2's sealed body onto row 1: the associated data (seq) no longer matches.
    connection = sqlite3.connect(path)
    connection.execute(
        "UPDATE im_messages SET body = (SELECT body FROM im_messages WHERE seq = 2) WHERE seq = 1"
    )
    connection.commit()
    connection.close()
    await storage.open()
    with pytest.raises(StorageError, match="failed authentication"):
        await storage.read_after("dm:a:b", 0, 10)
    assert [m.body for m in await storage.read_after("dm:a:b", 1, 10)] == [b"second"]
    await storage.close()


async def test_operations_before_open_fail_cleanly(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "im.db", KeyRing.generate())
    with pytest.raises(StorageError, match="not open"):
        await storage.get_conversation("x")


async def test_unwritable_path_is_a_storage_error(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "missing-dir" / "im.db", KeyRing.generate())
    with pytest.raises(StorageError, match="cannot open"):
        await storage.open()
