"""Hostile input to the metrics/health HTTP port (``[metrics] listen``), one test per row.

The promise: a one-line HTTP error (400, 404, 405) and the connection closed;
at most 8 KiB of a request is read; the endpoint and the server go on serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from flare_runtime.observability.metrics import MetricsEndpoint, serve_metrics
from flare_runtime.server import Server
from flare_runtime.testing.service import PUSH_TYPES, SERVICE, ConformanceService


@pytest.fixture
async def endpoint() -> AsyncIterator[MetricsEndpoint]:
    server = Server([(SERVICE, ConformanceService())], push_tables=[PUSH_TYPES])
    metrics = serve_metrics(server, "127.0.0.1:0")
    await server.start(websocket="127.0.0.1:0")
    try:
        yield metrics
    finally:
        await server.shutdown(grace=0.1)


async def exchange(port: int, data: bytes, *, eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()


async def still_serves(port: int) -> None:
    answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok\n")


async def test_bytes_that_are_not_http(endpoint: MetricsEndpoint) -> None:
    """Binary garbage ending in a blank line → 400, closed."""
    answer = await exchange(endpoint.port, b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    await still_serves(endpoint.port)


async def test_garbage_with_no_end_of_headers_then_eof(endpoint: MetricsEndpoint) -> None:
    """Garbage with no blank line, then EOF → 400, closed."""
    answer = await exchange(endpoint.port, b"\x00\x01\x02" * 100)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    await still_serves(endpoint.port)


async def test_headers_past_8_kib(endpoint: MetricsEndpoint) -> None:
    """A request line and 1 MiB of header with no end → closed after 8 KiB (400, or a
    reset when the rest was still arriving), within the read timeout."""
    data = b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * (1 << 20)
    try:
        answer = await exchange(endpoint.port, data, eof=False)
    except ConnectionResetError:
        answer = b"reset"
    assert answer.startswith(b"HTTP/1.1 400 Bad Request") or answer == b"reset"
    await still_serves(endpoint.port)


async def test_a_path_that_is_not_served(endpoint: MetricsEndpoint) -> None:
    """``GET /../../etc/passwd`` → 404."""
    answer = await exchange(endpoint.port, b"GET /../../etc/passwd HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 Not Found")


async def test_a_method_that_is_not_get(endpoint: MetricsEndpoint) -> None:
    """``POST /metrics`` → 405."""
    answer = await exchange(
        endpoint.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    )
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed")


async def test_many_connections_that_send_nothing(endpoint: MetricsEndpoint) -> None:
    """100 idle connections → the endpoint still answers a scrape at once."""
    idle = [await asyncio.open_connection("127.0.0.1", endpoint.port) for _ in range(100)]
    try:
        answer = await exchange(endpoint.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"flare_server_calls" in answer
    finally:
        for _, writer in idle:
            writer.close()


async def test_head_gets_headers_only(endpoint: MetricsEndpoint) -> None:
    """``HEAD /metrics`` → 200 with the body's length and no body."""
    answer = await exchange(endpoint.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: " in head and body == b""
