"""`ImService` forgets a session once it has ended, whoever ended it.

gRPC sessions live in the service's table of detached sessions (named by the
``flare-im-session`` header); a session the core ends (kicked, replaced, cut
off as a slow consumer) must not stay in it. On a WebSocket/QUIC connection,
logging in again must not pile up per-connection state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import im_pb2
from flare.im.v1.im_flare import ImServiceClient, ImServiceRoutes

from flare_runtime.auth import Principal, TokenAuth
from flare_runtime.context import CallContext
from flare_runtime.im import service as service_module
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.routing import Transport
from flare_runtime.server import Server
from flare_runtime.testing.memory import memory_pair


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[ImCore]:
    # Logging in again and again is what these tests do: no login rate limit here.
    limits = ImLimits(login_burst=1_000)
    started = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()), limits=limits)
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


async def test_logging_in_again_on_one_connection_holds_one_close_callback(core: ImCore) -> None:
    """Logins on one connection share one close callback: per-connection state stays bounded."""
    server = Server(
        [ImService(core)],
        auth=TokenAuth({"token-alice": Principal("alice")}),
        push_tables=[ImService.PUSH_TYPES],
    )
    channel, endpoint, _ = memory_pair(server, metadata={"authorization": "Bearer token-alice"})
    client = ImServiceClient(channel)
    try:
        for attempt in range(20):
            await client.login(im_pb2.LoginRequest(device_id=f"d{attempt % 2}"), timeout=10)
        # Every earlier session was logged out; the connection keeps one hook.
        assert [s.device_id for s in core.sessions_of("alice")] == ["d1"]
        assert len(endpoint._close_callbacks) == 1
        await client.logout(im_pb2.LogoutRequest(), timeout=10)
        await client.login(im_pb2.LoginRequest(device_id="d0"), timeout=10)
        assert len(endpoint._close_callbacks) == 1
    finally:
        await channel.close()
    await endpoint.wait_closed()
    assert core.sessions_of("alice") == []


async def test_a_second_subscribe_ends_the_first_and_pushes_resume_after_it(core: ImCore) -> None:
    """The superseded stream ends at once and never becomes the session's sink again, so
    events cannot pile up unread on it."""
    service = ImService(core)
    server = Server([service], push_tables=[ImService.PUSH_TYPES])
    channel, endpoint, _ = memory_pair(server)
    try:
        context = CallContext(
            route=ImServiceRoutes.SUBSCRIBE,
            transport=Transport.WEBSOCKET,
            principal=Principal("alice"),
            connection=endpoint,
        )
        await service.login(im_pb2.LoginRequest(device_id="laptop"), context)
        (session,) = core.sessions_of("alice")
        pushes = session.sink
        first = service.subscribe(im_pb2.SubscribeRequest(), context)
        first_next = asyncio.ensure_future(anext(first))
        await asyncio.sleep(0)
        second = service.subscribe(im_pb2.SubscribeRequest(), context)
        second_next = asyncio.ensure_future(anext(second))
        await asyncio.sleep(0)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(first_next, 5)
        second_next.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second_next
        assert session.sink is pushes
    finally:
        await channel.close()
