"""Fixtures of the cluster tests: nodes on each backend, and a Redis of a test's own.

The shared Redis comes from `.ci/services.d/70-redis.sh` (127.0.0.1:56379, or
``FLARE_REDIS_URL``); each test uses its own channel namespace on it. Tests
that kill and restart Redis start their own ``redis-server`` on a free port
(`own_redis`). Without Redis the cases skip with a loud reason, unless
``FLARE_REQUIRE_SERVICES=1`` (set by ``make test``): then they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_runtime.testing.cluster import REDIS_URL, Cluster, RedisProcess, redis_ping


def skip_or_fail(reason: str) -> None:
    """Skip loudly, or fail under FLARE_REQUIRE_SERVICES=1."""
    if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip("SKIPPED LOUDLY: " + reason)


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Nodes on one in-process bus, or on the shared Redis (a namespace per test)."""
    if request.param == "redis":
        problem = await redis_ping(REDIS_URL)
        if problem is not None:
            skip_or_fail(
                f"Redis is not reachable at {REDIS_URL} ({problem}); "
                "run `bash .ci/services.d/70-redis.sh`"
            )
    rig = Cluster(request.param)
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
async def redis_cluster() -> AsyncIterator[Cluster]:
    """Nodes on the shared Redis (tests of Redis-only behaviour that do not restart it)."""
    problem = await redis_ping(REDIS_URL)
    if problem is not None:
        skip_or_fail(f"Redis is not reachable at {REDIS_URL} ({problem})")
    rig = Cluster("redis")
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A started redis-server only this test uses; killed at the end."""
    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server is not installed; run `bash .ci/services.d/70-redis.sh`")
    server = RedisProcess(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.kill()
