"""`flare_runtime.asgi`: Flare mounted in Starlette and FastAPI apps under a real uvicorn.

The whole conformance suite runs over the mount in
tests/runtime/transports/test_asgi_conformance.py and hostile upgrades and
clients in tests/hostile/test_asgi_port.py; this module covers what is the
mount's own: sharing a port with HTTP routes, the middleware form, the upgrade's
credentials and metadata, the lifespan, and the drain of ``uvicorn app:app`` on
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import BytesValue, StringValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from flare_runtime import ConnectionClosedError, RpcError, StatusCode, connect
from flare_runtime.asgi import FlareASGI
from flare_runtime.auth import issue_jwt
from flare_runtime.errors import ConfigurationError
from flare_runtime.server import Server
from flare_runtime.testing.asgi_harness import UvicornProcess, UvicornServer
from flare_runtime.testing.harness import JWT_KEY
from flare_runtime.testing.service import SERVICE, ConformanceService, Routes
from flare_runtime.testing.timing import UNIT, wait_until
from tests.runtime.asgi_app import build_app

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10 * UNIT


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a fresh connection: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
async def fastapi_app() -> AsyncIterator[tuple[int, Server, ConformanceService]]:
    app, server, service = build_app(grace=TIMEOUT)
    running = UvicornServer(app)
    port = await running.start()
    try:
        yield port, server, service
    finally:
        await running.stop()


async def test_fastapi_serves_its_http_routes_and_flare_on_one_port(
    fastapi_app: tuple[int, Server, ConformanceService],
) -> None:
    port, server, _ = fastapi_app
    token = issue_jwt(JWT_KEY, "bob")
    async with connect(f"ws://127.0.0.1:{port}/flare", token=token) as channel:
        reply = await channel.unary_unary(Routes.WHO_AM_I, StringValue(), timeout=TIMEOUT)
        assert reply.value == "bob"
        status, body = await http_get(port, "/health")
        assert status == 200
        assert json.loads(body) == {"status": "ok", "flare_connections": "1"}
        (connection,) = server.connections
        assert connection.principal is not None and connection.principal.subject == "bob"
    status, _ = await http_get(port, "/missing")
    assert status == 404


async def test_a_browser_token_in_the_url_authenticates_the_connection(
    fastapi_app: tuple[int, Server, ConformanceService],
) -> None:
    """``?access_token=`` (browsers cannot set WebSocket headers) as on the native listener."""
    port, _, _ = fastapi_app
    url = f"ws://127.0.0.1:{port}/flare?access_token={issue_jwt(JWT_KEY, 'carol')}"
    async with connect(url) as channel:
        reply = await channel.unary_unary(Routes.WHO_AM_I, StringValue(), timeout=TIMEOUT)
        assert reply.value == "carol"


async def test_connection_metadata_travels_in_x_flare_headers(
    fastapi_app: tuple[int, Server, ConformanceService],
) -> None:
    port, server, _ = fastapi_app
    metadata: dict[str, str | bytes] = {"tenant": "acme", "trace-bin": b"\x00\xff"}
    async with connect(f"ws://127.0.0.1:{port}/flare", metadata=metadata) as channel:
        await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)
        (connection,) = server.connections
        assert connection.metadata.get("x-flare-tenant") == "acme"
        assert connection.metadata.get("x-flare-trace-bin") == b"\x00\xff"


async def test_the_router_is_frozen_at_startup_and_the_server_drained_at_shutdown() -> None:
    app, server, _ = build_app(grace=TIMEOUT)
    running = UvicornServer(app)
    port = await running.start()
    try:
        with pytest.raises(ConfigurationError, match="before the server starts"):
            server.add((SERVICE, ConformanceService()))
        assert server.port("asgi") == 0  # uvicorn owns the port
        channel = await connect(f"ws://127.0.0.1:{port}/flare")
    finally:
        await running.stop()  # uvicorn's shutdown, then the lifespan's: server.shutdown
    try:
        with pytest.raises(ConfigurationError, match="not being served"):
            server.port("asgi")
        with pytest.raises((RpcError, ConnectionClosedError)):
            await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)
    finally:
        await channel.close()


async def test_wrapping_an_app_serves_flare_at_its_path_and_the_rest_to_the_app() -> None:
    """The middleware form: WebSockets at ``path`` are Flare's; HTTP (at that path too),
    other paths and the lifespan reach the wrapped app, whose own lifespan still runs."""
    events: list[str] = []

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"page {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app started")
        yield
        events.append("app stopped")

    inner = Starlette(
        routes=[Route("/rpc", page), Route("/", page)],
        lifespan=lifespan,
    )
    server = Server([(SERVICE, ConformanceService())])
    running = UvicornServer(FlareASGI(server, inner, path="/rpc"))
    port = await running.start()
    try:
        assert events == ["app started"]
        assert server.port("asgi") == 0  # Flare started with the wrapped app
        async with connect(f"ws://127.0.0.1:{port}/rpc") as channel:
            echo = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"x"), timeout=TIMEOUT)
            assert echo.value == b"x"
        assert await http_get(port, "/rpc") == (200, b"page /rpc")
        assert await http_get(port, "/") == (200, b"page /")
        with pytest.raises(ConnectionClosedError, match="HTTP 403"):
            await connect(f"ws://127.0.0.1:{port}/other", open_timeout=TIMEOUT)
    finally:
        await running.stop()
    assert events == ["app started", "app stopped"]
    with pytest.raises(ConfigurationError):
        server.port("asgi")


async def test_a_bare_mount_with_a_path_refuses_others_and_answers_http_with_404() -> None:
    server = Server([(SERVICE, ConformanceService())])
    running = UvicornServer(FlareASGI(server, path="/flare"))
    port = await running.start()
    try:
        async with connect(f"ws://127.0.0.1:{port}/flare") as channel:
            await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)
        with pytest.raises(ConnectionClosedError, match="HTTP 404"):
            await connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT)
        status, _ = await http_get(port, "/flare")
        assert status == 404
    finally:
        await running.stop()


async def test_uvicorn_app_drains_flare_on_sigterm() -> None:
    """``uvicorn tests.runtime.asgi_app:app``, then SIGTERM while calls are in flight:
    the calls finish (uvicorn alone would close the WebSocket with 1012 at once), the
    client is told to go away (new calls UNAVAILABLE), then uvicorn shuts down as usual."""
    async with UvicornProcess.start("tests.runtime.asgi_app:app", cwd=ROOT) as served:
        channel = await connect(f"ws://127.0.0.1:{served.port}/flare")
        try:
            calls = [
                asyncio.ensure_future(
                    channel.unary_unary(
                        Routes.ECHO,
                        BytesValue(value=b"%d" % i),
                        metadata={"x-sleep": str(UNIT)},
                        timeout=TIMEOUT,
                    )
                )
                for i in range(20)
            ]
            await asyncio.sleep(0.2 * UNIT)  # the calls reached their handlers
            started = time.monotonic()
            served.terminate()
            replies = await asyncio.gather(*calls)
            assert [reply.value for reply in replies] == [b"%d" % i for i in range(20)]
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)
            assert caught.value.code is StatusCode.UNAVAILABLE
            # uvicorn ends by raising the signal it handled again, as without Flare.
            assert await asyncio.wait_for(served.process.wait(), TIMEOUT) == -signal.SIGTERM
            assert time.monotonic() - started < TIMEOUT
        finally:
            await channel.close()
        assert "Traceback" not in served.log_text()


async def test_flare_work_finishes_before_the_wrapped_apps_shutdown() -> None:
    """Flare drains while the wrapped app's resources are still open: it sees
    ``lifespan.shutdown`` only once the server has shut down."""
    server = Server([(SERVICE, ConformanceService())])
    order: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        try:
            server.port("asgi")
        except ConfigurationError:
            order.append("app shutdown after Flare's")
        else:
            order.append("app shutdown while Flare serves")

    inner = Starlette(lifespan=lifespan)
    running = UvicornServer(FlareASGI(server, inner))
    await running.start()
    await wait_until(lambda: server.port("asgi") == 0)
    await running.stop()
    assert order == ["app shutdown after Flare's"]


async def test_new_websockets_are_refused_with_503_while_the_mount_drains() -> None:
    """During ``server.shutdown(grace)`` a call in flight finishes, and a WebSocket opened
    meanwhile is refused before it is accepted: HTTP 503 (the denial-response extension)."""
    server = Server([(SERVICE, ConformanceService())])
    flare = FlareASGI(server)
    running = UvicornServer(Starlette(routes=[WebSocketRoute("/flare", flare)]))
    port = await running.start()
    try:
        async with connect(f"ws://127.0.0.1:{port}/flare") as channel:
            call = asyncio.ensure_future(
                channel.unary_unary(
                    Routes.ECHO,
                    BytesValue(value=b"late"),
                    metadata={"x-sleep": str(UNIT)},
                    timeout=TIMEOUT,
                )
            )
            await asyncio.sleep(0.2 * UNIT)  # the call reached its handler
            draining = asyncio.ensure_future(server.shutdown(TIMEOUT))
            with pytest.raises(ConnectionClosedError, match="HTTP 503"):
                await connect(f"ws://127.0.0.1:{port}/flare", open_timeout=TIMEOUT)
            assert (await call).value == b"late"
            await asyncio.wait_for(draining, TIMEOUT)
    finally:
        await running.stop()


async def test_native_listeners_started_beside_the_mount_drain_with_it() -> None:
    """The mount is the WebSocket endpoint; gRPC on its own port, started in the same
    lifespan, serves the same handlers and is shut down with the mount."""
    server = Server([(SERVICE, ConformanceService())])
    flare = FlareASGI(server)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with flare.lifespan(app):
            await server.start(grpc="127.0.0.1:0")
            yield

    running = UvicornServer(Starlette(routes=[WebSocketRoute("/flare", flare)], lifespan=lifespan))
    port = await running.start()
    try:
        grpc_port = server.port("grpc")
        for url in (f"ws://127.0.0.1:{port}/flare", f"grpc://127.0.0.1:{grpc_port}"):
            async with connect(url) as channel:
                reply = await channel.unary_unary(
                    Routes.ECHO, BytesValue(value=url.encode()), timeout=TIMEOUT
                )
                assert reply.value == url.encode()
    finally:
        await running.stop()
    for name in ("asgi", "grpc"):
        with pytest.raises(ConfigurationError, match="not being served"):
            server.port(name)
