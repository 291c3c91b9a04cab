"""The TCP adapter: Flare's wire protocol on a TCP stream, written against the public adapter API.

The Flare wire protocol needs an ordered, reliable byte stream in each
direction (docs/wire-format.md §1), which TCP is. So the adapter only:

* sends the opening metadata block first, from the client (credentials:
  ``connect(token=..., metadata=...)``; wire-format §1.1), and reads it on the
  server before the connection gets an endpoint;
* moves bytes between an asyncio transport and a Flare endpoint: the endpoint
  writes through `WireTransport` (this adapter), the adapter calls the
  endpoint's `data_received`, `connection_lost`, `pause_writing` and
  `resume_writing`;
* listens (`start_listener`, what ``Server.start(listen={"tcp": ...})``
  calls) and connects (`open_channel`, what ``connect("tcp://...")`` calls),
  on TLS 1.3 when the server is given a certificate and for ``tcps://``.

Calls, streams, deadlines, flow control, keepalive, pushes and go-away are
the endpoint's (`flare_runtime.wire`), as for WebSocket and QUIC.

Routes: the schema's ``transports`` option can name only WEBSOCKET, QUIC and
GRPC (`flare_runtime.Transport`), so a plugin chooses which of those its
connections answer to. This one carries the Flare wire protocol over a
reliable stream with no early data, exactly what WebSocket offers, so it
serves the routes a schema allows on WebSocket (`ROUTES_AS`), and handlers
see ``context.transport`` as `Transport.WEBSOCKET`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from typing import TYPE_CHECKING, cast

from google.protobuf.message import Message

from flare_runtime.client import ConnectOptions
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RemoteProtocolError
from flare_runtime.metadata import Metadata
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.protocol.opening import OpeningBlockReader, encode_opening_block
from flare_runtime.routing import Transport
from flare_runtime.server import TLSFiles, parse_address
from flare_runtime.wire.client import ClientEndpoint, WireChannel
from flare_runtime.wire.endpoint import WireEndpoint
from flare_runtime.wire.listener import EndpointSet
from flare_runtime.wire.server import ServerEndpoint

if TYPE_CHECKING:
    from flare_runtime.server import Server

ROUTES_AS = Transport.WEBSOCKET
"""The schema transport whose routes this one serves (see the module docstring)."""


class _StreamAdapter(asyncio.Protocol):
    """A `WireTransport` over one asyncio stream transport, feeding one endpoint."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.endpoint: WireEndpoint | None = None
        self.peer = ""

    # -------------------------------------------------------------- WireTransport

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self, reason: str = "") -> None:
        """Send what is buffered, then FIN (the Flare CLOSE frame already carried `reason`)."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.peer = f"{peername[0]}:{peername[1]}"

    def data_received(self, data: bytes) -> None:
        if self.endpoint is not None:
            self.endpoint.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.endpoint is not None:
            self.endpoint.pause_writing()

    def resume_writing(self) -> None:
        if self.endpoint is not None:
            self.endpoint.resume_writing()


# ---------------------------------------------------------------------------- server


class _ServerAdapter(_StreamAdapter):
    """The server side: reads the opening block, then hands the stream to a `ServerEndpoint`."""

    def __init__(self, listener: TcpListener) -> None:
        super().__init__()
        self._listener = listener
        settings = listener.server.options.protocol.settings
        self._opening = OpeningBlockReader(settings.max_metadata_size)
        self._open_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        options = self._listener.server.options
        # Above this, pause_writing() makes every sender on the connection wait.
        self.transport.set_write_buffer_limits(high=options.max_write_buffer)  # type: ignore[union-attr]
        # A peer that never sends its opening block must not hold a socket (the
        # Flare handshake timer starts with the endpoint).
        self._open_timer = asyncio.get_running_loop().call_later(
            options.protocol.handshake_timeout, self.abort
        )
        self._listener.opening.add(self)

    def data_received(self, data: bytes) -> None:
        if self.endpoint is None:
            data = self._read_opening(data)
            if not data:
                return
        super().data_received(data)

    def _read_opening(self, data: bytes) -> bytes:
        try:
            opened = self._opening.receive_data(data)
        except RemoteProtocolError:
            self.abort()  # not a Flare client: nothing to say to it
            return b""
        if opened is None:
            return b""
        self._opened()
        self.endpoint = self._listener.endpoint_for(self, opened.metadata)
        return opened.rest

    def _opened(self) -> None:
        self._listener.opening.discard(self)
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._opened()
        super().connection_lost(exc)


class TcpListener:
    """The TCP side of a `Server` (a `flare_runtime.server.Listener`)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.endpoints = EndpointSet()
        self.opening: set[_ServerAdapter] = set()
        """Connections that have not sent their opening block yet."""
        self._listening: asyncio.Server | None = None
        self.port = 0

    def endpoint_for(self, adapter: _ServerAdapter, metadata: Metadata) -> ServerEndpoint:
        """The endpoint of a connection whose opening block has arrived."""
        return self.endpoints.add(ServerEndpoint(self.server, adapter, metadata, ROUTES_AS))

    async def start(self, address: str, tls: TLSFiles | None) -> None:
        host, port = parse_address(address)
        self._listening = await asyncio.get_running_loop().create_server(
            lambda: _ServerAdapter(self),
            host,
            port,
            ssl=tls.server_context() if tls is not None else None,
            backlog=1024,
        )
        self.port = self._listening.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, GOAWAY every client, wait up to `grace` s for calls, close."""
        if self._listening is not None:
            self._listening.close()
        for adapter in list(self.opening):
            adapter.abort()
        await self.endpoints.drain(grace)
        if self._listening is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait_closed(), 1.0)


async def start_listener(server: Server, address: str, *, tls: TLSFiles | None) -> TcpListener:
    """Serve `server` over TCP on `address` (``host:port``); TLS 1.3 when `tls` is given."""
    listener = TcpListener(server)
    await listener.start(address, tls)
    return listener


# ---------------------------------------------------------------------------- client


async def open_channel(url: str, options: ConnectOptions) -> WireChannel:
    """Connect to a ``tcp://host:port`` (or ``tcps://``, TLS 1.3) Flare server.

    Raises `ConnectionClosedError` when the server cannot be reached within
    ``options.open_timeout``, `ConfigurationError` for a URL without host and
    port or an option this transport does not take.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as error:  # a port that is not a number
        raise ConfigurationError(f"bad TCP URL {url!r}: {error}") from None
    if not host or port is None:
        raise ConfigurationError(f"a TCP URL needs a host and a port: {url!r}")
    unknown = sorted(options.extra) + (["compression"] if options.compression else [])
    if unknown:
        raise ConfigurationError(f"unknown TCP connect options: {', '.join(unknown)}")
    opening = encode_opening_block(options.opening_metadata())
    context: ssl.SSLContext | None = None
    if parts.scheme == "tcps":
        context = options.ssl_context
        if context is None:
            context = ssl.create_default_context()
            context.minimum_version = ssl.TLSVersion.TLSv1_3
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(options.open_timeout):
            _, adapter = await loop.create_connection(
                _StreamAdapter,
                host,
                port,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
    except (OSError, TimeoutError) as error:  # ssl.SSLError is an OSError
        detail = "timed out" if isinstance(error, TimeoutError) else str(error)
        raise ConnectionClosedError(f"cannot connect to {url}: {detail}") from None
    adapter.write(opening)  # before the endpoint's HELLO
    push_types: dict[int, type[Message]] = {}
    for table in options.push_tables:
        push_types.update(table.by_id())
    endpoint = ClientEndpoint(
        adapter,
        options.protocol or ProtocolConfig(),
        ROUTES_AS,
        push_types,
        options.max_pending_pushes,
    )
    adapter.endpoint = endpoint
    return WireChannel(endpoint, interceptors=options.interceptors)
