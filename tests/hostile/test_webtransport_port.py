"""Hostile input: raw HTTP/3 and WebTransport at the WebTransport port.

The promise is the other transports': a peer that breaks the rules gets a
clear refusal or loses its session, and only its own; a Flare client on the
same server keeps working. The raw peer is aioquic's HTTP/3 client.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from flare_runtime.client import connect
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.protocol.frames import encode_hello
from flare_runtime.server import Server, ServerOptions, TLSFiles
from flare_runtime.testing.service import SERVICE, BytesValue, ConformanceService, Routes
from flare_runtime.testing.webtransport_harness import dev_certificate

UNIT = 1.0
HANDSHAKE_TIMEOUT = 0.5 * UNIT


class RawClient(QuicConnectionProtocol):
    """An HTTP/3 client that records every event, to speak out of turn."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.http = H3Connection(quic, enable_webtransport=True)
        self.seen: list[object] = []
        self.changed = asyncio.Event()
        self.own_streams: set[int] = set()

    def quic_event_received(self, event: QuicEvent) -> None:
        self.seen.append(event)
        # aioquic's H3 layer would parse data on our own WebTransport streams as frames.
        own = isinstance(event, StreamDataReceived) and event.stream_id in self.own_streams
        if not own and not isinstance(event, StreamReset):
            self.seen.extend(self.http.handle_event(event))
        self.changed.set()

    def open_stream(self, session_id: int, unidirectional: bool = False) -> int:
        """A WebTransport stream of `session_id`, opened by this client."""
        stream_id = self.http.create_webtransport_stream(session_id, unidirectional)
        self.own_streams.add(stream_id)
        self.transmit()
        return stream_id

    async def until(self, check: Callable[[object], bool]) -> object:
        async with asyncio.timeout(10 * UNIT):
            while True:
                for event in self.seen:
                    if check(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

    def request(self, method: bytes, path: bytes, protocol: bytes | None = None) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        headers = [(b":method", method), (b":scheme", b"https"), (b":authority", b"127.0.0.1")]
        headers += [(b":path", path)]
        if protocol is not None:
            headers += [(b":protocol", protocol), (b"sec-webtransport-http3-draft02", b"1")]
        self.http.send_headers(stream_id, headers, end_stream=method != b"CONNECT")
        self.transmit()
        return stream_id

    async def status(self, stream_id: int) -> bytes:
        event = await self.until(
            lambda event: isinstance(event, HeadersReceived) and event.stream_id == stream_id
        )
        assert isinstance(event, HeadersReceived)
        return dict(event.headers)[b":status"]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    files = dev_certificate()
    options = ServerOptions(protocol=ProtocolConfig(handshake_timeout=HANDSHAKE_TIMEOUT))
    served = Server([(SERVICE, ConformanceService())], options=options)
    await served.start(
        listen={"webtransport": "127.0.0.1:0"},
        tls=TLSFiles(str(files.certificate), str(files.private_key)),
    )
    try:
        yield served
    finally:
        await served.shutdown(grace=0)


@asynccontextmanager
async def raw_client(server: Server) -> AsyncIterator[RawClient]:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    configuration.verify_mode = ssl.CERT_NONE
    async with quic_connect(
        "127.0.0.1",
        server.port("webtransport"),
        configuration=configuration,
        create_protocol=RawClient,
    ) as client:
        assert isinstance(client, RawClient)
        yield client


async def still_serves(server: Server) -> None:
    url = f"webtransport://127.0.0.1:{server.port('webtransport')}"
    async with connect(url, ca_file=str(dev_certificate().certificate)) as channel:
        reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"))
        assert reply.value == b"ok"


async def test_a_plain_http_request_gets_404(server: Server) -> None:
    """Input: GET / over HTTP/3. Promised: 404, nothing else opened; the server goes on."""
    async with raw_client(server) as client:
        assert await client.status(client.request(b"GET", b"/")) == b"404"
    await still_serves(server)


async def test_a_webtransport_session_elsewhere_than_the_flare_path_gets_404(
    server: Server,
) -> None:
    """Input: CONNECT :protocol=webtransport to /admin. Promised: 404; the server goes on."""
    async with raw_client(server) as client:
        stream_id = client.request(b"CONNECT", b"/admin", b"webtransport")
        assert await client.status(stream_id) == b"404"
    await still_serves(server)


async def test_a_session_that_never_opens_its_stream_is_closed_after_the_handshake_timeout(
    server: Server,
) -> None:
    """Input: a Flare session (200) whose client opens no stream. Promised: the server ends it
    after the handshake timeout (its QUIC connection closes); it holds nothing."""
    async with raw_client(server) as client:
        stream_id = client.request(b"CONNECT", b"/flare", b"webtransport")
        assert await client.status(stream_id) == b"200"
        await client.until(
            lambda event: (
                isinstance(event, ConnectionTerminated)
                or (isinstance(event, DataReceived) and event.stream_ended)
            )
        )
    await still_serves(server)


async def test_garbage_on_the_flare_stream_closes_that_session_only(server: Server) -> None:
    """Input: bytes that are no Flare HELLO on the session's stream. Promised: the server
    closes that session (a Flare protocol error); another client is served."""
    async with raw_client(server) as client:
        session_id = client.request(b"CONNECT", b"/flare", b"webtransport")
        assert await client.status(session_id) == b"200"
        stream_id = client.open_stream(session_id)
        client._quic.send_stream_data(stream_id, b"GET / HTTP/1.1\r\n\r\n" * 4)
        client.transmit()
        await client.until(lambda event: isinstance(event, ConnectionTerminated))
    await still_serves(server)


@pytest.mark.parametrize("unidirectional", [False, True])
async def test_a_second_stream_in_a_session_is_refused(
    server: Server, unidirectional: bool
) -> None:
    """Input: after the session's Flare stream, another bidirectional stream, or a
    unidirectional one (Flare takes one bidirectional stream). Promised: the server stops
    it at once (STOP_SENDING); the server goes on."""
    async with raw_client(server) as client:
        session_id = client.request(b"CONNECT", b"/flare", b"webtransport")
        assert await client.status(session_id) == b"200"
        first = client.open_stream(session_id)
        client._quic.send_stream_data(first, encode_hello(1, 1))  # a Flare client's start
        client.transmit()
        await client.until(  # the server's HELLO: the first stream is the session's
            lambda event: isinstance(event, StreamDataReceived) and event.stream_id == first
        )
        extra = client.open_stream(session_id, unidirectional)
        client._quic.send_stream_data(extra, b"extra")
        client.transmit()
        refused = await client.until(
            lambda event: isinstance(event, StopSendingReceived | ConnectionTerminated)
        )
        assert isinstance(refused, StopSendingReceived)
        assert refused.stream_id == extra != first
    await still_serves(server)


async def test_sessions_past_the_limit_on_one_connection_get_429(server: Server) -> None:
    """Input: MAX_SESSIONS + 1 WebTransport sessions on one QUIC connection. Promised: the
    extra one is refused with 429; the server goes on."""
    from flare_runtime.transports.webtransport import MAX_SESSIONS

    async with raw_client(server) as client:
        sessions = [
            client.request(b"CONNECT", b"/flare", b"webtransport") for _ in range(MAX_SESSIONS + 1)
        ]
        statuses = [await client.status(session) for session in sessions]
        assert statuses == [b"200"] * MAX_SESSIONS + [b"429"]
    await still_serves(server)
