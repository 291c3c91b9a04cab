"""Fixtures of the IM cluster tests: cores of one cluster on a shared PostgreSQL schema.

PostgreSQL from `.ci/services.d/40-postgresql.sh`, Redis from
`.ci/services.d/70-redis.sh`; without them the cases skip loudly, unless
``FLARE_REQUIRE_SERVICES=1`` (``make test``): then they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.testing.cluster import REDIS_URL, redis_ping
from flare_runtime.testing.im_cluster import POSTGRES_DSN, ImNodes, ProcessRig


def skip_or_fail(reason: str) -> None:
    if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip("SKIPPED LOUDLY: " + reason)


async def require_postgres() -> None:
    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        skip_or_fail(f"PostgreSQL is not reachable at {POSTGRES_DSN} ({error})")
    else:
        await connection.close()


async def require_redis() -> None:
    problem = await redis_ping(REDIS_URL)
    if problem is not None:
        skip_or_fail(f"Redis is not reachable at {REDIS_URL} ({problem})")


@pytest.fixture
async def storage() -> AsyncIterator[PostgresStorage]:
    """An open PostgresStorage in a fresh schema (dropped afterwards)."""
    await require_postgres()
    opened = ImNodes(POSTGRES_DSN).storage()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.drop_schema()
        await opened.close()


@pytest.fixture
async def nodes() -> AsyncIterator[ImNodes]:
    """Cores on one in-process bus and a shared PostgreSQL schema."""
    await require_postgres()
    rig = ImNodes(POSTGRES_DSN, "memory")
    try:
        yield rig
    finally:
        await rig.close()


@contextlib.asynccontextmanager
async def process_rig(directory: Path, workers: int) -> AsyncIterator[ProcessRig]:
    """Three IM nodes of `workers` processes each, on a Redis of the test's own."""
    await require_postgres()
    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server is not installed; run `bash .ci/services.d/70-redis.sh`")
    running = await ProcessRig.start(directory, workers=workers)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ProcessRig]:
    """Three IM node processes on a Redis of the test's own and a shared schema."""
    async with process_rig(tmp_path, 1) as running:
        yield running


@pytest.fixture
async def worker_rig(tmp_path: Path) -> AsyncIterator[ProcessRig]:
    """Three IM nodes of two workers each (``flare serve --workers 2``): six cluster nodes."""
    async with process_rig(tmp_path, 2) as running:
        yield running


@pytest.fixture
async def redis_nodes() -> AsyncIterator[ImNodes]:
    """Cores on the shared Redis (a namespace of their own) and a shared schema."""
    await require_postgres()
    await require_redis()
    rig = ImNodes(POSTGRES_DSN, "redis", REDIS_URL)
    try:
        yield rig
    finally:
        await rig.close()
