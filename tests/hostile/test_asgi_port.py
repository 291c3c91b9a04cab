"""Hostile peers on the ASGI mount: Flare in a Starlette app under uvicorn (`flare_runtime.asgi`).

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). The same
rows as the native listener's (tests/hostile/test_websocket_port.py) where the
mount makes the same promise, plus what only the mount has (an ASGI server
without the denial-response extension). Real uvicorn on 127.0.0.1, real
sockets; the hostile side is hand-written bytes or a raw WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import BytesValue, Int64Value
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed

from flare_runtime import ConnectionClosedError, connect
from flare_runtime.asgi import FlareASGI, Receive, Scope, Send
from flare_runtime.protocol import ProtocolConfig
from flare_runtime.protocol.config import Settings
from flare_runtime.protocol.frames import encode_call_start
from flare_runtime.server import Server, ServerOptions
from flare_runtime.testing.asgi_harness import UvicornProcess, UvicornServer, harness
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import SERVICE, ConformanceService, Routes
from tests.hostile.test_websocket_port import (
    MB,
    _flood,
    _hello,
    _ping_chunks,
    _upgrade,
    _ws_frame,
    raw_upgrade,
)

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]
PATH = "/flare"
GROWTH_BOUND = 12 * MB


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    started = await start_rig(harness())
    yield started
    await started.server.shutdown(grace=0)


def _port(rig: Rig) -> int:
    port = urllib.parse.urlsplit(rig.url).port
    assert port is not None
    return port


async def _close_code(url: str, message: str | bytes) -> int:
    """Send `message` on a raw WebSocket; return the close code the server answers with."""
    async with websocket_connect(url, compression=None, max_size=None) as websocket:
        await websocket.send(message)
        with pytest.raises(ConnectionClosed) as caught:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await websocket.recv()  # the server's HELLO first
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code


async def test_two_authorization_headers_are_refused_before_the_upgrade(rig: Rig) -> None:
    """Input: an upgrade request with two ``Authorization`` headers (a bad token, then a
    valid one). Outcome: ``401`` naming the ambiguity before the WebSocket is accepted
    (uvicorn's denial-response extension); no connection is opened."""
    status, body = await raw_upgrade(
        _port(rig),
        [("Authorization", "Bearer not-a-token"), ("Authorization", f"Bearer {rig.token()}")],
        PATH,
    )
    assert status == 401
    assert b"ambiguous credentials" in body
    assert not rig.server.connections


@pytest.mark.parametrize(
    ("headers", "query"),
    [([("Authorization", "Bearer a")], "?access_token=b"), ([], "?access_token=a&access_token=b")],
    ids=["header-and-query", "two-query-tokens"],
)
async def test_credentials_in_header_and_url_together_are_refused(
    rig: Rig, headers: list[tuple[str, str]], query: str
) -> None:
    """Input: an upgrade carrying an ``Authorization`` header and an ``access_token`` URL
    parameter, or two ``access_token`` parameters. Outcome: ``401`` before accepting."""
    status, body = await raw_upgrade(_port(rig), headers, PATH + query)
    assert status == 401
    assert b"ambiguous credentials" in body


async def test_a_bin_header_that_is_not_base64_is_refused_before_the_upgrade(rig: Rig) -> None:
    """Input: an upgrade with ``x-flare-trace-bin: %%%`` (not base64). Outcome: ``400``
    naming the header, before accepting."""
    status, body = await raw_upgrade(_port(rig), [("x-flare-trace-bin", "%%%")], PATH)
    assert status == 400
    assert b"x-flare-trace-bin is not base64" in body


async def test_a_flare_client_sees_why_its_upgrade_was_refused(rig: Rig) -> None:
    """Input: a Flare client given a token and an ``authorization`` metadata entry as well.
    Outcome: `connect` raises `ConnectionClosedError` saying ``HTTP 401`` and the reason."""
    with pytest.raises(ConnectionClosedError) as caught:
        await asyncio.wait_for(
            connect(rig.url, token=rig.token(), metadata={"authorization": "Bearer other"}),
            TIMEOUT,
        )
    assert "HTTP 401" in str(caught.value)
    assert "ambiguous credentials" in str(caught.value)


def _without_denial_responses(app: FlareASGI) -> FlareASGI:
    """`app` as an ASGI server without the ``websocket.http.response`` extension sees it."""

    async def stripped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await app(scope, receive, send)

    return stripped  # type: ignore[return-value]


async def test_without_the_denial_extension_a_refusal_is_403() -> None:
    """Input: duplicate credentials, to a mount run by an ASGI server that lacks the
    denial-response extension. Outcome: ``403`` (``websocket.close`` before accepting,
    the only refusal plain ASGI has), never an accepted connection."""
    server = Server([(SERVICE, ConformanceService())])
    flare = FlareASGI(server)
    running = UvicornServer(_without_denial_responses(flare))
    port = await running.start()
    try:
        await flare.start()
        status, _ = await raw_upgrade(port, [("Authorization", "a"), ("Authorization", "b")])
        assert status == 403
        assert not server.connections
    finally:
        await running.stop()
        await server.shutdown(0)


async def test_a_text_message_closes_the_websocket_with_1003(rig: Rig) -> None:
    """Input: a text WebSocket message. Outcome: the WebSocket closes with 1003 (Flare
    speaks binary messages only), as on the native listener; the server serves on."""
    assert await _close_code(rig.url, "hello") == 1003
    async with rig.connect() as channel:
        await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)


async def test_a_message_over_flares_limit_closes_the_websocket_with_1009() -> None:
    """Input: one binary message of 1 MiB + 1 byte to a server whose Flare limits make
    1 MiB the largest message, under an ASGI server that allows 4 MiB. Outcome: close 1009
    before any of it reaches the protocol."""
    settings = Settings(max_message_size=64 * 1024, max_frame_size=64 * 1024)
    options = ServerOptions(protocol=ProtocolConfig(settings=settings))
    rig = await start_rig(harness(), options)
    try:
        assert await _close_code(rig.url, bytes(MB + 1)) == 1009
    finally:
        await rig.server.shutdown(0)


async def test_bytes_that_are_not_flare_close_only_that_connection(rig: Rig) -> None:
    """Input: a WebSocket whose first message is not a Flare HELLO. Outcome: a protocol
    error closes that connection (its WebSocket with 1000 after the Flare CLOSE frame);
    another client's calls go on."""
    async with rig.connect() as channel:
        assert await _close_code(rig.url, b"GET / HTTP/1.1\r\n\r\n" * 4) == 1000
        reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"), timeout=TIMEOUT)
        assert reply.value == b"ok"


@contextlib.asynccontextmanager
async def stalled_client(options: ServerOptions) -> AsyncIterator[tuple[Rig, socket.socket]]:
    """A mounted conformance server with `options`, and a raw client that never reads."""
    rig = await start_rig(harness(), options)
    try:
        sock = await asyncio.to_thread(_upgrade, _port(rig), (), PATH)
        try:
            yield rig, sock
        finally:
            sock.close()
    finally:
        await rig.server.shutdown(grace=0)


async def test_pushes_to_a_client_that_never_reads_end_in_an_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Input: a client calls a route that pushes 500,000 messages (~10 MB) to its own
    connection, and never reads. Outcome: the mount's queue grows to
    ``max_unsent_output`` at most (``websocket.send`` is awaited, uvicorn's buffer is
    full), then the connection is aborted as a slow consumer, with one log line."""
    caplog.set_level(logging.WARNING)
    options = ServerOptions(max_write_buffer=64 * 1024, max_unsent_output=256 * 1024)
    async with stalled_client(options) as (rig, sock):
        request = Int64Value(value=500_000).SerializeToString()
        call = encode_call_start(1, Routes.PUSH_ME.wire_id, 0, (), request)
        await asyncio.to_thread(sock.sendall, _ws_frame(_hello() + call))
        async with asyncio.timeout(3 * TIMEOUT):
            while rig.server.connections:
                await asyncio.sleep(0.05)
    assert any("bytes unsent (max_unsent_output" in r.getMessage() for r in caplog.records)


async def test_a_client_that_never_reads_cannot_hold_a_closed_connection_open() -> None:
    """Input: a client floods Flare PINGs until the server stops reading it, then neither
    reads nor sends; Flare's keepalive gives up on it (closes it, output still queued
    behind an awaited ``websocket.send``). Outcome: the connection is let go
    ``close_timeout`` seconds after the close and its memory released."""
    options = ServerOptions(
        protocol=ProtocolConfig(keepalive_interval=0.5, keepalive_timeout=0.5),
        close_timeout=0.5,
    )
    async with stalled_client(options) as (rig, sock):
        await asyncio.to_thread(_flood, sock, _ping_chunks())
        async with asyncio.timeout(TIMEOUT):
            while rig.server.connections:
                await asyncio.sleep(0.05)


async def test_a_flare_ping_flood_from_a_client_that_never_reads_is_bounded() -> None:
    """Input: one client of ``uvicorn tests.runtime.asgi_app:app`` sends Flare PING frames
    as fast as it can (up to 200 MB) and never reads. Outcome: once the PONGs queued for it
    pass ``max_write_buffer`` the mount stops calling ``receive`` and uvicorn stops reading
    the socket, so the server's memory stays bounded."""
    async with UvicornProcess.start("tests.runtime.asgi_app:app", cwd=ROOT) as served:
        warm = await asyncio.to_thread(_upgrade, served.port, (), PATH)  # imports, caches
        warm.close()
        await asyncio.sleep(0.2)
        before = served.rss()
        sock = await asyncio.to_thread(_upgrade, served.port, (), PATH)
        try:
            sent = await asyncio.to_thread(_flood, sock, _ping_chunks())
            await asyncio.sleep(0.5)  # let the server finish what it read
            growth = served.rss() - before
            assert served.process.returncode is None
        finally:
            sock.close()
    print(f"sent {sent / MB:.1f} MB, server grew {growth / MB:.1f} MB", file=sys.stderr)
    assert growth < GROWTH_BOUND, f"server grew {growth / MB:.0f} MB after {sent / MB:.0f} MB"


async def test_a_flood_of_bad_upgrades_writes_a_bounded_log(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: 200 upgrade requests with duplicate ``Authorization`` headers. Outcome: each
    is refused with 401, and the mount logs at most ``log_burst`` lines for them (the
    server's `PeerLog`), the rest counted."""
    caplog.set_level(logging.INFO, logger="flare_runtime.asgi")
    port = _port(rig)
    for _ in range(10):
        statuses = await asyncio.gather(
            *(
                raw_upgrade(port, [("Authorization", "a"), ("Authorization", "b")], PATH)
                for _ in range(20)
            )
        )
        assert {status for status, _ in statuses} == {401}
    lines = [r for r in caplog.records if r.name == "flare_runtime.asgi"]
    assert 0 < len(lines) <= rig.server.options.log_burst + 1


async def test_a_binary_frame_split_into_continuations_is_one_message(rig: Rig) -> None:
    """Input: a HELLO and a call sent as one WebSocket message in three fragments
    (BINARY without FIN, CONT, CONT+FIN). Outcome: the ASGI server reassembles it and the
    call is answered like any other."""
    data = _hello() + encode_call_start(
        1, Routes.ECHO.wire_id, 0, (), BytesValue(value=b"fragmented-echo").SerializeToString()
    )
    parts = [data[:3], data[3:9], data[9:]]
    opcodes = [0x02, 0x00, 0x80]
    frames = b"".join(
        struct.pack("!BB", opcode, 0x80 | len(part)) + bytes(4) + part
        for opcode, part in zip(opcodes, parts, strict=True)
    )
    sock = await asyncio.to_thread(_upgrade, _port(rig), (), PATH)
    try:
        sock.settimeout(TIMEOUT)
        await asyncio.to_thread(sock.sendall, frames)
        received = b""
        while b"fragmented-echo" not in received:
            chunk = await asyncio.to_thread(sock.recv, 65536)
            assert chunk, "closed before answering"
            received += chunk
    finally:
        sock.close()
