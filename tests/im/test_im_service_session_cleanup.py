"""`ImService` forgets a session once it has ended, whoever ended it.

gRPC sessions live in the service's table of detached sessions (named by the
``flare-im-session`` header); a session the core ends (kicked, replaced, cut
off as a slow consumer) must not stay in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import im_pb2
from flare.im.v1.im_flare import ImServiceRoutes

from flare_runtime.context import CallContext, Principal
from flare_runtime.im import service as service_module
from flare_runtime.im.core import ImCore
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.routing import Transport


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[ImCore]:
    started = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()))
    await started.start()
    yield started
    await started.close()


def grpc_context() -> CallContext:
    return CallContext(
        route=ImServiceRoutes.LOGIN,
        transport=Transport.GRPC,
        principal=Principal("alice"),
    )


async def test_a_kicked_grpc_session_is_forgotten_when_its_subscribe_wait_ends(
    core: ImCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "DETACHED_SUBSCRIBE_TIMEOUT", 0.05)
    service = ImService(core)
    reply = await service.login(im_pb2.LoginRequest(device_id="laptop"), grpc_context())
    (session,) = core.sessions_of("alice")
    assert session.session_id == reply.session_id
    core.kick_session(session)
    await asyncio.sleep(0.2)
    assert service._detached == {}


async def test_a_grpc_session_that_never_subscribes_is_forgotten(
    core: ImCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "DETACHED_SUBSCRIBE_TIMEOUT", 0.05)
    service = ImService(core)
    await service.login(im_pb2.LoginRequest(device_id="laptop"), grpc_context())
    await asyncio.sleep(0.2)
    assert service._detached == {}
    assert core.sessions_of("alice") == []
