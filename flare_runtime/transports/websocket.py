"""WebSocket transport: the Flare wire protocol in binary WebSocket messages.

A thin adapter: websockets' sans-I/O protocol objects (`ServerProtocol`,
`ClientProtocol`) do the WebSocket framing inside a bare `asyncio.Protocol`,
and the bytes of every binary message go to a `WireEndpoint`
(`flare_runtime.wire`), which runs the Flare protocol, calls and
keepalive for every transport alike. No task and no queue per connection:
an idle connection is a socket, two small protocol objects and the
endpoint's state (see docs/transports/websocket.md for the measured cost).

The Flare byte stream is carried in binary messages: each batch of output
the endpoint flushes is one message; a receiver treats the concatenated
payloads as one stream (message boundaries carry no meaning), so a frame may
span messages. Text messages are a protocol error (close 1003).
permessage-deflate is off unless asked for (``compression="deflate"``):
compressing small protobuf messages costs more CPU than it saves bytes on
most links.

Hot path: without extensions, the adapter writes binary frames itself and
reads complete FIN+BINARY frames itself while websockets has nothing pending
(`flare_runtime.transports.websocket_fastpath`); everything else (control
frames, fragments, partial frames, errors, the close handshake) goes through
websockets.

Connection-level credentials travel in the opening HTTP request:
``Authorization: Bearer <token>`` and ``x-flare-*`` headers become the
connection's opening metadata (browsers, which cannot set headers on a
WebSocket, may pass ``?access_token=...`` in the URL instead); ``x-flare-*-bin``
headers carry base64, as gRPC's ``-bin`` headers do. An upgrade whose headers
cannot become metadata is refused before ``101 Switching Protocols``: more than
one credential (two ``Authorization`` headers, or one plus ``access_token``)
with ``401``, a ``-bin`` value that is not base64 with ``400``
(`upgrade_metadata`, which the ASGI mount, `flare_runtime.asgi`, shares).
Refusals and failures a client causes are logged through the server's
`PeerLog`, rate-limited.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import http
import logging
import re
import ssl
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from flare_runtime.client import ConnectOptions
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, describe
from flare_runtime.metadata import Metadata, MetadataValue
from flare_runtime.peer_log import PeerLog
from flare_runtime.protocol.config import ProtocolConfig, Settings
from flare_runtime.protocol.frames import HEADER_SIZE
from flare_runtime.routing import Transport
from flare_runtime.server import TLSFiles, parse_address
from flare_runtime.transports.websocket_fastpath import (
    read_binary_frames,
    websockets_between_frames,
    write_binary_frame,
)
from flare_runtime.wire.client import ClientEndpoint, WireChannel
from flare_runtime.wire.endpoint import WireEndpoint
from flare_runtime.wire.listener import EndpointSet
from flare_runtime.wire.server import ServerEndpoint

if TYPE_CHECKING:
    from flare_runtime.server import Server

logger = logging.getLogger("flare_runtime.transports.websocket")

FORWARDED_HEADER_PREFIX = "x-flare-"
"""Handshake headers with this prefix are part of the connection's opening metadata."""

_HEADER_VALUE = re.compile(r"[\x09\x20-\x7e\x80-\xff]*")
"""What an HTTP header value may hold (RFC 9110 field-value, as websockets checks it)."""

MAX_WEBSOCKET_MESSAGE = 1024 * 1024
"""Output is cut into WebSocket messages of at most this size, at Flare frame
boundaries (docs/wire-format.md: a message holds whole frames); a single frame
larger than this travels alone.

What a peer accepts per WebSocket message is `message_limit(settings)`: its
largest Flare frame, so websockets never buffers more for one peer than the
Flare protocol itself would.
"""


def message_limit(settings: Settings) -> int:
    """The largest WebSocket message to accept from a peer bound by `settings`."""
    largest_frame = max(settings.max_message_size, settings.max_frame_size) + HEADER_SIZE
    return max(MAX_WEBSOCKET_MESSAGE, largest_frame)


class UpgradeRefusedError(Exception):
    """An upgrade request that cannot become a Flare connection: answer `status`, `reason`."""

    def __init__(self, status: http.HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def handshake_metadata(request: Request) -> Metadata:
    """The connection's opening metadata from the HTTP upgrade request (`upgrade_metadata`)."""
    query = urllib.parse.urlsplit(request.path).query
    return upgrade_metadata(request.headers.raw_items(), query)


def upgrade_metadata(headers: Iterable[tuple[str, str]], query: str) -> Metadata:
    """The connection's opening metadata from an upgrade request's `headers` and `query`.

    `headers` are the request's (name, value) pairs in order, names in any case;
    `query` its query string. What every listener of the WebSocket endpoint uses,
    this one and the ASGI mount (`flare_runtime.asgi`): ``Authorization`` (or one
    ``access_token`` parameter, as ``authorization: Bearer <token>``) and every
    ``x-flare-*`` header (``-bin`` ones base64-decoded).

    Raises `UpgradeRefusedError`: 401 when the request carries more than one
    credential (``Authorization`` headers and ``access_token`` parameters
    together: which one is meant is ambiguous, so none is picked), 400 when an
    ``x-flare-*-bin`` value is not base64 or a header cannot be metadata.
    """
    pairs: list[tuple[str, MetadataValue]] = []
    headers = [(name.lower(), value) for name, value in headers]
    authorizations = [value for name, value in headers if name == "authorization"]
    tokens = urllib.parse.parse_qs(query).get("access_token", []) if query else []
    if len(authorizations) + len(tokens) > 1:
        raise UpgradeRefusedError(
            http.HTTPStatus.UNAUTHORIZED,
            f"ambiguous credentials: {len(authorizations)} Authorization header(s) and "
            f"{len(tokens)} access_token parameter(s), expected one",
        )
    if authorizations:
        if authorizations[0]:
            pairs.append(("authorization", authorizations[0]))
    elif tokens:
        pairs.append(("authorization", f"Bearer {tokens[0]}"))
    for name, value in headers:
        if name.startswith(FORWARDED_HEADER_PREFIX):
            if name.endswith("-bin"):
                pairs.append((name, _base64_header(name, value)))
            else:
                pairs.append((name, value))
    try:
        return Metadata(pairs)
    except ValueError as error:
        raise UpgradeRefusedError(http.HTTPStatus.BAD_REQUEST, str(error)) from None


def _base64_header(name: str, value: str) -> bytes:
    """A ``-bin`` header's bytes: base64, padding optional (gRPC's rule)."""
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise UpgradeRefusedError(
            http.HTTPStatus.BAD_REQUEST, f"header {name} is not base64"
        ) from None


class _WebSocketAdapter(asyncio.Protocol):
    """Moves bytes between an asyncio transport, websockets' framing and an endpoint.

    Subclasses differ only in the handshake. After it, `write` sends one
    binary message and every received binary/continuation frame's payload
    goes to `endpoint.data_received`.
    """

    protocol: ServerProtocol | ClientProtocol

    _masking = False
    """Clients mask every frame they send (RFC 6455 §5.3)."""
    _max_message = MAX_WEBSOCKET_MESSAGE
    peer_log: PeerLog | None = None
    """Rate-limits the log lines the peer can cause (the server's; None on a client)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.endpoint: WireEndpoint | None = None
        self.peer = ""

    # -------------------------------------------------------------- WireTransport

    max_write_size = MAX_WEBSOCKET_MESSAGE
    """The endpoint cuts its output at frame boundaries into writes of at most this size."""

    def write(self, data: bytes) -> None:
        """Send `data` (whole Flare frames, at most `max_write_size` bytes but for a
        single larger frame) as one binary message."""
        protocol = self.protocol
        transport = self.transport
        if protocol.state is not State.OPEN or transport is None:
            return
        if protocol.extensions:
            protocol.send_binary(data)
            transport.writelines(protocol.data_to_send())
            return
        write_binary_frame(transport, data, self._masking)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self, reason: str = "") -> None:
        """Send a WebSocket close (after any queued data) and close the socket."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.protocol.state is State.OPEN:
            # 1000: the Flare CLOSE frame, already sent, carries the real reason.
            self.protocol.send_close(1000, reason[:100])
            self._flush()
        # The server closes TCP first (RFC 6455 §7.1.1); a client waits
        # briefly for it, then closes too.
        transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but
        # implement the same interface.
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.peer = f"{peername[0]}:{peername[1]}"
        elif peername:
            self.peer = str(peername)

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as error:
            # A bug reached by this peer's input: close this connection only,
            # and log it rate-limited (asyncio would log every occurrence).
            self._input_failed(error)

    def _input_failed(self, error: Exception) -> None:
        message = "WebSocket connection from %s failed on its input; closing it"
        if self.peer_log is not None:
            self.peer_log.log(logger, logging.ERROR, message, self.peer, exc_info=error)
        else:
            logger.error(message, self.peer, exc_info=error)
        if self.transport is not None:
            self.transport.abort()

    def _receive(self, data: bytes) -> None:
        protocol = self.protocol
        if (
            self.endpoint is not None
            and protocol.state is State.OPEN
            and not protocol.extensions
            and websockets_between_frames(protocol)
        ):
            # Complete, final, binary frames are read by hand; anything else
            # goes through websockets from the first such byte on.
            data = read_binary_frames(self, data, not self._masking, self._max_message)
            if not data:
                return
        if protocol.reader.eof:
            # Closing a TLS transport (e.g. for a Flare CLOSE just handled above)
            # can run asyncio's TLS shutdown, and so `eof_received`, before the
            # rest of `data` is read; nothing may follow EOF, and websockets
            # would raise EOFError into the transport.
            return
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()
        for event in events:
            if isinstance(event, Frame):
                self._frame_received(event)
            else:
                self._handshake_event(event)
        if protocol.close_expected() and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        endpoint = self.endpoint
        self.endpoint = None
        if endpoint is not None:
            endpoint.connection_lost(exc)
        self._handshake_failed(exc)

    def pause_writing(self) -> None:
        if self.endpoint is not None:
            self.endpoint.pause_writing()

    def resume_writing(self) -> None:
        if self.endpoint is not None:
            self.endpoint.resume_writing()

    # -------------------------------------------------------------- internals

    def _frame_received(self, frame: Frame) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        opcode = frame.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.CONT:
            endpoint.data_received(bytes(frame.data))
        elif opcode is Opcode.TEXT:
            self.protocol.fail(1003, "Flare speaks binary messages only")
            self._flush()
        # PING/PONG are answered by websockets; CLOSE ends in connection_lost.

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof() and not transport.is_closing():
                transport.write_eof()

    def _handshake_event(self, event: Any) -> None:
        raise NotImplementedError

    def _handshake_failed(self, exc: BaseException | None) -> None:
        """Hook for the client: report a failed or aborted handshake."""


class ServerAdapter(_WebSocketAdapter):
    """One accepted WebSocket connection on the server."""

    def __init__(
        self,
        endpoint_factory: Callable[[ServerAdapter, Metadata], WireEndpoint],
        *,
        compression: str | None = None,
        open_timeout: float = 10.0,
        write_buffer: int | None = None,
        max_message: int = MAX_WEBSOCKET_MESSAGE,
        peer_log: PeerLog | None = None,
        protocol_logger: logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        super().__init__()
        self._endpoint_factory = endpoint_factory
        self._write_buffer = write_buffer
        self._max_message = max_message
        self.peer_log = peer_log
        extensions = [ServerPerMessageDeflateFactory()] if compression == "deflate" else None
        self.protocol = ServerProtocol(
            extensions=extensions, max_size=max_message, logger=protocol_logger
        )
        self._open_timeout = open_timeout
        self._open_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._write_buffer is not None:
            # Above this, pause_writing() makes every sender on the connection
            # wait (ServerOptions.max_write_buffer).
            self.transport.set_write_buffer_limits(high=self._write_buffer)  # type: ignore[union-attr]
        # A peer that never completes the HTTP upgrade must not hold a socket
        # forever (the Flare handshake timer starts only after the upgrade).
        self._open_timer = asyncio.get_running_loop().call_later(
            self._open_timeout, self._upgrade_timed_out
        )

    def _upgrade_timed_out(self) -> None:
        self._open_timer = None
        if self.endpoint is None and self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        super().connection_lost(exc)

    def _handshake_event(self, event: Any) -> None:
        if not isinstance(event, Request) or self.transport is None:
            return
        protocol = self.protocol
        assert isinstance(protocol, ServerProtocol)
        response = protocol.accept(event)
        metadata: Metadata | None = None
        if response.status_code == 101:
            try:
                metadata = handshake_metadata(event)
            except UpgradeRefusedError as refused:
                # Refused before 101: the client sees the status and the reason.
                response = protocol.reject(refused.status, f"{refused.reason}\n")
                message = "refused WebSocket upgrade from %s: %s"
                if self.peer_log is not None:
                    self.peer_log.log(logger, logging.INFO, message, self.peer, refused.reason)
        protocol.send_response(response)
        # Everything the connection needs from the request is in `metadata`
        # now. websockets' ServerProtocol.parse() keeps the request in a local
        # of its generator, alive as long as the connection: emptied, its
        # headers stop costing ~2 KB per idle connection.
        event.headers.clear()
        self._flush()
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        if metadata is None:
            self.transport.close()
            return
        self.endpoint = self._endpoint_factory(self, metadata)


class ClientAdapter(_WebSocketAdapter):
    """The client side: sends the upgrade request, then hands over to the endpoint."""

    _masking = True

    def __init__(
        self,
        url: str,
        endpoint_factory: Callable[[ClientAdapter], WireEndpoint],
        *,
        headers: list[tuple[str, str]],
        compression: str | None = None,
        max_message: int = MAX_WEBSOCKET_MESSAGE,
    ) -> None:
        super().__init__()
        self._max_message = max_message
        extensions = [ClientPerMessageDeflateFactory()] if compression == "deflate" else None
        self.protocol = ClientProtocol(parse_uri(url), extensions=extensions, max_size=max_message)
        self._headers = headers
        self._endpoint_factory = endpoint_factory
        self.opened: asyncio.Future[WireEndpoint] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        protocol = self.protocol
        assert isinstance(protocol, ClientProtocol)
        request = protocol.connect()
        for name, value in self._headers:
            request.headers[name] = value
        protocol.send_request(request)
        self._flush()

    def _handshake_event(self, event: Any) -> None:
        if not isinstance(event, Response) or self.opened.done():
            return
        protocol = self.protocol
        if protocol.handshake_exc is not None or protocol.state is not State.OPEN:
            self.opened.set_exception(
                ConnectionClosedError(f"WebSocket handshake failed: {_refusal(event)}")
            )
            if self.transport is not None:
                self.transport.close()
            return
        self.endpoint = self._endpoint_factory(self)
        self.opened.set_result(self.endpoint)

    def _handshake_failed(self, exc: BaseException | None) -> None:
        if not self.opened.done():
            reason = describe(exc) if exc is not None else "the server closed the connection"
            self.opened.set_exception(
                ConnectionClosedError(f"connection lost during the WebSocket handshake: {reason}")
            )


def _refusal(response: Response) -> str:
    """What a refused upgrade response says: its status, and the first line of its body."""
    text = f"HTTP {response.status_code} {response.reason_phrase}"
    body = response.body.decode("utf-8", "replace").strip().splitlines() if response.body else []
    if body and len(body[0]) <= 200:
        text += f": {body[0]}"
    return text


async def serve_websocket(
    host: str,
    port: int,
    endpoint_factory: Callable[[ServerAdapter, Metadata], WireEndpoint],
    *,
    ssl_context: ssl.SSLContext | None = None,
    compression: str | None = None,
    backlog: int = 1024,
    open_timeout: float = 10.0,
    write_buffer: int | None = None,
    max_message: int = MAX_WEBSOCKET_MESSAGE,
    peer_log: PeerLog | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on host:port; each accepted connection gets an endpoint from `endpoint_factory`.

    A connection whose HTTP upgrade is not done within `open_timeout` seconds
    is dropped. Log lines clients cause go through `peer_log` (rate-limited).
    Returns the started `asyncio.Server`; `close()` it to stop accepting. The
    port is this process's alone (`OSError` "address already in use" when
    taken) unless `reuse_port` (``SO_REUSEPORT``: worker processes sharing it,
    the kernel spreading connections over them).
    """
    loop = asyncio.get_running_loop()
    # websockets logs a line per connection (open, rejected): through the PeerLog too.
    protocol_logger = (
        peer_log.adapter(logging.getLogger("websockets.server")) if peer_log is not None else None
    )
    return await loop.create_server(
        lambda: ServerAdapter(
            endpoint_factory,
            compression=compression,
            open_timeout=open_timeout,
            write_buffer=write_buffer,
            max_message=max_message,
            peer_log=peer_log,
            protocol_logger=protocol_logger,
        ),
        host,
        port,
        ssl=ssl_context,
        backlog=backlog,
        reuse_port=reuse_port or None,
    )


async def open_websocket(
    url: str,
    endpoint_factory: Callable[[ClientAdapter], WireEndpoint],
    *,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext | None = None,
    compression: str | None = None,
    open_timeout: float = 10.0,
    max_message: int = MAX_WEBSOCKET_MESSAGE,
) -> WireEndpoint:
    """Connect to a ``ws://`` or ``wss://`` URL; return the endpoint once the upgrade is done.

    Raises `ConnectionClosedError` when the connection or the handshake fails.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ConnectionClosedError(f"bad WebSocket URL {url!r}: {exc}") from None
    if uri.secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_3
    loop = asyncio.get_running_loop()
    adapter: ClientAdapter | None = None

    def factory() -> ClientAdapter:
        nonlocal adapter
        adapter = ClientAdapter(
            url, endpoint_factory, headers=headers, compression=compression, max_message=max_message
        )
        return adapter

    try:
        async with asyncio.timeout(open_timeout):
            await loop.create_connection(
                factory,
                uri.host,
                uri.port,
                ssl=ssl_context if uri.secure else None,
                server_hostname=uri.host if uri.secure else None,
            )
            assert adapter is not None
            return await adapter.opened
    except TimeoutError:  # before OSError, its base class
        if adapter is not None:
            adapter.abort()
        raise ConnectionClosedError(f"cannot connect to {url}: timed out") from None
    except (OSError, InvalidHandshake, ssl.SSLError) as exc:
        raise ConnectionClosedError(f"cannot connect to {url}: {describe(exc)}") from None


# ---------------------------------------------------------------------------- server/client glue


class WebSocketListener:
    """The WebSocket side of a `Server`: accepts connections, drains them on shutdown."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._endpoints = EndpointSet()
        self._listening: asyncio.Server | None = None
        self.port = 0

    def _endpoint(self, adapter: ServerAdapter, metadata: Metadata) -> WireEndpoint:
        return self._endpoints.add(
            ServerEndpoint(self._server, adapter, metadata, Transport.WEBSOCKET)
        )

    async def start(self, address: str, tls: TLSFiles | None) -> None:
        host, port = parse_address(address)
        options = self._server.options
        self._listening = await serve_websocket(
            host,
            port,
            self._endpoint,
            ssl_context=tls.server_context() if tls is not None else None,
            compression=options.compression,
            open_timeout=options.protocol.handshake_timeout,
            write_buffer=options.max_write_buffer,
            max_message=message_limit(options.protocol.settings),
            peer_log=self._server.peer_log,
            reuse_port=self._server.shared_ports is not None,
        )
        self.port = self._listening.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, GOAWAY every client, wait up to `grace` s for calls, close."""
        if self._listening is not None:
            self._listening.close()
        await self._endpoints.drain(grace)
        if self._listening is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listening.wait_closed(), 1.0)


async def start_listener(
    server: Server, address: str, *, tls: TLSFiles | None
) -> WebSocketListener:
    """Serve `server` over WebSocket on `address` (``host:port``); TLS when `tls` is given."""
    listener = WebSocketListener(server)
    await listener.start(address, tls)
    return listener


async def open_channel(url: str, options: ConnectOptions) -> WireChannel:
    """Connect to a ``ws://`` / ``wss://`` Flare server and return its channel.

    Raises `ConfigurationError` for a connect option WebSocket does not take
    (a misspelt option must not be ignored).
    """
    if options.extra:
        unknown = ", ".join(sorted(options.extra))
        raise ConfigurationError(f"unknown WebSocket connect options: {unknown}")
    headers: list[tuple[str, str]] = []
    if options.token is not None:
        headers.append(("Authorization", f"Bearer {options.token}"))
    for key, value in options.metadata.entries():
        # A -bin key's bytes travel as base64 (gRPC's rule for binary headers).
        text = base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        forwarded = key
        if not key.startswith(FORWARDED_HEADER_PREFIX) and key != "authorization":
            forwarded = FORWARDED_HEADER_PREFIX + key
        headers.append((forwarded, text))
    for name, value in headers:
        # Checked here: websockets would raise inside connection_made, and the
        # connect would then wait for its open timeout.
        if not _HEADER_VALUE.fullmatch(value):
            raise ConfigurationError(
                f"{name} cannot travel in an HTTP header: its value has a control "
                "character or a character beyond Latin-1"
            )
    push_types: dict[int, type[Message]] = {}
    for table in options.push_tables:
        push_types.update(table.by_id())
    config = options.protocol or ProtocolConfig()

    def make_endpoint(adapter: ClientAdapter) -> ClientEndpoint:
        return ClientEndpoint(
            adapter, config, Transport.WEBSOCKET, push_types, options.max_pending_pushes
        )

    endpoint = await open_websocket(
        url,
        make_endpoint,
        headers=headers,
        ssl_context=options.ssl_context,
        compression=options.compression,
        open_timeout=options.open_timeout,
        max_message=message_limit(config.settings),
    )
    assert isinstance(endpoint, ClientEndpoint)
    return WireChannel(endpoint, interceptors=options.interceptors)
