"""WebTransport transport (experimental): the Flare wire protocol on one WebTransport stream.

WebTransport is how a browser reaches a server over HTTP/3 (QUIC) with
streams of its own choosing. Flare uses it as it uses QUIC: one bidirectional
stream per connection, carrying Flare frames exactly as docs/wire-format.md
defines them (calls are multiplexed by Flare, not by streams).

Server: ``await server.start(listen={"webtransport": "0.0.0.0:4433"}, tls=TLSFiles(cert, key))``.
Browser::

    const transport = new WebTransport("https://host:4433/flare?access_token=TOKEN",
        { serverCertificateHashes: [{ algorithm: "sha-256", value: hash }] });  // a dev cert
    await transport.ready;
    const stream = await transport.createBidirectionalStream();   // then Flare frames

(``@flare/client``: ``connect("https://host:4433/flare", { webTransport: {...} })``.)
Python: ``flare_runtime.connect("webtransport://host:4433", ca_file="cert.pem")``.

The mapping (docs/transports/webtransport.md):

* HTTP/3 over QUIC, TLS 1.3 always, ALPN ``h3``, WebTransport as aioquic
  implements it (draft-ietf-webtrans-http3-02: ``SETTINGS_ENABLE_WEBTRANSPORT``,
  ``H3_DATAGRAM``), which Chromium speaks.
* A session is an extended CONNECT (``:protocol = webtransport``) to `PATH`;
  any other request gets 404. Credentials: the ``access_token`` query
  parameter (a browser cannot set headers on a WebTransport request), or an
  ``authorization`` header (what the Python client sends).
* The client opens one bidirectional stream in the session: the Flare
  connection. A second stream, or a reset or end of that stream, ends the
  session; datagrams are ignored. A session that opens no stream within the
  handshake timeout is closed. One QUIC connection may carry up to
  `MAX_SESSIONS` sessions (browsers may pool them).
* The connections serve the routes a schema allows on WebSocket
  (`ROUTES_AS`): a reliable ordered stream without early data, as WebSocket.
* Write back-pressure and the IM's slow-consumer check use the bytes aioquic
  holds unacknowledged on the stream (`_unacknowledged_bytes`, a shim over
  aioquic's internals, tested in tests/runtime/transports/test_webtransport.py).

Certificates: Chromium accepts a self-signed certificate through
``serverCertificateHashes`` only if it is ECDSA and valid for at most 14 days:
``write_dev_certificate(directory, days=10)`` (`flare cert dev --days 10`) and
`certificate_hash`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from google.protobuf.message import Message

from flare_runtime.errors import ConfigurationError, ConnectionClosedError
from flare_runtime.metadata import Metadata
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.routing import Transport
from flare_runtime.transports.aioquic_shim import stream_unacked_bytes
from flare_runtime.wire.client import ClientEndpoint, WireChannel
from flare_runtime.wire.endpoint import WireEndpoint
from flare_runtime.wire.listener import EndpointSet
from flare_runtime.wire.server import ServerEndpoint

if TYPE_CHECKING:
    from flare_runtime.client import ConnectOptions
    from flare_runtime.server import Server, TLSFiles

ROUTES_AS = Transport.WEBSOCKET
"""The schema transport whose routes WebTransport connections serve (see above)."""

PATH = "/flare"
"""Where a WebTransport session for Flare is opened."""

DEFAULT_PORT = 4433
MAX_SESSIONS = 8
"""Most WebTransport sessions on one QUIC connection."""

MAX_PAUSED_INPUT = 16 * 1024 * 1024
"""Most bytes kept while the endpoint has paused reading (Flare flow control keeps it far lower)."""

CLOSE_LINGER = 1.0
"""Seconds `close` waits for the peer to acknowledge what was written before closing anyway."""

SESSION_REFUSED = 0x100
"""WebTransport application error code of a stream Flare does not take (a second stream)."""

_STREAM_GONE = (ValueError, AssertionError)
"""What aioquic raises for writing to, resetting or stopping a stream already ended or reset."""


def certificate_hash(certificate: str | Path) -> bytes:
    """SHA-256 of a PEM certificate's DER form: the browser's ``serverCertificateHashes`` value."""
    pem = Path(certificate).read_text()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()


# ------------------------------------------------------------------------- the pipe


class _StreamPipe:
    """`WireTransport` over one WebTransport stream, feeding one endpoint (both sides)."""

    def __init__(self, link: _H3Link, session_id: int, stream_id: int, high_water: int) -> None:
        self.link = link
        self.session_id = session_id
        self.stream_id = stream_id
        self.endpoint: WireEndpoint | None = None
        self.peer = link.peer
        self._high_water = high_water
        self._write_paused = False
        self._read_paused = False
        self._paused_input: list[bytes] = []
        self._paused_size = 0
        self._closing: asyncio.TimerHandle | None = None
        self.closed = False

    # -------------------------------------------------------------- WireTransport

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.link.quic.send_stream_data(self.stream_id, data)
        self.link.transmit_soon()
        if not self._write_paused and self.get_write_buffer_size() > self._high_water:
            self._write_paused = True
            if self.endpoint is not None:
                self.endpoint.pause_writing()

    def get_write_buffer_size(self) -> int:
        return stream_unacked_bytes(self.link.quic, self.stream_id)

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        pending, self._paused_input, self._paused_size = self._paused_input, [], 0
        for data in pending:
            self.deliver(data)

    def close(self, reason: str = "") -> None:
        """End the stream once the peer has acknowledged what was written (or after a linger)."""
        if self.closed or self._closing is not None:
            return
        if self.get_write_buffer_size() == 0:
            self._finish()
            return
        self._closing = asyncio.get_running_loop().call_later(CLOSE_LINGER, self._finish)

    def abort(self) -> None:
        if self.closed:
            return
        self.link.end_session(self.session_id, error=True)

    # -------------------------------------------------------------- from the link

    def deliver(self, data: bytes) -> None:
        if not data or self.closed:
            return
        endpoint = self.endpoint
        if endpoint is None or self._read_paused:
            self._paused_input.append(data)
            self._paused_size += len(data)
            if self._paused_size > MAX_PAUSED_INPUT:
                self.abort()  # the peer ignored Flare's flow control
            return
        endpoint.data_received(data)

    def acked(self) -> None:
        """aioquic handled a datagram: acknowledgements may have drained the stream."""
        buffered = self.get_write_buffer_size()
        if self._closing is not None and buffered == 0:
            self._finish()
        elif self._write_paused and buffered <= self._high_water // 2:
            self._write_paused = False
            if self.endpoint is not None:
                self.endpoint.resume_writing()

    def lost(self, error: Exception | None) -> None:
        """The stream, its session or the QUIC connection is gone (once)."""
        if self.closed:
            return
        self.closed = True
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.connection_lost(error)

    def _finish(self) -> None:
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        if not self.closed:
            self.link.end_session(self.session_id, error=False)


# ------------------------------------------------------------------------- the link


class _H3Link(QuicConnectionProtocol):
    """One QUIC connection speaking HTTP/3 with WebTransport; its sessions' pipes."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.quic = quic
        self.http: H3Connection | None = None
        self.peer = ""
        self.pipes: dict[int, _StreamPipe] = {}
        """By stream id."""
        self.sessions: set[int] = set()
        """Open sessions, by the id of their CONNECT stream."""
        self._transmit_handle: asyncio.Handle | None = None
        self.terminated = False

    def transmit_soon(self) -> None:
        """Send what was written, once per loop iteration (writes come in bursts)."""
        if self._transmit_handle is None:
            self._transmit_handle = asyncio.get_running_loop().call_soon(self._transmit_now)

    def _transmit_now(self) -> None:
        self._transmit_handle = None
        if not self.terminated:
            self.transmit()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self.peer and isinstance(addr, tuple):
            self.peer = f"{addr[0]}:{addr[1]}"
        super().datagram_received(data, addr)
        for pipe in list(self.pipes.values()):
            pipe.acked()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.http = H3Connection(self.quic, enable_webtransport=True)
        elif isinstance(event, StreamReset | StopSendingReceived):
            pipe = self.pipes.get(event.stream_id)
            if pipe is not None:
                self.end_session(pipe.session_id, error=True)
                return
        elif isinstance(event, ConnectionTerminated):
            self.terminated = True
            reason = event.reason_phrase or f"QUIC error 0x{event.error_code:x}"
            for pipe in list(self.pipes.values()):
                pipe.lost(None if event.error_code == 0 else ConnectionClosedError(reason))
            self.pipes.clear()
            self.sessions.clear()
            return
        elif isinstance(event, StreamDataReceived):
            pipe = self.pipes.get(event.stream_id)
            if pipe is not None and self.quic.configuration.is_client:
                # The client's own stream: aioquic's H3 layer does not frame
                # data on a locally opened WebTransport stream, so it comes here.
                pipe.deliver(event.data)
                if event.end_stream:
                    self.end_session(pipe.session_id, error=False)
                return
        if self.http is None:
            return
        for h3_event in self.http.handle_event(event):
            self.h3_event_received(h3_event)

    def h3_event_received(self, event: H3Event) -> None:
        """One HTTP/3 event (the server and the client each take theirs)."""

    def end_session(self, session_id: int, *, error: bool) -> None:
        """Close `session_id`'s stream and its session; close the connection after the last."""
        for stream_id, pipe in list(self.pipes.items()):
            if pipe.session_id != session_id:
                continue
            del self.pipes[stream_id]
            if not self.terminated:
                with contextlib.suppress(*_STREAM_GONE):
                    if error:
                        self.quic.reset_stream(stream_id, SESSION_REFUSED)
                    else:
                        self.quic.send_stream_data(stream_id, b"", end_stream=True)
            pipe.lost(ConnectionClosedError("WebTransport session reset") if error else None)
        self.sessions.discard(session_id)
        if not self.terminated:
            with contextlib.suppress(*_STREAM_GONE):
                self.quic.send_stream_data(session_id, b"", end_stream=True)
            if not self.sessions:
                self.close()
            else:
                self.transmit_soon()


# ------------------------------------------------------------------------- server


class _ServerLink(_H3Link):
    """The server end of one QUIC connection: accepts sessions, makes endpoints."""

    def __init__(self, quic: QuicConnection, listener: WebTransportListener, **kwargs: Any):
        super().__init__(quic, **kwargs)
        self.listener = listener
        self.waiting: dict[int, tuple[Metadata, asyncio.TimerHandle]] = {}
        """Sessions accepted whose Flare stream has not arrived yet."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listener.links.add(self)
        if not self.listener.accepting:
            self.close(reason_phrase="server shutting down")

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.links.discard(self)
        for _, timer in self.waiting.values():
            timer.cancel()
        super().connection_lost(exc)

    def h3_event_received(self, event: H3Event) -> None:
        assert self.http is not None
        if isinstance(event, HeadersReceived):
            self._request(event)
        elif isinstance(event, WebTransportStreamDataReceived):
            self._stream_data(event)
        elif (
            isinstance(event, DataReceived)
            and event.stream_ended
            and event.stream_id in self.sessions
        ):
            self.end_session(event.stream_id, error=False)  # the client closed the session

    def _request(self, event: HeadersReceived) -> None:
        assert self.http is not None
        headers = {name: value for name, value in event.headers}
        target = urllib.parse.urlsplit(headers.get(b":path", b"").decode("latin-1"))
        if (
            headers.get(b":method") != b"CONNECT"
            or headers.get(b":protocol") != b"webtransport"
            or target.path != PATH
        ):
            self.http.send_headers(event.stream_id, [(b":status", b"404")], end_stream=True)
            return
        if len(self.sessions) >= MAX_SESSIONS or not self.listener.accepting:
            self.http.send_headers(event.stream_id, [(b":status", b"429")], end_stream=True)
            return
        authorization = headers.get(b"authorization")
        tokens = urllib.parse.parse_qs(target.query).get("access_token", [])
        metadata = Metadata()
        if authorization is not None:
            metadata = Metadata([("authorization", authorization.decode("latin-1"))])
        elif tokens:
            metadata = Metadata([("authorization", f"Bearer {tokens[0]}")])
        self.http.send_headers(
            event.stream_id,
            [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")],
        )
        self.sessions.add(event.stream_id)
        timeout = self.listener.server.options.protocol.handshake_timeout
        timer = asyncio.get_running_loop().call_later(
            timeout, functools.partial(self.end_session, event.stream_id, error=True)
        )
        self.waiting[event.stream_id] = (metadata, timer)

    def _stream_data(self, event: WebTransportStreamDataReceived) -> None:
        pipe = self.pipes.get(event.stream_id)
        if pipe is None:
            waiting = self.waiting.pop(event.session_id, None)
            bidirectional_from_client = event.stream_id % 4 == 0
            if waiting is None or not bidirectional_from_client:
                # An unknown session, a second stream or a unidirectional one.
                self._refuse_stream(event.stream_id)
                return
            metadata, timer = waiting
            timer.cancel()
            server = self.listener.server
            pipe = _StreamPipe(
                self, event.session_id, event.stream_id, server.options.max_write_buffer
            )
            self.pipes[event.stream_id] = pipe
            pipe.endpoint = self.listener.endpoints.add(
                ServerEndpoint(server, pipe, metadata, ROUTES_AS)
            )
        pipe.deliver(event.data)
        if event.stream_ended:
            self.end_session(pipe.session_id, error=False)

    def _refuse_stream(self, stream_id: int) -> None:
        """Stop the peer sending on `stream_id` (and end our side of a bidirectional one)."""
        with contextlib.suppress(*_STREAM_GONE):
            self.quic.stop_stream(stream_id, SESSION_REFUSED)
            if stream_id % 4 == 0:
                self.quic.reset_stream(stream_id, SESSION_REFUSED)
        self.transmit_soon()


class WebTransportListener:
    """A Flare server's WebTransport listener: one UDP socket, HTTP/3 on it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.endpoints = EndpointSet()
        self.links: set[_ServerLink] = set()
        self.accepting = True
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, address: str, tls: TLSFiles) -> None:
        from flare_runtime.server import parse_address  # noqa: PLC0415 -- server imports us lazily

        host, port = parse_address(address)
        configuration = QuicConfiguration(
            is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
        )
        try:
            configuration.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ValueError) as error:
            raise ConfigurationError(
                f"cannot load the WebTransport certificate/key: {error}"
            ) from None
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: QuicServer(
                    configuration=configuration,
                    create_protocol=lambda quic, **kwargs: _ServerLink(quic, self, **kwargs),
                ),
                sock=sock,
            )
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        """Go away on every connection, let calls finish for up to `grace` s, close."""
        self.accepting = False
        await self.endpoints.drain(grace)
        for link in list(self.links):
            link.close(reason_phrase="server shutting down")
        await asyncio.sleep(0)  # let the CONNECTION_CLOSE datagrams leave
        if self._transport is not None:
            self._transport.close()


async def start_listener(
    server: Server, address: str, *, tls: TLSFiles | None
) -> WebTransportListener:
    """Serve `server` over WebTransport on `address` (``host:port``); HTTP/3 needs `tls`."""
    if tls is None:
        raise ConfigurationError(
            "WebTransport runs on HTTP/3, always with TLS: give a certificate (a browser "
            "takes a self-signed one by its hash if it is ECDSA and valid for at most 14 "
            "days: `flare cert dev --days 10`)"
        )
    listener = WebTransportListener(server)
    await listener.start(address, tls)
    return listener


# ------------------------------------------------------------------------- client


class _ClientLink(_H3Link):
    """The client end: opens one session and its Flare stream."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.http = H3Connection(quic, enable_webtransport=True)
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated) and not self.answer.done():
            self.answer.set_exception(
                ConnectionClosedError(event.reason_phrase or f"QUIC error 0x{event.error_code:x}")
            )
        if isinstance(event, ProtocolNegotiated):
            return  # the H3 connection exists from the start on a client
        super().quic_event_received(event)

    def h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and not self.answer.done():
            status = dict(event.headers).get(b":status", b"0")
            self.answer.set_result(int(status))
        elif (
            isinstance(event, DataReceived)
            and event.stream_ended
            and event.stream_id in self.sessions
        ):
            self.end_session(event.stream_id, error=False)  # the server closed the session


_EXTRA_OPTIONS = frozenset({"ca_file", "verify", "server_name", "path", "max_write_buffer"})


async def open_channel(url: str, options: ConnectOptions) -> WireChannel:
    """Connect to ``webtransport://host[:port][/path]`` (`flare_runtime.connect` calls this).

    Options, passed to `connect` as keywords: ``ca_file`` (PEM of the CA or
    self-signed certificate to trust), ``verify=False`` (development only),
    ``server_name``. Raises `ConnectionClosedError` when no session opens
    within ``options.open_timeout`` (unreachable, untrusted certificate, a
    refused request), `ConfigurationError` for a bad URL or an unknown option.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "webtransport" or not parts.hostname:
        raise ConfigurationError(f"expected webtransport://host:port, got {url!r}")
    unknown = set(options.extra) - _EXTRA_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown WebTransport connect options: {', '.join(sorted(unknown))}"
        )
    extra = options.extra
    host, port = parts.hostname, parts.port or DEFAULT_PORT
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=65536,
        server_name=str(extra.get("server_name", host)),
    )
    if extra.get("ca_file") is not None:
        configuration.load_verify_locations(cafile=str(extra["ca_file"]))
    if extra.get("verify") is False:
        configuration.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    link: _ClientLink | None = None
    try:
        async with asyncio.timeout(options.open_timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _, _, _, address = infos[0]
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _ClientLink(QuicConnection(configuration=configuration)),
                family=family,
            )
            link = protocol
            link.peer = f"{host}:{port}"
            link.connect(address)
            await link.wait_connected()
            session_id = link.quic.get_next_available_stream_id()
            assert link.http is not None
            headers = [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", f"{host}:{port}".encode()),
                (b":path", (parts.path or PATH).encode()),
                (b"sec-webtransport-http3-draft02", b"1"),
            ]
            headers += [
                (key.encode(), value.encode())
                for key, value in options.opening_metadata().entries()
                if isinstance(value, str)
            ]
            link.http.send_headers(session_id, headers)
            link.transmit()
            status = await link.answer
    except (OSError, ConnectionError, TimeoutError, ConnectionClosedError) as error:
        if link is not None:
            link.close()
        detail = "timed out" if isinstance(error, TimeoutError) else str(error)
        raise ConnectionClosedError(f"cannot connect to {url}: {detail}") from None
    if status != 200:
        link.close()
        raise ConnectionClosedError(f"cannot connect to {url}: the server answered {status}")
    link.sessions.add(session_id)
    stream_id = link.http.create_webtransport_stream(session_id)
    pipe = _StreamPipe(link, session_id, stream_id, int(extra.get("max_write_buffer", 1 << 20)))
    link.pipes[stream_id] = pipe
    push_types: dict[int, type[Message]] = {}
    for table in options.push_tables:
        push_types.update(table.by_id())
    endpoint = ClientEndpoint(
        pipe,
        options.protocol or ProtocolConfig(),
        ROUTES_AS,
        push_types,
        options.max_pending_pushes,
    )
    pipe.endpoint = endpoint
    return WireChannel(endpoint, interceptors=options.interceptors)
