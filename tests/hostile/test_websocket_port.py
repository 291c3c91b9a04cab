"""Hostile peers on the WebSocket port: raw HTTP upgrades and raw WebSocket frames.

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). A real
server on 127.0.0.1, real sockets; the hostile side is hand-written bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from examples.chat.v1 import chat_flare, chat_pb2
from google.protobuf.wrappers_pb2 import BytesValue, Int64Value

from flare_runtime import ConnectionClosedError, connect
from flare_runtime.auth import issue_jwt
from flare_runtime.protocol import CLIENT, Connection, ProtocolConfig
from flare_runtime.protocol.frames import encode_call_start, encode_ping
from flare_runtime.server import ServerOptions
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.served import ServedProcess
from flare_runtime.testing.service import Routes

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]
CHAT = "examples.chat.service:server"
DEMO_KEY = "flare-demo-signing-key-change-me-0123456789"
"""The chat example's default JWT key (`examples.chat.service.DEMO_KEY`)."""
CHAT_ENV: dict[str, str | None] = {"FLARE_DEMO_JWT_KEY": None}
"""The child's environment: no other key than `DEMO_KEY`, whatever this one says."""
MB = 1024 * 1024


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    started = await start_rig("websocket")
    yield started
    await started.server.shutdown(grace=0)


def _port(rig: Rig) -> int:
    return rig.server.port("websocket")


async def raw_upgrade(
    port: int, headers: list[tuple[str, str]], path: str = "/"
) -> tuple[int, bytes]:
    """Send one WebSocket upgrade request with exactly `headers`; return (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
        return status, body
    finally:
        writer.close()


async def test_two_authorization_headers_are_refused_before_the_upgrade(rig: Rig) -> None:
    """Input: an upgrade request with two ``Authorization`` headers (a bad token, then a
    valid one). Outcome: ``401`` before ``101 Switching Protocols``, naming the ambiguity;
    neither credential is picked and no connection is opened."""
    status, body = await raw_upgrade(
        _port(rig),
        [("Authorization", "Bearer not-a-token"), ("Authorization", f"Bearer {rig.token()}")],
    )
    assert status == 401
    assert b"ambiguous credentials" in body
    assert not rig.server.connections


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ([("Authorization", "Bearer a")], "/?access_token=b"),
        ([], "/?access_token=a&access_token=b"),
    ],
    ids=["header-and-query", "two-query-tokens"],
)
async def test_credentials_in_header_and_url_together_are_refused(
    rig: Rig, headers: list[tuple[str, str]], path: str
) -> None:
    """Input: an upgrade carrying an ``Authorization`` header and an ``access_token`` URL
    parameter, or two ``access_token`` parameters. Outcome: ``401`` before ``101``."""
    status, body = await raw_upgrade(_port(rig), headers, path)
    assert status == 401
    assert b"ambiguous credentials" in body


async def test_a_bin_header_that_is_not_base64_is_refused_before_the_upgrade(rig: Rig) -> None:
    """Input: an upgrade with ``x-flare-trace-bin: %%%`` (not base64). Outcome: ``400`` before
    ``101``, naming the header; no exception escapes into the server, and the client is
    never left with a 101 and no answer."""
    status, body = await raw_upgrade(_port(rig), [("x-flare-trace-bin", "%%%")])
    assert status == 400
    assert b"x-flare-trace-bin is not base64" in body


async def test_a_base64_bin_header_becomes_binary_metadata(rig: Rig) -> None:
    """Input: a client connecting with binary connection metadata (``trace-bin``). Outcome:
    it travels as base64 in ``x-flare-trace-bin`` and the server's connection metadata holds
    the original bytes."""
    async with rig.connect(metadata={"trace-bin": b"\x00\xff\x10"}) as channel:
        await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)
        (connection,) = rig.server.connections
        assert connection.metadata.get("x-flare-trace-bin") == b"\x00\xff\x10"


async def test_a_flare_client_sees_why_its_upgrade_was_refused(rig: Rig) -> None:
    """Input: a Flare client given a token and an ``authorization`` metadata entry as well
    (two credentials). Outcome: `connect` raises `ConnectionClosedError` saying ``HTTP 401``
    and the server's reason, at once (not after its open timeout)."""
    with pytest.raises(ConnectionClosedError) as caught:
        await asyncio.wait_for(
            connect(rig.url, token=rig.token(), metadata={"authorization": "Bearer other"}),
            TIMEOUT,
        )
    assert "HTTP 401" in str(caught.value)
    assert "ambiguous credentials" in str(caught.value)


async def test_a_flood_of_bad_upgrades_writes_a_bounded_log(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: 2,000 upgrade requests with duplicate ``Authorization`` headers, from 20
    connections at a time, with every logger at INFO. Outcome: each is refused with 401 and
    the server writes at most a few dozen log lines in all (``ServerOptions.log_burst`` per
    kind per ``log_interval``), not one or more per request (it wrote a traceback each)."""
    caplog.set_level(logging.INFO)
    port = _port(rig)
    headers = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    statuses: list[int] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            status, _body = await raw_upgrade(port, headers)
            statuses.append(status)

    await asyncio.gather(*(worker(100) for _ in range(20)))
    assert statuses == [401] * 2_000
    burst = rig.server.options.log_burst
    kinds = {(record.name, record.msg) for record in caplog.records}
    assert len(caplog.records) <= burst * max(len(kinds), 1)
    assert len(caplog.records) <= 5 * burst
    assert sum(len(record.getMessage()) for record in caplog.records) < 20_000


# ------------------------------------------------------------------ a peer that never reads
#
# These rows run the example chat server as a user runs it (`flare serve`, a child
# process) and measure its resident memory while a raw client floods it and never
# reads a byte. The bound is generous (what a healthy server holds plus the
# configured output limits, measured: see docs/security/wire.md); before the fix each
# flood grew the server by roughly what it sent.

FLOOD_BYTES = 200 * MB
FLOOD_SECONDS = 10.0
STALL_SECONDS = 1.5
"""The flood stops once the server has not taken a byte for this long (it stopped reading)."""
GROWTH_BOUND = 12 * MB


def _ws_frame(payload: bytes) -> bytes:
    """One masked, final, binary WebSocket frame; the all-zero mask key leaves the
    payload as it is (RFC 6455 §5.3 requires the mask bit, not a random key). The
    length takes the fewest bytes, as §5.2 requires (wsproto closes with 1002 otherwise)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x82, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, size)
    return head + bytes(4) + payload


def _upgrade(port: int, headers: tuple[str, ...] = (), path: str = "/") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # take as little as we can
    request = "\r\n".join(
        [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *headers,
        ]
    )
    sock.sendall(request.encode() + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing after the head is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _flood(sock: socket.socket, chunks: Iterator[bytes]) -> int:
    """Send `chunks` until FLOOD_BYTES, FLOOD_SECONDS, or the server stops taking them;
    never read. Returns the bytes sent."""
    sock.settimeout(0.1)
    sent = 0
    started = time.monotonic()
    last_progress = started
    pending = b""
    while sent < FLOOD_BYTES and time.monotonic() - started < FLOOD_SECONDS:
        if not pending:
            pending = next(chunks)
        try:
            count = sock.send(pending)
        except TimeoutError:
            if time.monotonic() - last_progress > STALL_SECONDS:
                break
            continue
        except OSError:
            break  # the server closed us: also a bound
        sent += count
        pending = pending[count:]
        last_progress = time.monotonic()
    return sent


async def _growth_under_flood(
    make_socket: Callable[[int], socket.socket], chunks: Iterator[bytes]
) -> tuple[int, int]:
    """Run the chat server, flood it from one raw connection that never reads; return
    (bytes sent, server RSS growth)."""
    async with ServedProcess.start(CHAT, websocket=True, cwd=ROOT, env=CHAT_ENV) as served:
        port = served.ports["websocket"]
        warm = await asyncio.to_thread(make_socket, port)  # first connection: imports, caches
        warm.close()
        await asyncio.sleep(0.2)
        before = served.rss()
        sock = await asyncio.to_thread(make_socket, port)
        try:
            sent = await asyncio.to_thread(_flood, sock, chunks)
            await asyncio.sleep(0.5)  # let the server finish what it read
            growth = served.rss() - before
            assert served.alive
        finally:
            sock.close()
    print(f"sent {sent / MB:.1f} MB, server grew {growth / MB:.1f} MB", file=sys.stderr)
    return sent, growth


def _hello() -> bytes:
    return Connection(CLIENT).data_to_send()


def _ping_chunks() -> Iterator[bytes]:
    pings = encode_ping(bytes(8)) * 3_600
    yield _ws_frame(_hello() + pings)
    frame = _ws_frame(pings)
    while True:
        yield frame


def _ping_calls() -> Iterator[bytes]:
    ping_route = 1 << 16 | 6  # examples.chat.v1.ChatService/Ping: no auth, Empty in
    yield _ws_frame(_hello())
    call_id = 0
    while True:
        calls = []
        for _ in range(2_800):
            call_id += 1
            calls.append(encode_call_start(call_id, ping_route, 0, (), b""))
        yield _ws_frame(b"".join(calls))


async def test_a_flare_ping_flood_from_a_client_that_never_reads_is_bounded() -> None:
    """Input: one WebSocket client sends Flare PING frames as fast as it can (up to 200 MB)
    and never reads. Outcome: once the PONGs queued for it pass ``max_write_buffer`` the
    server stops reading from it, so its memory stays bounded (grew by roughly what was
    sent: +210 MB for 200 MB)."""
    sent, growth = await _growth_under_flood(_upgrade, _ping_chunks())
    assert growth < GROWTH_BOUND, f"server grew {growth / MB:.0f} MB after {sent / MB:.0f} MB"


async def test_pipelined_calls_from_a_client_that_never_reads_are_bounded() -> None:
    """Input: one WebSocket client pipelines unary calls (compact CALL_START to the chat
    Ping route) as fast as it can and never reads a response. Outcome: the server stops
    reading once its output passes ``max_write_buffer``; memory stays bounded (grew
    +400 MB in 60 s)."""
    sent, growth = await _growth_under_flood(_upgrade, _ping_calls())
    assert growth < GROWTH_BOUND, f"server grew {growth / MB:.0f} MB after {sent / MB:.0f} MB"


async def test_pushes_and_stream_events_to_clients_that_never_read_are_bounded() -> None:
    """Input: three WebSocket clients subscribe to a chat room (the example chat app) and
    never read; another client posts 3,000 messages of 4 KB there, each pushed to every
    connection and streamed to every subscriber. Outcome: the server's memory grows by
    the room's history plus a bounded amount: a subscription that falls
    ``subscriber_backlog`` events behind is ended, and a connection whose unsent pushes
    pass ``max_unsent_output`` is aborted (grew by every push and event for every
    reader: +71 MB within a second)."""
    subscribe_route = 1 << 16 | 2  # examples.chat.v1.ChatService/Subscribe
    reader_token = issue_jwt(DEMO_KEY, "eve", scopes=["chat"])
    writer_token = issue_jwt(DEMO_KEY, "ada", scopes=["chat", "chat.write"])
    subscribe = encode_call_start(
        1, subscribe_route, 0, (), chat_pb2.SubscribeRequest(room="r").SerializeToString()
    )
    count, text = 3_000, "x" * 4096

    def stalled_subscriber(port: int) -> socket.socket:
        sock = _upgrade(port, (f"Authorization: Bearer {reader_token}",))
        sock.sendall(_ws_frame(_hello() + subscribe))
        return sock

    async with ServedProcess.start(CHAT, websocket=True, cwd=ROOT, env=CHAT_ENV) as served:
        port = served.ports["websocket"]
        readers = [await asyncio.to_thread(stalled_subscriber, port) for _ in range(3)]
        try:
            async with connect(f"ws://127.0.0.1:{port}", token=writer_token) as channel:
                client = chat_flare.ChatServiceClient(channel)
                await client.send(chat_pb2.SendRequest(message=chat_pb2.ChatMessage(room="r")))
                await asyncio.sleep(0.3)
                before = served.rss()
                for start in range(0, count, 50):
                    await asyncio.gather(
                        *(
                            client.send(
                                chat_pb2.SendRequest(
                                    message=chat_pb2.ChatMessage(room="r", text=text)
                                ),
                                timeout=30.0,
                            )
                            for _ in range(start, min(start + 50, count))
                        )
                    )
                await asyncio.sleep(0.5)
                growth = served.rss() - before
            assert served.alive
        finally:
            for sock in readers:
                sock.close()
    history = count * len(text)
    print(f"history {history / MB:.1f} MB, server grew {growth / MB:.1f} MB", file=sys.stderr)
    assert growth < history + 24 * MB, f"server grew {growth / MB:.0f} MB"


@contextlib.asynccontextmanager
async def stalled_client(options: ServerOptions) -> AsyncIterator[tuple[Rig, socket.socket]]:
    """A conformance server with `options`, and a raw upgraded client that never reads."""
    rig = await start_rig("websocket", options)
    try:
        sock = await asyncio.to_thread(_upgrade, _port(rig))
        try:
            yield rig, sock
        finally:
            sock.close()
    finally:
        await rig.server.shutdown(grace=0)


async def test_a_client_that_never_reads_cannot_hold_a_closed_connection_open() -> None:
    """Input: a WebSocket client floods PINGs until the server stops reading it, then
    neither reads nor sends; the server's keepalive gives up on it (closes it with its
    output still queued). Outcome: the connection is aborted ``close_timeout`` seconds
    after the close and its memory released (a graceful close would wait for the client
    to read everything queued before it: for ever)."""
    options = ServerOptions(
        protocol=ProtocolConfig(keepalive_interval=0.5, keepalive_timeout=0.5),
        close_timeout=0.5,
    )
    async with stalled_client(options) as (rig, sock):
        await asyncio.to_thread(_flood, sock, _ping_chunks())
        async with asyncio.timeout(TIMEOUT):
            while rig.server.connections:
                await asyncio.sleep(0.05)


async def test_pushes_to_a_client_that_never_reads_end_in_an_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Input: a WebSocket client calls a route that pushes 500,000 messages (~10 MB) to its
    own connection, and never reads. Outcome: once more than ``max_unsent_output`` bytes
    are queued for it the server aborts the connection (a slow consumer) and logs one line
    saying so; pushes are not flow-controlled, so nothing else would stop them."""
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


async def test_a_flood_of_protocol_errors_writes_a_bounded_log(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: 300 WebSocket connections, 20 at a time, each sending a HELLO then a frame
    of an unknown type (0x7f). Outcome: each is closed with PROTOCOL_ERROR (a Flare CLOSE
    naming the frame type) and the server logs at most ``log_burst`` lines for them."""
    caplog.set_level(logging.INFO)
    bad_frame = struct.pack(">IBBI", 0, 0x7F, 0, 0)
    port = _port(rig)

    def misbehave() -> bytes:
        sock = _upgrade(port)
        try:
            sock.sendall(_ws_frame(_hello() + bad_frame))
            received = b""
            while chunk := sock.recv(65536):  # until the server closes
                received += chunk
            return received
        finally:
            sock.close()

    async def worker() -> list[bytes]:
        return [await asyncio.to_thread(misbehave) for _ in range(15)]

    answers = [
        answer for batch in await asyncio.gather(*(worker() for _ in range(20))) for answer in batch
    ]
    assert len(answers) == 300
    assert all(b"unknown frame type 0x7f" in answer for answer in answers)
    closes = [r for r in caplog.records if r.getMessage().startswith("closing connection from")]
    assert 1 <= len(closes) <= rig.server.options.log_burst
