"""Fixtures of the IM tests: a `Storage` of each backend.

PostgreSQL comes from `.ci/services.d/40-postgresql.sh` (127.0.0.1:55432, or
``FLARE_IM_POSTGRES_DSN``). Without it the PostgreSQL cases skip with a loud
reason, unless ``FLARE_REQUIRE_SERVICES=1`` (set by ``make test``): then they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from flare_runtime.im.storage import KeyRing, SqliteStorage, Storage

POSTGRES_DSN = os.environ.get(
    "FLARE_IM_POSTGRES_DSN", "postgresql://flare:flare@127.0.0.1:55432/flare_test"
)


async def open_postgres(keyring: KeyRing) -> Storage:
    """A PostgresStorage in a fresh schema, or skip/fail when PostgreSQL is missing."""
    from flare_runtime.im.storage.base import StorageError
    from flare_runtime.im.storage.postgres import PostgresStorage

    storage = PostgresStorage(
        POSTGRES_DSN, keyring, schema=f"im_test_{secrets.token_hex(6)}", max_connections=4
    )
    try:
        await storage.open()
    except StorageError as error:
        reason = (
            f"PostgreSQL is not reachable at {POSTGRES_DSN} ({error}); "
            "run `bash .ci/services.d/40-postgresql.sh`"
        )
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip("SKIPPED LOUDLY: " + reason)
    return storage


@pytest.fixture
def postgres_opener() -> Callable[[KeyRing], Awaitable[Storage]]:
    """`open_postgres`, for tests that need several PostgreSQL storages."""
    return open_postgres


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, keyring: KeyRing
) -> AsyncIterator[Storage]:
    """An open, empty storage of each backend; dropped afterwards."""
    if request.param == "sqlite":
        sqlite = SqliteStorage(tmp_path / "im.db", keyring)
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    from flare_runtime.im.storage.postgres import PostgresStorage

    postgres = await open_postgres(keyring)
    assert isinstance(postgres, PostgresStorage)
    try:
        yield postgres
    finally:
        await postgres.drop_schema()
        await postgres.close()
