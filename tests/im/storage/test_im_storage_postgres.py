"""PostgreSQL-only: several storage instances (as several server processes) share one log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from flare_runtime.im.storage import (
    ConversationKind,
    ConversationRecord,
    KeyRing,
    NewMessage,
    Role,
    Storage,
)
from flare_runtime.im.storage.postgres import PostgresStorage


def new_message(client_id: str, sender: str = "alice") -> NewMessage:
    return NewMessage(f"m-{client_id}", sender, "d", client_id, 1, b"body " + client_id.encode())


async def test_two_instances_append_gap_free_and_deduplicate_across_each_other(
    postgres_opener: Callable[[KeyRing], Awaitable[Storage]],
) -> None:
    keyring = KeyRing.generate()
    first = await postgres_opener(keyring)
    assert isinstance(first, PostgresStorage)
    second = PostgresStorage(first.dsn, keyring, schema=first.schema, max_connections=4)
    await second.open()
    try:
        record = ConversationRecord("shared", ConversationKind.ROOM, "", True, 10, 0, 0, 0, 1)
        await first.create_conversation(record, {"alice": Role.OWNER})
        results = await asyncio.gather(
            *(
                (first if index % 2 else second).append("shared", new_message(f"c{index}"))
                for index in range(60)
            ),
            # Retries of the same ids through the other instance, racing the originals.
            *(
                (second if index % 2 else first).append("shared", new_message(f"c{index}"))
                for index in range(0, 60, 6)
            ),
        )
        originals = [r for r in results if not r.duplicate]
        assert sorted(r.message.seq for r in originals) == list(range(1, 61))
        assert len(results) - len(originals) == 10
        stored = await second.read_after("shared", 0, 100)
        assert [m.seq for m in stored] == list(range(1, 61))
        assert {m.client_message_id for m in stored} == {f"c{index}" for index in range(60)}
    finally:
        await second.close()
        await first.drop_schema()
        await first.close()


async def test_opening_beside_a_writer_does_not_wait_for_its_transaction(
    postgres_opener: Callable[[KeyRing], Awaitable[Storage]],
) -> None:
    """A process starting (open) while another one's append transaction is open: the
    schema exists, so open takes no table lock and returns at once (CREATE INDEX IF
    NOT EXISTS would wait for the writer's lock and can deadlock)."""
    keyring = KeyRing.generate()
    first = await postgres_opener(keyring)
    assert isinstance(first, PostgresStorage)
    record = ConversationRecord("busy", ConversationKind.ROOM, "", True, 10, 0, 0, 0, 1)
    await first.create_conversation(record, {"alice": Role.OWNER})
    second = PostgresStorage(first.dsn, keyring, schema=first.schema, max_connections=2)
    try:
        async with first.pool.acquire() as writer, writer.transaction():
            await writer.execute(
                f"UPDATE {first.schema}.members SET read_seq = 1 WHERE conversation_id = 'busy'"
            )
            await writer.execute(
                f"DELETE FROM {first.schema}.messages WHERE conversation_id = 'busy'"
            )
            await asyncio.wait_for(second.open(), 3.0)
    finally:
        await second.close()
        await first.drop_schema()
        await first.close()


def test_without_asyncpg_the_im_imports_and_postgres_storage_says_what_to_install() -> None:
    """asyncpg is the ``[postgres]`` extra: the IM (on SQLite) imports without it, and a
    `PostgresStorage` made without it is one `ConfigurationError` naming the extra."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['asyncpg'] = None  # as if not installed\n"
        "import flare_runtime.im.core, flare_runtime.im.service\n"
        "from flare_runtime.errors import ConfigurationError\n"
        "from flare_runtime.im.storage import KeyRing\n"
        "from flare_runtime.im.storage.postgres import PostgresStorage\n"
        "try:\n"
        "    PostgresStorage('postgresql://localhost/db', KeyRing.generate())\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "PostgresStorage needs asyncpg: pip install 'flare-rpc[postgres]'\n"
