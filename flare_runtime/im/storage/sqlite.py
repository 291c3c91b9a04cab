"""The embedded SQLite backend (the default): WAL mode, nothing to install.

All database work runs on one dedicated thread, never on the event loop.
Operations queue up while a transaction commits and the next transaction takes
them all at once (group commit): each operation runs inside its own savepoint,
so one failing operation does not undo the others, and every caller is
answered only after the COMMIT that made its write durable
(``synchronous=FULL``: the WAL is fsynced before COMMIT returns). Under load
one fsync acknowledges hundreds of sends.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from flare_runtime.im.storage.base import (
    AppendResult,
    ConversationExistsError,
    ConversationKind,
    ConversationRecord,
    Membership,
    NewMessage,
    Receipt,
    Role,
    Storage,
    StorageError,
    StoredMessage,
)
from flare_runtime.im.storage.crypto import KeyRing, row_associated_data

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS im_conversations (
    conversation_id TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    title TEXT NOT NULL,
    open INTEGER NOT NULL,
    member_limit INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS im_members (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role INTEGER NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS im_members_by_user ON im_members (user_id, conversation_id);
CREATE TABLE IF NOT EXISTS im_messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    sender_user_id TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS im_messages_dedup
    ON im_messages (conversation_id, sender_user_id, client_message_id);
CREATE INDEX IF NOT EXISTS im_messages_by_age ON im_messages (conversation_id, sent_at_ms);
"""

_CONVERSATION_COLUMNS = (
    "conversation_id, kind, title, open, member_limit, epoch, first_seq, last_seq, created_at_ms"
)
_MESSAGE_COLUMNS = (
    "conversation_id, seq, epoch, message_id, sender_user_id, sender_device_id, "
    "client_message_id, sent_at_ms, key_id, body"
)


def _conversation(row: Sequence[Any]) -> ConversationRecord:
    return ConversationRecord(
        conversation_id=row[0],
        kind=ConversationKind(row[1]),
        title=row[2],
        open=bool(row[3]),
        member_limit=row[4],
        epoch=row[5],
        first_seq=row[6],
        last_seq=row[7],
        created_at_ms=row[8],
    )


class _Job:
    __slots__ = ("function", "future")

    def __init__(
        self, function: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.function = function
        self.future = future


_Outcomes = list[tuple[asyncio.Future[Any], Any, BaseException | None]]


def _settle(outcomes: _Outcomes) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteStorage(Storage):
    """`Storage` in one SQLite file, worked by a dedicated thread with group commit.

    `path` may be ``":memory:"`` for a throwaway database. `max_batch` bounds
    how many queued operations share one transaction.
    """

    def __init__(self, path: str | Path, keyring: KeyRing, *, max_batch: int = 512) -> None:
        self._path = str(path)
        self._keyring = keyring
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def keyring(self) -> KeyRing:
        """The keys bodies are sealed and opened with."""
        return self._keyring

    def process_sharing_problem(self) -> str:
        """Never shareable (`flare_runtime.sharing`): one process owns the file's writer."""
        return (
            f"SqliteStorage ({self._path}): one SQLite file cannot be shared by worker "
            "processes; with several workers use PostgresStorage"
        )

    def set_keyring(self, keyring: KeyRing) -> None:
        """Use `keyring` from now on (rotation: it must still hold the old keys)."""
        self._keyring = keyring

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._work, args=(ready,), name="flare-im-sqlite", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except StorageError:
            self._thread = None
            raise

    async def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._jobs.put(None)
        # The thread finishes every queued job before it sees the sentinel.
        await asyncio.to_thread(thread.join)

    # -- the worker thread ---------------------------------------------------

    def _work(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every COMMIT, so an acknowledged send
            # survives a crash of the process and of the machine.
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
        except sqlite3.Error as error:
            failed: _Outcomes = [(ready, None, StorageError(f"cannot open {self._path}: {error}"))]
            loop.call_soon_threadsafe(_settle, failed)
            return
        opened: _Outcomes = [(ready, None, None)]
        loop.call_soon_threadsafe(_settle, opened)
        try:
            self._serve(connection, loop)
        finally:
            connection.close()

    def _serve(self, connection: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        stopping = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self._max_batch:
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    stopping = True
                    break
                batch.append(queued)
            outcomes = self._run_batch(connection, batch)
            try:
                loop.call_soon_threadsafe(_settle, outcomes)
            except RuntimeError:
                return  # the loop is closed: nobody is waiting any more

    def _run_batch(
        self, connection: sqlite3.Connection, batch: list[_Job]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for job in batch:
                connection.execute("SAVEPOINT job")
                try:
                    result = job.function(connection)
                except Exception as error:
                    connection.execute("ROLLBACK TO job")
                    connection.execute("RELEASE job")
                    if isinstance(error, sqlite3.Error):
                        error = StorageError(f"sqlite: {error}")
                    outcomes.append((job.future, None, error))
                else:
                    connection.execute("RELEASE job")
                    outcomes.append((job.future, result, None))
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            failure = StorageError(f"sqlite transaction failed: {error}")
            return [(job.future, None, failure) for job in batch]
        return outcomes

    def _submit(self, function: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._thread is None or self._loop is None:
            raise StorageError("storage is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(function, future))
        return future

    async def _run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(function)

    # -- Storage -------------------------------------------------------------

    def _message(self, row: Sequence[Any]) -> StoredMessage:
        conversation_id, seq, epoch = row[0], row[1], row[2]
        body = self._keyring.open(row[8], row[9], row_associated_data(conversation_id, epoch, seq))
        return StoredMessage(
            conversation_id=conversation_id,
            seq=seq,
            epoch=epoch,
            message_id=row[3],
            sender_user_id=row[4],
            sender_device_id=row[5],
            client_message_id=row[6],
            sent_at_ms=row[7],
            body=body,
        )

    @staticmethod
    def _get(connection: sqlite3.Connection, conversation_id: str) -> ConversationRecord | None:
        row = connection.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM im_conversations WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()
        return None if row is None else _conversation(row)

    @classmethod
    def _require(cls, connection: sqlite3.Connection, conversation_id: str) -> ConversationRecord:
        record = cls._get(connection, conversation_id)
        if record is None:
            raise StorageError(f"unknown conversation {conversation_id!r}")
        return record

    async def create_conversation(
        self, record: ConversationRecord, members: Mapping[str, Role]
    ) -> ConversationRecord:
        def create(connection: sqlite3.Connection) -> ConversationRecord:
            try:
                connection.execute(
                    f"INSERT INTO im_conversations ({_CONVERSATION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, 1, 1, 0, ?)",
                    (
                        record.conversation_id,
                        int(record.kind),
                        record.title,
                        int(record.open),
                        record.member_limit,
                        record.created_at_ms,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ConversationExistsError(
                    f"conversation {record.conversation_id!r} exists"
                ) from None
            connection.executemany(
                "INSERT INTO im_members (conversation_id, user_id, role) VALUES (?, ?, ?)",
                [(record.conversation_id, user, int(role)) for user, role in members.items()],
            )
            return self._require(connection, record.conversation_id)

        return await self._run(create)

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        return await self._run(lambda connection: self._get(connection, conversation_id))

    async def members(self, conversation_id: str) -> dict[str, Role]:
        def members(connection: sqlite3.Connection) -> dict[str, Role]:
            rows = connection.execute(
                "SELECT user_id, role FROM im_members WHERE conversation_id = ?",
                (conversation_id,),
            )
            return {user: Role(role) for user, role in rows}

        return await self._run(members)

    async def put_members(self, conversation_id: str, members: Mapping[str, Role]) -> None:
        def put(connection: sqlite3.Connection) -> None:
            self._require(connection, conversation_id)
            connection.executemany(
                "INSERT INTO im_members (conversation_id, user_id, role) VALUES (?, ?, ?) "
                "ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role",
                [(conversation_id, user, int(role)) for user, role in members.items()],
            )

        await self._run(put)

    async def remove_member(self, conversation_id: str, user_id: str) -> bool:
        def remove(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "DELETE FROM im_members WHERE conversation_id = ? AND user_id = ?",
                (conversation_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._run(remove)

    async def memberships(
        self, user_id: str, *, after: str = "", limit: int | None = None
    ) -> list[Membership]:
        columns = ", ".join(f"c.{name.strip()}" for name in _CONVERSATION_COLUMNS.split(","))

        def memberships(connection: sqlite3.Connection) -> list[Membership]:
            rows = connection.execute(
                f"SELECT {columns}, m.role, m.delivered_seq, m.read_seq "
                "FROM im_members m JOIN im_conversations c USING (conversation_id) "
                "WHERE m.user_id = ? AND m.conversation_id > ? "
                "ORDER BY m.conversation_id LIMIT ?",
                (user_id, after, -1 if limit is None else limit),
            )
            return [
                Membership(
                    conversation=_conversation(row),
                    role=Role(row[9]),
                    receipt=Receipt(row[0], user_id, row[10], row[11]),
                )
                for row in rows
            ]

        return await self._run(memberships)

    async def peers(self, user_id: str, user_ids: Sequence[str]) -> set[str]:
        wanted = json.dumps(list(user_ids))

        def peers(connection: sqlite3.Connection) -> set[str]:
            rows = connection.execute(
                "SELECT DISTINCT candidate.value FROM json_each(?) AS candidate "
                "JOIN im_members theirs ON theirs.user_id = candidate.value "
                "JOIN im_members mine ON mine.conversation_id = theirs.conversation_id "
                "AND mine.user_id = ?",
                (wanted, user_id),
            )
            return {user for (user,) in rows}

        return await self._run(peers)

    async def append(self, conversation_id: str, message: NewMessage) -> AppendResult:
        return await self.append_soon(conversation_id, message)

    def append_soon(
        self, conversation_id: str, message: NewMessage
    ) -> asyncio.Future[AppendResult]:
        """`append`'s future straight from the worker thread (no task)."""

        def append(connection: sqlite3.Connection) -> AppendResult:
            existing = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM im_messages "
                "WHERE conversation_id = ? AND sender_user_id = ? AND client_message_id = ?",
                (conversation_id, message.sender_user_id, message.client_message_id),
            ).fetchone()
            if existing is not None:
                return AppendResult(self._message(existing), duplicate=True)
            record = self._require(connection, conversation_id)
            seq = record.last_seq + 1
            # A log that had been trimmed empty restarts its retained range here.
            first_seq = record.first_seq if record.first_seq <= record.last_seq else seq
            connection.execute(
                "UPDATE im_conversations SET last_seq = ?, first_seq = ? WHERE conversation_id = ?",
                (seq, first_seq, conversation_id),
            )
            key_id, sealed = self._keyring.seal(
                message.body, row_associated_data(conversation_id, record.epoch, seq)
            )
            connection.execute(
                f"INSERT INTO im_messages ({_MESSAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    seq,
                    record.epoch,
                    message.message_id,
                    message.sender_user_id,
                    message.sender_device_id,
                    message.client_message_id,
                    message.sent_at_ms,
                    key_id,
                    sealed,
                ),
            )
            connection.execute(
                "UPDATE im_members SET delivered_seq = max(delivered_seq, ?), "
                "read_seq = max(read_seq, ?) WHERE conversation_id = ? AND user_id = ?",
                (seq, seq, conversation_id, message.sender_user_id),
            )
            return AppendResult(message.stored(conversation_id, seq, record.epoch), duplicate=False)

        return self._submit(append)

    def _read(self, rows: Iterable[Sequence[Any]], max_bytes: int | None) -> list[StoredMessage]:
        # Rows are stepped one at a time: a read cut short by `max_bytes` never
        # holds more than that (plus one message) in memory.
        messages = []
        read = 0
        for row in rows:
            message = self._message(row)
            messages.append(message)
            read += len(message.body)
            if max_bytes is not None and read >= max_bytes:
                break
        return messages

    async def read_after(
        self, conversation_id: str, after_seq: int, limit: int, *, max_bytes: int | None = None
    ) -> list[StoredMessage]:
        def read(connection: sqlite3.Connection) -> list[StoredMessage]:
            rows = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM im_messages "
                "WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (conversation_id, after_seq, limit),
            )
            return self._read(rows, max_bytes)

        return await self._run(read)

    async def read_before(
        self,
        conversation_id: str,
        before_seq: int | None,
        limit: int,
        *,
        max_bytes: int | None = None,
    ) -> list[StoredMessage]:
        bound = before_seq if before_seq is not None else 2**62

        def read(connection: sqlite3.Connection) -> list[StoredMessage]:
            rows = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM im_messages "
                "WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (conversation_id, bound, limit),
            )
            return self._read(rows, max_bytes)[::-1]

        return await self._run(read)

    async def update_receipt(
        self, conversation_id: str, user_id: str, delivered_seq: int, read_seq: int
    ) -> Receipt:
        def update(connection: sqlite3.Connection) -> Receipt:
            row = connection.execute(
                "UPDATE im_members SET read_seq = max(read_seq, ?), "
                "delivered_seq = max(delivered_seq, ?, ?) "
                "WHERE conversation_id = ? AND user_id = ? RETURNING delivered_seq, read_seq",
                (read_seq, delivered_seq, read_seq, conversation_id, user_id),
            ).fetchone()
            if row is None:
                raise StorageError(f"{user_id!r} is not a member of {conversation_id!r}")
            return Receipt(conversation_id, user_id, row[0], row[1])

        return await self._run(update)

    async def receipts(self, conversation_id: str, user_ids: Sequence[str]) -> dict[str, Receipt]:
        wanted = list(user_ids)

        def receipts(connection: sqlite3.Connection) -> dict[str, Receipt]:
            found = {user: Receipt(conversation_id, user) for user in wanted}
            rows = connection.execute(
                "SELECT user_id, delivered_seq, read_seq FROM im_members WHERE conversation_id = ?",
                (conversation_id,),
            )
            for user, delivered, read in rows:
                if user in found:
                    found[user] = Receipt(conversation_id, user, delivered, read)
            return found

        return await self._run(receipts)

    async def trim(
        self,
        conversation_id: str,
        *,
        keep_last: int | None = None,
        older_than_ms: int | None = None,
    ) -> ConversationRecord:
        def trim(connection: sqlite3.Connection) -> ConversationRecord:
            record = self._require(connection, conversation_id)
            if keep_last is not None:
                connection.execute(
                    "DELETE FROM im_messages WHERE conversation_id = ? AND seq <= ?",
                    (conversation_id, record.last_seq - keep_last),
                )
            if older_than_ms is not None:
                connection.execute(
                    "DELETE FROM im_messages WHERE conversation_id = ? AND sent_at_ms < ?",
                    (conversation_id, older_than_ms),
                )
            (oldest,) = connection.execute(
                "SELECT min(seq) FROM im_messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            first_seq = oldest if oldest is not None else record.last_seq + 1
            connection.execute(
                "UPDATE im_conversations SET first_seq = ? WHERE conversation_id = ?",
                (first_seq, conversation_id),
            )
            return self._require(connection, conversation_id)

        return await self._run(trim)

    async def reset_history(self, conversation_id: str) -> ConversationRecord:
        def reset(connection: sqlite3.Connection) -> ConversationRecord:
            self._require(connection, conversation_id)
            connection.execute(
                "DELETE FROM im_messages WHERE conversation_id = ?", (conversation_id,)
            )
            connection.execute(
                "UPDATE im_conversations SET epoch = epoch + 1, first_seq = 1, last_seq = 0 "
                "WHERE conversation_id = ?",
                (conversation_id,),
            )
            connection.execute(
                "UPDATE im_members SET delivered_seq = 0, read_seq = 0 WHERE conversation_id = ?",
                (conversation_id,),
            )
            return self._require(connection, conversation_id)

        return await self._run(reset)
