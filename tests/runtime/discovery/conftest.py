"""Fixtures of the discovery tests: etcd (shared, or a test's own), server processes.

The shared etcd comes from `.ci/services.d/80-etcd.sh` (127.0.0.1:52379, or
``FLARE_ETCD``); each test uses its own key prefix on it. Tests that kill and
restart etcd start their own (`own_etcd`). Without etcd the cases skip with a
loud reason, unless ``FLARE_REQUIRE_SERVICES=1`` (set by ``make test``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_runtime.discovery.etcd import EtcdRegistry
from flare_runtime.testing.discovery import EtcdProcess, etcd_answers

ETCD = os.environ.get("FLARE_ETCD", "127.0.0.1:52379")


def skip_or_fail(reason: str) -> None:
    """Skip loudly, or fail under FLARE_REQUIRE_SERVICES=1."""
    if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip("SKIPPED LOUDLY: " + reason)


@pytest.fixture
async def etcd() -> str:
    """The shared etcd's ``host:port``."""
    host, _, port = ETCD.rpartition(":")
    if host != "127.0.0.1" or not await etcd_answers(int(port)):
        skip_or_fail(f"etcd is not reachable at {ETCD}; run `bash .ci/services.d/80-etcd.sh`")
    return ETCD


@pytest.fixture
async def etcd_registry(etcd: str) -> AsyncIterator[EtcdRegistry]:
    """A registry on the shared etcd, under a prefix of the test's own."""
    registry = EtcdRegistry(etcd, prefix=f"/flare-test/{uuid.uuid4().hex}/", timeout=2.0)
    try:
        yield registry
    finally:
        await registry.close()


@pytest.fixture
async def own_etcd(tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    """An etcd of the test's own, on free ports (it may stop and restart it)."""
    if EtcdProcess.binary() is None:
        skip_or_fail("etcd is not installed; run `bash .ci/services.d/80-etcd.sh`")
    process = EtcdProcess(str(tmp_path / "etcd"))
    await process.start()
    try:
        yield process
    finally:
        await process.close()
