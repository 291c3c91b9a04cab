"""The PostgreSQL backend, through asyncpg: for several server processes or hosts.

Seq assignment takes the conversation's row lock (``SELECT ... FOR UPDATE``)
inside the append's transaction, so concurrent appends from any number of
processes get gap-free seqs: a transaction that fails rolls its increment back
before the next one sees the counter. Duplicate detection runs after the lock
is held, so two racing retries of one client message id store it once.

Tables live in their own PostgreSQL schema (``flare_im`` by default), which
lets tests and tenants share a database.

asyncpg is an extra (``pip install 'flare-rpc[postgres]'``), imported when a
`PostgresStorage` is made: the IM with SQLite never loads it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flare_runtime.errors import ConfigurationError
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
from flare_runtime.im.storage.crypto import SEAL_OVERHEAD, KeyRing, row_associated_data

if TYPE_CHECKING:
    from types import ModuleType

    import asyncpg


def _asyncpg() -> ModuleType:
    """The asyncpg module, or a `ConfigurationError` saying what to install."""
    try:
        return importlib.import_module("asyncpg")
    except ImportError:
        raise ConfigurationError(
            "PostgresStorage needs asyncpg: pip install 'flare-rpc[postgres]'"
        ) from None


_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.conversations (
    conversation_id TEXT PRIMARY KEY,
    kind SMALLINT NOT NULL,
    title TEXT NOT NULL,
    open BOOLEAN NOT NULL,
    member_limit INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.members (
    conversation_id TEXT NOT NULL REFERENCES {schema}.conversations ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    role SMALLINT NOT NULL,
    delivered_seq BIGINT NOT NULL DEFAULT 0,
    read_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS members_by_user ON {schema}.members (user_id, conversation_id);
CREATE TABLE IF NOT EXISTS {schema}.messages (
    conversation_id TEXT NOT NULL REFERENCES {schema}.conversations ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    sender_user_id TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    key_id INTEGER NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (conversation_id, sender_user_id, client_message_id)
);
CREATE INDEX IF NOT EXISTS messages_by_age ON {schema}.messages (conversation_id, sent_at_ms);
"""

_CONVERSATION_COLUMNS = (
    "conversation_id, kind, title, open, member_limit, epoch, first_seq, last_seq, created_at_ms"
)
_MESSAGE_COLUMNS = (
    "conversation_id, seq, epoch, message_id, sender_user_id, sender_device_id, "
    "client_message_id, sent_at_ms, key_id, body"
)


async def create_schema(connection: Any, ddl: str, schema: str, lock: int) -> None:
    """Run `ddl` (``CREATE ... IF NOT EXISTS`` statements) unless its objects all exist.

    The check comes first because even ``CREATE INDEX IF NOT EXISTS`` takes
    its table's SHARE lock: a process starting while others write would wait
    for their transactions, and could deadlock with them. Processes starting
    together are serialised by the advisory lock `lock`. Unqualified names
    (indexes) are in `schema`.
    """
    names = [
        name if "." in name else f"{schema}.{name}"
        for name in re.findall(r"(?:TABLE|INDEX) IF NOT EXISTS (\S+)", ddl)
    ]
    missing = await connection.fetchval(
        "SELECT count(*) FROM unnest($1::text[]) name WHERE to_regclass(name) IS NULL", names
    )
    if missing == 0:
        return
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", lock)
        await connection.execute(ddl)


async def _nothing_to_reset(connection: Any) -> None:
    """The pool's reset of a released connection: nothing beyond asyncpg's own rollback of an
    unfinished transaction.

    The storage (and the cluster registry sharing its pool) leaves no session
    state on a connection: no ``SET``, ``LISTEN``, cursor or session-level
    advisory lock (only ``pg_advisory_xact_lock``). asyncpg's default reset
    query (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL``) would cost a round trip to the database at every release: one per
    storage call (a login made three).
    """


def _conversation(row: Any) -> ConversationRecord:
    return ConversationRecord(
        conversation_id=row["conversation_id"],
        kind=ConversationKind(row["kind"]),
        title=row["title"],
        open=row["open"],
        member_limit=row["member_limit"],
        epoch=row["epoch"],
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        created_at_ms=row["created_at_ms"],
    )


class PostgresStorage(Storage):
    """`Storage` in PostgreSQL (asyncpg pool). `dsn` is a ``postgresql://`` URL."""

    shared = True

    def __init__(
        self,
        dsn: str,
        keyring: KeyRing,
        *,
        schema: str = "flare_im",
        min_connections: int = 1,
        max_connections: int = 8,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"schema name must be a plain lower-case identifier, got {schema!r}")
        self._dsn = dsn
        self._keyring = keyring
        self._schema = schema
        self._min = min_connections
        self._max = max_connections
        self._asyncpg = _asyncpg()
        self._pool: asyncpg.Pool | None = None

    @property
    def dsn(self) -> str:
        """The PostgreSQL URL this storage connects to."""
        return self._dsn

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this storage's tables."""
        return self._schema

    @property
    def keyring(self) -> KeyRing:
        """The keys bodies are sealed and opened with."""
        return self._keyring

    def set_keyring(self, keyring: KeyRing) -> None:
        """Use `keyring` from now on (rotation: it must still hold the old keys)."""
        self._keyring = keyring

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (the IM's cluster session registry shares it)."""
        if self._pool is None:
            raise StorageError("storage is not open")
        return self._pool

    async def connect(self, timeout: float) -> asyncpg.Connection:
        """A connection of its own, outside the pool (the caller closes it): for work that
        must not queue behind the pool's callers, like the cluster's lease renewal."""
        module = self._asyncpg
        try:
            connection: asyncpg.Connection = await module.connect(self._dsn, timeout=timeout)
        except (OSError, TimeoutError, module.PostgresError) as error:
            raise StorageError(f"cannot connect to PostgreSQL: {error}") from error
        return connection

    def _sql(self, text: str) -> str:
        return text.replace("{schema}", self._schema)

    async def open(self) -> None:
        if self._pool is not None:
            return
        asyncpg = self._asyncpg
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min,
                max_size=self._max,
                command_timeout=30,
                reset=_nothing_to_reset,
            )
        except (OSError, asyncpg.PostgresError) as error:
            raise StorageError(f"cannot connect to PostgreSQL: {error}") from error
        async with pool.acquire() as connection:
            await create_schema(connection, self._sql(_SCHEMA), self._schema, 7100)
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def drop_schema(self) -> None:
        """Drop every table of this storage (tests and tear-down only)."""
        async with self._connection() as connection:
            await connection.execute(self._sql("DROP SCHEMA IF EXISTS {schema} CASCADE"))

    def _connection(self) -> Any:
        if self._pool is None:
            raise StorageError("storage is not open")
        return self._pool.acquire()

    def _message(self, row: Any) -> StoredMessage:
        conversation_id, seq, epoch = row["conversation_id"], row["seq"], row["epoch"]
        body = self._keyring.open(
            row["key_id"], bytes(row["body"]), row_associated_data(conversation_id, epoch, seq)
        )
        return StoredMessage(
            conversation_id=conversation_id,
            seq=seq,
            epoch=epoch,
            message_id=row["message_id"],
            sender_user_id=row["sender_user_id"],
            sender_device_id=row["sender_device_id"],
            client_message_id=row["client_message_id"],
            sent_at_ms=row["sent_at_ms"],
            body=body,
        )

    async def _get(self, connection: Any, conversation_id: str, *, lock: bool = False) -> Any:
        suffix = " FOR UPDATE" if lock else ""
        return await connection.fetchrow(
            self._sql(
                f"SELECT {_CONVERSATION_COLUMNS} FROM {{schema}}.conversations "
                f"WHERE conversation_id = $1{suffix}"
            ),
            conversation_id,
        )

    async def _require(self, connection: Any, conversation_id: str, *, lock: bool = False) -> Any:
        row = await self._get(connection, conversation_id, lock=lock)
        if row is None:
            raise StorageError(f"unknown conversation {conversation_id!r}")
        return row

    async def create_conversation(
        self, record: ConversationRecord, members: Mapping[str, Role]
    ) -> ConversationRecord:
        async with self._connection() as connection, connection.transaction():
            try:
                await connection.execute(
                    self._sql(
                        f"INSERT INTO {{schema}}.conversations ({_CONVERSATION_COLUMNS}) "
                        "VALUES ($1, $2, $3, $4, $5, 1, 1, 0, $6)"
                    ),
                    record.conversation_id,
                    int(record.kind),
                    record.title,
                    record.open,
                    record.member_limit,
                    record.created_at_ms,
                )
            except self._asyncpg.UniqueViolationError:
                raise ConversationExistsError(
                    f"conversation {record.conversation_id!r} exists"
                ) from None
            await connection.executemany(
                self._sql(
                    "INSERT INTO {schema}.members (conversation_id, user_id, role) "
                    "VALUES ($1, $2, $3)"
                ),
                [(record.conversation_id, user, int(role)) for user, role in members.items()],
            )
            return _conversation(await self._require(connection, record.conversation_id))

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        async with self._connection() as connection:
            row = await self._get(connection, conversation_id)
        return None if row is None else _conversation(row)

    async def members(self, conversation_id: str) -> dict[str, Role]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                self._sql("SELECT user_id, role FROM {schema}.members WHERE conversation_id = $1"),
                conversation_id,
            )
        return {row["user_id"]: Role(row["role"]) for row in rows}

    async def put_members(self, conversation_id: str, members: Mapping[str, Role]) -> None:
        async with self._connection() as connection, connection.transaction():
            await self._require(connection, conversation_id)
            await connection.executemany(
                self._sql(
                    "INSERT INTO {schema}.members (conversation_id, user_id, role) "
                    "VALUES ($1, $2, $3) ON CONFLICT (conversation_id, user_id) "
                    "DO UPDATE SET role = excluded.role"
                ),
                [(conversation_id, user, int(role)) for user, role in members.items()],
            )

    async def remove_member(self, conversation_id: str, user_id: str) -> bool:
        async with self._connection() as connection:
            status = await connection.execute(
                self._sql(
                    "DELETE FROM {schema}.members WHERE conversation_id = $1 AND user_id = $2"
                ),
                conversation_id,
                user_id,
            )
        return bool(status != "DELETE 0")

    async def memberships(
        self, user_id: str, *, after: str = "", limit: int | None = None
    ) -> list[Membership]:
        columns = ", ".join(f"c.{name.strip()}" for name in _CONVERSATION_COLUMNS.split(","))
        async with self._connection() as connection:
            rows = await connection.fetch(
                self._sql(
                    f"SELECT {columns}, m.role, m.delivered_seq, m.read_seq "
                    "FROM {schema}.members m JOIN {schema}.conversations c "
                    "USING (conversation_id) WHERE m.user_id = $1 AND m.conversation_id > $2 "
                    "ORDER BY m.conversation_id LIMIT $3"
                ),
                user_id,
                after,
                limit,
            )
        return [
            Membership(
                conversation=_conversation(row),
                role=Role(row["role"]),
                receipt=Receipt(
                    row["conversation_id"], user_id, row["delivered_seq"], row["read_seq"]
                ),
            )
            for row in rows
        ]

    async def peers(self, user_id: str, user_ids: Sequence[str]) -> set[str]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                self._sql(
                    "SELECT DISTINCT theirs.user_id FROM {schema}.members theirs "
                    "JOIN {schema}.members mine ON mine.conversation_id = theirs.conversation_id "
                    "AND mine.user_id = $1 WHERE theirs.user_id = ANY($2::text[])"
                ),
                user_id,
                list(user_ids),
            )
        return {row["user_id"] for row in rows}

    async def _find_duplicate(
        self, connection: Any, conversation_id: str, message: NewMessage
    ) -> StoredMessage | None:
        row = await connection.fetchrow(
            self._sql(
                f"SELECT {_MESSAGE_COLUMNS} FROM {{schema}}.messages WHERE conversation_id = $1 "
                "AND sender_user_id = $2 AND client_message_id = $3"
            ),
            conversation_id,
            message.sender_user_id,
            message.client_message_id,
        )
        return None if row is None else self._message(row)

    async def append(self, conversation_id: str, message: NewMessage) -> AppendResult:
        async with self._connection() as connection:
            # Most sends are not retries: check without the lock first, then
            # again under it (a racing retry may have committed meanwhile).
            original = await self._find_duplicate(connection, conversation_id, message)
            if original is not None:
                return AppendResult(original, duplicate=True)
            async with connection.transaction():
                record = _conversation(await self._require(connection, conversation_id, lock=True))
                original = await self._find_duplicate(connection, conversation_id, message)
                if original is not None:
                    return AppendResult(original, duplicate=True)
                seq = record.last_seq + 1
                first_seq = record.first_seq if record.first_seq <= record.last_seq else seq
                key_id, sealed = self._keyring.seal(
                    message.body, row_associated_data(conversation_id, record.epoch, seq)
                )
                await connection.execute(
                    self._sql(
                        "UPDATE {schema}.conversations SET last_seq = $2, first_seq = $3 "
                        "WHERE conversation_id = $1"
                    ),
                    conversation_id,
                    seq,
                    first_seq,
                )
                await connection.execute(
                    self._sql(
                        f"INSERT INTO {{schema}}.messages ({_MESSAGE_COLUMNS}) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    ),
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
                )
                await connection.execute(
                    self._sql(
                        "UPDATE {schema}.members SET delivered_seq = GREATEST(delivered_seq, $3), "
                        "read_seq = GREATEST(read_seq, $3) "
                        "WHERE conversation_id = $1 AND user_id = $2"
                    ),
                    conversation_id,
                    message.sender_user_id,
                    seq,
                )
        return AppendResult(message.stored(conversation_id, seq, record.epoch), duplicate=False)

    async def _read(
        self, condition: str, order: str, arguments: tuple[Any, ...], max_bytes: int | None
    ) -> list[Any]:
        # With a byte bound, the server stops sending rows once the bodies
        # before a row reach `max_bytes` (a running sum of plaintext sizes in
        # the read's order), so the client never receives more than that plus
        # one message.
        if max_bytes is None:
            sql = (
                f"SELECT {_MESSAGE_COLUMNS} FROM {{schema}}.messages "
                f"WHERE conversation_id = $1 AND {condition} ORDER BY seq {order} LIMIT $3"
            )
        else:
            plaintext = f"(octet_length(body) - {SEAL_OVERHEAD})"
            sql = (
                f"SELECT {_MESSAGE_COLUMNS} FROM (SELECT {_MESSAGE_COLUMNS}, "
                f"sum({plaintext}) OVER (ORDER BY seq {order}) - {plaintext} "
                "AS before_bytes FROM {schema}.messages "
                f"WHERE conversation_id = $1 AND {condition} ORDER BY seq {order} LIMIT $3) page "
                f"WHERE before_bytes < $4 ORDER BY seq {order}"
            )
            arguments = (*arguments, max_bytes)
        async with self._connection() as connection:
            return list(await connection.fetch(self._sql(sql), *arguments))

    async def read_after(
        self, conversation_id: str, after_seq: int, limit: int, *, max_bytes: int | None = None
    ) -> list[StoredMessage]:
        rows = await self._read("seq > $2", "ASC", (conversation_id, after_seq, limit), max_bytes)
        return [self._message(row) for row in rows]

    async def read_before(
        self,
        conversation_id: str,
        before_seq: int | None,
        limit: int,
        *,
        max_bytes: int | None = None,
    ) -> list[StoredMessage]:
        bound = before_seq if before_seq is not None else 2**62
        rows = await self._read("seq < $2", "DESC", (conversation_id, bound, limit), max_bytes)
        return [self._message(row) for row in reversed(rows)]

    async def update_receipt(
        self, conversation_id: str, user_id: str, delivered_seq: int, read_seq: int
    ) -> Receipt:
        async with self._connection() as connection:
            row = await connection.fetchrow(
                self._sql(
                    "UPDATE {schema}.members SET read_seq = GREATEST(read_seq, $3), "
                    "delivered_seq = GREATEST(delivered_seq, $4, $3) "
                    "WHERE conversation_id = $1 AND user_id = $2 RETURNING delivered_seq, read_seq"
                ),
                conversation_id,
                user_id,
                read_seq,
                delivered_seq,
            )
        if row is None:
            raise StorageError(f"{user_id!r} is not a member of {conversation_id!r}")
        return Receipt(conversation_id, user_id, row["delivered_seq"], row["read_seq"])

    async def receipts(self, conversation_id: str, user_ids: Sequence[str]) -> dict[str, Receipt]:
        found = {user: Receipt(conversation_id, user) for user in user_ids}
        async with self._connection() as connection:
            rows = await connection.fetch(
                self._sql(
                    "SELECT user_id, delivered_seq, read_seq FROM {schema}.members "
                    "WHERE conversation_id = $1 AND user_id = ANY($2::text[])"
                ),
                conversation_id,
                list(found),
            )
        for row in rows:
            user = row["user_id"]
            found[user] = Receipt(conversation_id, user, row["delivered_seq"], row["read_seq"])
        return found

    async def trim(
        self,
        conversation_id: str,
        *,
        keep_last: int | None = None,
        older_than_ms: int | None = None,
    ) -> ConversationRecord:
        async with self._connection() as connection, connection.transaction():
            record = _conversation(await self._require(connection, conversation_id, lock=True))
            if keep_last is not None:
                await connection.execute(
                    self._sql(
                        "DELETE FROM {schema}.messages WHERE conversation_id = $1 AND seq <= $2"
                    ),
                    conversation_id,
                    record.last_seq - keep_last,
                )
            if older_than_ms is not None:
                await connection.execute(
                    self._sql(
                        "DELETE FROM {schema}.messages "
                        "WHERE conversation_id = $1 AND sent_at_ms < $2"
                    ),
                    conversation_id,
                    older_than_ms,
                )
            oldest = await connection.fetchval(
                self._sql("SELECT min(seq) FROM {schema}.messages WHERE conversation_id = $1"),
                conversation_id,
            )
            first_seq = oldest if oldest is not None else record.last_seq + 1
            row = await connection.fetchrow(
                self._sql(
                    "UPDATE {schema}.conversations SET first_seq = $2 WHERE conversation_id = $1 "
                    f"RETURNING {_CONVERSATION_COLUMNS}"
                ),
                conversation_id,
                first_seq,
            )
            return _conversation(row)

    async def reset_history(self, conversation_id: str) -> ConversationRecord:
        async with self._connection() as connection, connection.transaction():
            await self._require(connection, conversation_id, lock=True)
            await connection.execute(
                self._sql("DELETE FROM {schema}.messages WHERE conversation_id = $1"),
                conversation_id,
            )
            await connection.execute(
                self._sql(
                    "UPDATE {schema}.members SET delivered_seq = 0, read_seq = 0 "
                    "WHERE conversation_id = $1"
                ),
                conversation_id,
            )
            row = await connection.fetchrow(
                self._sql(
                    "UPDATE {schema}.conversations SET epoch = epoch + 1, first_seq = 1, "
                    f"last_seq = 0 WHERE conversation_id = $1 RETURNING {_CONVERSATION_COLUMNS}"
                ),
                conversation_id,
            )
            return _conversation(row)
