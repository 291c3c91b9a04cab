"""/metrics, /healthz and /readyz: scraped over real HTTP after real calls, parsed with
prometheus_client's own parser; one process in-process, and ``flare serve --workers 2``."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flare_runtime import connect
from flare_runtime.auth import JWTAuth
from flare_runtime.errors import RpcError
from flare_runtime.observability.metrics import serve_metrics
from flare_runtime.server import Server
from flare_runtime.testing.operated import Operated, free_port
from flare_runtime.testing.service import (
    PUSH_TYPES,
    SERVICE,
    BytesValue,
    ConformanceService,
    Routes,
    StringValue,
)
from flare_runtime.testing.timing import UNIT, wait_until

ECHO = Routes.ECHO.path


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics body, by (name, labels)."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def sample(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)


async def test_metrics_count_what_real_calls_did() -> None:
    service = ConformanceService()
    server = Server([(SERVICE, service)], push_tables=[PUSH_TYPES], auth=JWTAuth("k" * 32))
    endpoint = serve_metrics(server, "127.0.0.1:0")
    await server.start(websocket="127.0.0.1:0")
    try:
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        async with connect(url, push_tables=[PUSH_TYPES]) as channel:
            for _ in range(5):
                await channel.unary_unary(Routes.ECHO, BytesValue(value=b"x" * 100))
            with pytest.raises(RpcError):
                await channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-fail-code": "5"})
            status, text = await get(endpoint.port, "/metrics")
            assert status == 200
            assert sample(text, "flare_server_connections", transport="websocket") == 1
        labels = {"transport": "websocket", "route": ECHO}
        assert sample(text, "flare_server_calls_total", code="OK", **labels) == 5
        assert sample(text, "flare_server_calls_total", code="NOT_FOUND", **labels) == 1
        assert sample(text, "flare_server_call_duration_seconds_count", **labels) == 6
        assert sample(text, "flare_server_call_duration_seconds_bucket", le="+Inf", **labels) == 6
        assert sample(text, "flare_server_received_bytes_total", transport="websocket") > 500
        assert sample(text, "flare_server_connections_opened_total", transport="websocket") == 1
        async with connect(url, push_tables=[PUSH_TYPES], token="not-a-jwt") as channel:
            with pytest.raises(RpcError):
                await channel.unary_unary(Routes.WHO_AM_I, StringValue())
        await wait_until(lambda: not server.connections, 10 * UNIT)
        _, text = await get(endpoint.port, "/metrics")
        assert sample(text, "flare_server_auth_failures_total", stage="connection") == 1
        assert sample(text, "flare_server_connections", transport="websocket") == 0
        assert sample(text, "flare_server_connections_opened_total", transport="websocket") == 2
    finally:
        await server.shutdown(grace=UNIT)


async def test_readyz_is_false_while_the_server_drains_and_healthz_stays_true() -> None:
    service = ConformanceService()
    server = Server([(SERVICE, service)], push_tables=[PUSH_TYPES])
    endpoint = serve_metrics(server, "127.0.0.1:0")
    await server.start(websocket="127.0.0.1:0")
    serving = asyncio.ensure_future(server.serve_started(grace=30 * UNIT))
    try:
        assert await get(endpoint.port, "/readyz") == (200, "ready\n")
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        async with connect(url, push_tables=[PUSH_TYPES]) as channel:
            slow = asyncio.ensure_future(
                channel.unary_unary(Routes.ECHO, BytesValue(value=b"s"), metadata={"x-sleep": "1"})
            )
            await wait_until(lambda: service.started == 1, 10 * UNIT)
            server.request_drain()
            assert await get(endpoint.port, "/readyz") == (503, "draining\n")
            assert await get(endpoint.port, "/healthz") == (200, "ok\n")
            assert (await slow).value == b"s"  # the call in flight finished
        await asyncio.wait_for(serving, 30 * UNIT)
        with pytest.raises(OSError):
            await get(endpoint.port, "/readyz")  # closed once drained
    finally:
        await server.shutdown(grace=UNIT)


def test_flare_serve_workers_2_answers_for_both_workers(tmp_path: Path) -> None:
    """Calls spread over both workers by SO_REUSEPORT; any scrape sums every worker's."""
    ws, metrics = free_port(), free_port()
    config = f"""
target = "opsapp:services"
listen = {{websocket = "127.0.0.1:{ws}"}}
[serve]
workers = 2
[metrics]
listen = "127.0.0.1:{metrics}"
publish_interval = 0.2
"""
    with Operated.start(tmp_path, config, metrics=False) as served:
        served.metrics_port = metrics
        asyncio.run(_ping_many(f"ws://127.0.0.1:{ws}", connections=12, calls=3))
        route = "/examples.chat.v1.ChatService/Ping"

        def total() -> tuple[float, float]:
            status, text = served.get("/metrics")
            assert status == 200
            return (
                sample(text, "flare_server_calls_total", transport="websocket", route=route,
                       code="OK"),
                sample(text, "flare_server_connections_opened_total", transport="websocket"),
            )  # fmt: skip

        asyncio.run(wait_until(lambda: total() == (36, 12), 20 * UNIT))
        for _ in range(6):  # whichever worker answers, the sum is the same
            assert total() == (36, 12)
        _, text = served.get("/metrics")
        assert sample(text, "flare_server_workers") == 2
        assert served.stop() == 0


async def _ping_many(url: str, *, connections: int, calls: int) -> None:
    from examples.chat.v1.chat_flare import ChatServiceClient
    from google.protobuf import empty_pb2

    for _ in range(connections):
        async with connect(url) as channel:
            client = ChatServiceClient(channel)
            for _ in range(calls):
                await client.ping(empty_pb2.Empty())
