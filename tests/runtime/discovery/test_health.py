"""Active health probes (`probe`) against real servers: Flare's (WebSocket, gRPC) and grpcio's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

import flare_runtime as flare
from flare_runtime.discovery.health import HealthPolicy, probe
from flare_runtime.errors import ConfigurationError
from flare_runtime.testing.discovery import SERVICE, CountingService


async def _flare_server(transport: str, *, reflection: bool = True) -> flare.Server:
    server = flare.Server([(SERVICE, CountingService("s"))], reflection=reflection)
    await server.start(listen={transport: "127.0.0.1:0"})
    return server


@pytest.mark.parametrize(("transport", "scheme"), [("websocket", "ws"), ("grpc", "grpc")])
async def test_a_live_server_is_healthy(transport: str, scheme: str) -> None:
    server = await _flare_server(transport)
    url = f"{scheme}://127.0.0.1:{server.port(transport)}"
    try:
        async with flare.connect(url) as channel:
            assert await probe(channel, url, 2.0) is None
    finally:
        await server.shutdown(0)


async def test_a_server_without_reflection_is_alive() -> None:
    """UNIMPLEMENTED is an answer: the server is there."""
    server = await _flare_server("websocket", reflection=False)
    url = f"ws://127.0.0.1:{server.port('websocket')}"
    try:
        async with flare.connect(url) as channel:
            assert await probe(channel, url, 2.0) is None
    finally:
        await server.shutdown(0)


async def test_a_closed_connection_fails() -> None:
    server = await _flare_server("websocket")
    url = f"ws://127.0.0.1:{server.port('websocket')}"
    try:
        channel = await flare.connect(url)
        await channel.close()
        verdict = await probe(channel, url, 2.0)
        assert verdict is not None
    finally:
        await server.shutdown(0)


class _SlowHealth(HealthServicer):
    async def Check(  # noqa: N802 -- grpcio's method name
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> health_pb2.HealthCheckResponse:
        await asyncio.sleep(5)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _grpcio_server(health: HealthServicer) -> AsyncIterator[str]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_not_serving_fails() -> None:
    """A stock grpcio server whose health service says NOT_SERVING (a server shutting down)."""
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    async for url in _grpcio_server(health):
        async with flare.connect(url) as channel:
            assert await probe(channel, url, 2.0) == "NOT_SERVING"


async def test_no_answer_within_the_timeout_fails() -> None:
    async for url in _grpcio_server(_SlowHealth()):
        async with flare.connect(url) as channel:
            started = asyncio.get_running_loop().time()
            assert await probe(channel, url, 0.3) == "no answer within 0.3 s"
            assert asyncio.get_running_loop().time() - started < 2.0


@pytest.mark.parametrize(
    "settings",
    [
        {"interval": 0.0},
        {"interval": -1.0},
        {"timeout": 0.0},
        {"ejection": 0.0},
        {"eject_after": 0},
    ],
)
def test_bad_policies(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        HealthPolicy(**settings)  # type: ignore[arg-type]


def test_no_active_checks() -> None:
    assert HealthPolicy(interval=None).interval is None
