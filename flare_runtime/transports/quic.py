"""QUIC transport: the Flare wire protocol on one QUIC stream per connection (aioquic).

Server: ``await server.serve(quic="0.0.0.0:8443", tls=TLSFiles(cert, key))`` or
``flare serve app:server --quic :8443 --tls-cert cert.pem --tls-key key.pem``.
Client: ``flare_runtime.connect("quic://host:8443", ca_file="cert.pem")``.

The mapping (docs/transports/quic.md has the why and the measurements):

* TLS 1.3 always (QUIC has no plaintext mode); ALPN is ``flare/<wire protocol
  version>`` (`ALPN`); a client offering anything else fails the handshake
  and only its connection is closed.
* The client opens **one bidirectional stream** (stream 0) and the whole Flare
  connection travels on it: first the *opening metadata block* (credentials;
  what HTTP headers carry on WebSocket), then Flare frames exactly as
  docs/wire-format.md defines them. Calls are multiplexed by the Flare
  protocol, not by QUIC streams: a stream per call costs aioquic ~2.6x the CPU
  per message (measured), and Flare already has per-call flow control.
* Any other stream, a reset or an end of stream 0, or a malformed opening
  block closes that connection with QUIC application error 0x1
  (`FLARE_PROTOCOL_ERROR`); a Flare protocol error closes it through the
  endpoint with a Flare CLOSE frame first.
* **0-RTT**: the server issues single-use session tickets; a client given a
  ticket store (`tickets=`, default: one `MemoryTicketStore` per process)
  resumes with the newest ticket and sends its first flight as early data --
  the opening block, HELLO and calls to *idempotent* routes only. The first
  call to a non-idempotent route, and everything after it, is held until the
  handshake completes, on the client and (against a misbehaving client or a
  replay) again on the server (`quic_early_data`).
* **Migration**: the server follows a client whose address changes (NAT
  rebinding, a new network): aioquic validates the new path and calls go on.
  `QuicChannel.rebind` moves a client to a new local port on purpose.
* **Keepalive / idle timeout**: the Flare endpoint's PING/PONG keepalive runs
  over QUIC as over WebSocket; QUIC's own idle timeout (`idle_timeout`,
  default 60 s, negotiated down to the smaller of both sides) closes a
  connection that went silent without a word.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import SessionTicket
from google.protobuf.message import Message

from flare_runtime.errors import (
    ConfigurationError,
    ConnectionClosedError,
    RemoteProtocolError,
    describe,
)
from flare_runtime.interceptors import ClientInterceptor
from flare_runtime.protocol.config import PROTOCOL_VERSION, ProtocolConfig
from flare_runtime.protocol.opening import OpeningBlockReader, encode_opening_block
from flare_runtime.routing import Route, Transport
from flare_runtime.transports.quic_early_data import EarlyDataGate
from flare_runtime.transports.quic_link import (
    FLARE_INTERNAL_ERROR,
    FLARE_PROTOCOL_ERROR,
    NO_ERROR,
    AdmittingQuicServer,
    ClientLink,
    QuicLink,
    ServerLink,
    serve_links,
)
from flare_runtime.transports.quic_settings import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_TUNING,
    QuicServerSettings,
)
from flare_runtime.transports.quic_tickets import (
    MemoryTicketStore,
    ServerTicketStore,
    TicketStore,
)
from flare_runtime.wire.client import ClientEndpoint, WireChannel
from flare_runtime.wire.endpoint import WireEndpoint
from flare_runtime.wire.listener import EndpointSet
from flare_runtime.wire.server import ServerEndpoint

if TYPE_CHECKING:
    from flare_runtime.client import ConnectOptions
    from flare_runtime.server import Server, TLSFiles

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

ALPN = f"flare/{PROTOCOL_VERSION}"
"""The one ALPN protocol id a Flare QUIC endpoint offers and accepts."""

DEFAULT_PORT = 8443


CLOSE_LINGER = 1.0
"""Seconds `close` waits for the peer to acknowledge what was written before closing anyway."""

DEFAULT_TICKETS = MemoryTicketStore()
"""The process-wide client ticket store used when `connect` is given none."""


# ------------------------------------------------------------------------- adapter


class _QuicWireTransport:
    """`WireTransport` over a `QuicLink`: the endpoint's byte pipe, plus the QUIC extras.

    Both sides: write/close/abort, write backpressure from the bytes aioquic holds
    unacknowledged, read pausing, and the early-data gate (outgoing on a client,
    incoming on a server) for as long as the handshake is incomplete.
    """

    def __init__(
        self,
        link: QuicLink,
        *,
        high_water: int,
        gate: EarlyDataGate | None,
        max_paused_input: int,
    ) -> None:
        self.link = link
        self._max_paused_input = max_paused_input
        """Most bytes kept while the endpoint has paused reading: QUIC grants the peer
        credit as data arrives, so input cannot be refused, only held, up to this."""
        self.endpoint: WireEndpoint | None = None
        self.peer = ""
        self.gate = gate
        self._early_calls_held = 0
        self._early_calls_passed = 0
        self._high_water = high_water
        self._write_paused = False
        self._read_paused = False
        self._paused_input: list[bytes] = []
        self._paused_size = 0
        self._closing: asyncio.TimerHandle | None = None
        self._close_reason = ""

    @property
    def early_calls_passed(self) -> int:
        """Calls (to idempotent routes) that went through in early data."""
        return self.gate.passed_calls if self.gate is not None else self._early_calls_passed

    @property
    def early_calls_held(self) -> int:
        """Non-idempotent calls held until the handshake completed (0 or 1)."""
        return self.gate.held_calls if self.gate is not None else self._early_calls_held

    # -------------------------------------------------------------- WireTransport

    def write(self, data: bytes) -> None:
        gate = self.gate
        if gate is not None and self.link.is_client:
            try:
                data = gate.feed(data)
            except RemoteProtocolError:  # over 4 MiB written before the handshake
                self.link.abort(FLARE_INTERNAL_ERROR, "too much data before the handshake")
                return
            if not data:
                return
        link = self.link
        link.write(data)
        if not self._write_paused and link.buffered_bytes > self._high_water:
            self._write_paused = True
            link.watch_acks = True
            if self.endpoint is not None:
                self.endpoint.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.link.buffered_bytes

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        pending, self._paused_input, self._paused_size = self._paused_input, [], 0
        endpoint = self.endpoint
        for data in pending:
            if endpoint is None or self._read_paused:
                self._queue_input(data)
            else:
                endpoint.data_received(data)

    def close(self, reason: str = "") -> None:
        """Close once the peer has acknowledged what was written (or after `CLOSE_LINGER`)."""
        link = self.link
        if link.closed or self._closing is not None:
            return
        link.flush()
        self._close_reason = reason
        if link.buffered_bytes == 0:
            self._close_now()
            return
        link.watch_acks = True
        self._closing = link.loop.call_later(CLOSE_LINGER, self._close_now)

    def abort(self) -> None:
        self.link.abort(FLARE_INTERNAL_ERROR, "connection aborted")

    # -------------------------------------------------------------- LinkListener

    def link_data_received(self, data: bytes, early: bool) -> None:
        gate = self.gate
        if gate is not None and not self.link.is_client:
            try:
                data = gate.feed(data)
            except RemoteProtocolError as error:
                self.link.abort(FLARE_PROTOCOL_ERROR, str(error))
                return
            if not data:
                return
        self._deliver(data)

    def link_handshake_completed(self, early_data_accepted: bool) -> None:
        gate, self.gate = self.gate, None
        if gate is None:
            return
        self._early_calls_held = gate.held_calls
        self._early_calls_passed = gate.passed_calls
        rest = gate.release()
        if not rest:
            return
        if self.link.is_client:
            self.write(rest)
        else:
            self._deliver(rest)

    def link_acked(self) -> None:
        buffered = self.link.buffered_bytes
        if self._closing is not None:
            if buffered == 0:
                self._close_now()
            return
        if self._write_paused and buffered <= self._high_water // 2:
            self._write_paused = False
            self.link.watch_acks = False
            if self.endpoint is not None:
                self.endpoint.resume_writing()

    def link_lost(self, reason: str, error_code: int) -> None:
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.connection_lost(
                None if error_code == NO_ERROR else ConnectionClosedError(reason)
            )

    # -------------------------------------------------------------- internals

    def _deliver(self, data: bytes) -> None:
        endpoint = self.endpoint
        if endpoint is None or self._read_paused:
            self._queue_input(data)
            return
        endpoint.data_received(data)

    def _queue_input(self, data: bytes) -> None:
        self._paused_input.append(data)
        self._paused_size += len(data)
        if self._paused_size > self._max_paused_input:
            self.link.abort(
                FLARE_PROTOCOL_ERROR,
                f"over {self._max_paused_input} bytes received while reading was paused",
            )

    def _close_now(self) -> None:
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        self.link.close(NO_ERROR, self._close_reason)


# ------------------------------------------------------------------------- server


class _ServerConnectionListener(_QuicWireTransport):
    """Server side of one connection: reads the opening block, then runs a `ServerEndpoint`."""

    def __init__(self, listener: QuicListener, link: ServerLink) -> None:
        server = listener.server
        routes = server.dispatcher.wire_routes(Transport.QUIC)

        def idempotent(wire_id: int) -> bool:
            bound = routes.get(wire_id)
            return bound is not None and bound.route.options.idempotent

        super().__init__(
            link,
            high_water=server.options.max_write_buffer,
            gate=None if link.handshake_complete else EarlyDataGate(idempotent),
            max_paused_input=server.options.protocol.max_buffered_input,
        )
        self.listener = listener
        self._opening = OpeningBlockReader(server.options.protocol.settings.max_metadata_size)
        address = link.peer_address
        self.peer = f"{address[0]}:{address[1]}" if address is not None else ""

    def link_data_received(self, data: bytes, early: bool) -> None:
        if self.endpoint is None:
            if self.link.closed:
                return
            data = self._read_opening(data)
            if not data:
                return
        super().link_data_received(data, early)

    def _read_opening(self, data: bytes) -> bytes:
        try:
            opened = self._opening.receive_data(data)
        except RemoteProtocolError as error:
            self.link.abort(FLARE_PROTOCOL_ERROR, str(error))
            return b""
        if opened is None:
            return b""
        self.endpoint = self.listener.endpoints.add(
            ServerEndpoint(self.listener.server, self, opened.metadata, Transport.QUIC)
        )
        return opened.rest

    def link_lost(self, reason: str, error_code: int) -> None:
        self.listener.links.discard(self.link)
        super().link_lost(reason, error_code)


class QuicListener:
    """A Flare server's QUIC listener: one UDP socket, every QUIC connection on it."""

    def __init__(
        self,
        server: Server,
        quic_server: QuicServer,
        port: int,
        tickets: ServerTicketStore | None,
    ) -> None:
        self.server = server
        self.quic_server = quic_server
        self._port = port
        self.tickets = tickets
        self.endpoints = EndpointSet()
        self.links: set[ServerLink] = set()
        self.accepting = True
        """False once `shutdown` began: new connections are refused."""

    @property
    def handshakes_in_progress(self) -> int:
        """Connections whose TLS handshake has neither completed nor given up."""
        server = self.quic_server
        return server.guard.in_progress if isinstance(server, AdmittingQuicServer) else 0

    @property
    def port(self) -> int:
        """The bound UDP port."""
        return self._port

    async def shutdown(self, grace: float) -> None:
        """Go away on every connection, let calls finish for up to `grace` s, close."""
        self.accepting = False
        await self.endpoints.drain(grace)
        # Let the CONNECTION_CLOSE datagrams leave before the socket goes.
        await asyncio.sleep(0)
        self.quic_server.close()


def server_configuration(tls: TLSFiles, settings: QuicServerSettings) -> QuicConfiguration:
    """The aioquic configuration of a Flare QUIC server (TLS 1.3, ALPN `ALPN`)."""
    configuration = QuicConfiguration(
        is_client=False, alpn_protocols=[ALPN], idle_timeout=settings.idle_timeout
    )
    try:
        configuration.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot load the QUIC certificate/key: {error}") from None
    return configuration


async def serve_quic(
    server: Server,
    address: str,
    tls: TLSFiles,
    settings: QuicServerSettings | None = None,
) -> QuicListener:
    """Serve `server` over QUIC on `address` (``host:port``); return the listener."""
    from flare_runtime.server import parse_address  # noqa: PLC0415 -- server imports us lazily

    settings = settings or QuicServerSettings()
    host, port = parse_address(address)
    configuration = server_configuration(tls, settings)
    tickets = settings.ticket_store
    if tickets is None and settings.ticket_capacity:
        tickets = ServerTicketStore(settings.ticket_capacity)
    listener: QuicListener | None = None

    def factory(link: ServerLink) -> _ServerConnectionListener:
        assert listener is not None
        if not listener.accepting:
            link.abort(NO_ERROR, "server shutting down")
        listener.links.add(link)
        return _ServerConnectionListener(listener, link)

    sock: socket.socket | None = None
    wrap: Callable[[QuicServer], asyncio.DatagramProtocol] | None = None
    if server.shared_ports is not None:
        # One of several worker processes on this port (docs/cluster.md, "Workers").
        from flare_runtime.transports.quic_workers import WorkerRouting  # noqa: PLC0415

        routing = WorkerRouting(server.shared_ports, configuration.connection_id_length)
        sock, wrap = await routing.bind(host, port), routing.wrap
    quic_server, bound_port = await serve_links(
        host,
        port,
        configuration=configuration,
        factory=factory,
        tickets=tickets,
        guard=settings.guard(),
        sock=sock,
        wrap=wrap,
        tuning=settings.link,
    )
    listener = QuicListener(server, quic_server, bound_port, tickets)
    return listener


async def start_listener(server: Server, address: str, *, tls: TLSFiles | None) -> QuicListener:
    """`Server.start(quic=...)` calls this (named by the quic `TransportSpec`)."""
    if tls is None:
        raise ConfigurationError(
            "QUIC always uses TLS: give a certificate (tls=TLSFiles(cert, key), or "
            "--tls-cert/--tls-key; `flare cert dev` writes one for localhost)"
        )
    settings = server.options.transports.get("quic")
    if settings is not None and not isinstance(settings, QuicServerSettings):
        raise ConfigurationError(
            f'ServerOptions.transports["quic"] must be a QuicServerSettings, not '
            f"{type(settings).__name__}"
        )
    return await serve_quic(server, address, tls, settings)


# ------------------------------------------------------------------------- client


class QuicChannel(WireChannel):
    """A `WireChannel` over QUIC, with what only QUIC has: 0-RTT facts and migration."""

    def __init__(
        self,
        endpoint: ClientEndpoint,
        link: ClientLink,
        *,
        interceptors: Iterable[ClientInterceptor] = (),
        early_routes: set[int] | None = None,
    ) -> None:
        super().__init__(endpoint, interceptors=interceptors)
        self.link = link
        self._early_routes = early_routes
        if early_routes is not None:
            endpoint.route_observer = self._note_route

    def _note_route(self, route: Route[Any, Any]) -> None:
        # While the handshake is incomplete, tell the early-data gate which
        # routes may travel in 0-RTT: the idempotent ones this channel calls
        # (every call starts in `ClientEndpoint.start_call`, which calls this
        # before it writes). Once the handshake is done, calls pay nothing.
        early_routes = self._early_routes
        if early_routes is not None:
            if self.link.handshake_complete:
                self._early_routes = None
                self.endpoint.route_observer = None
            elif route.options.idempotent:
                early_routes.add(route.wire_id)

    @property
    def handshake_complete(self) -> bool:
        """True once the TLS handshake has completed."""
        return self.link.handshake_complete

    async def wait_handshake(self) -> None:
        """Wait for the TLS handshake; raises `ConnectionClosedError` when it failed."""
        try:
            await asyncio.shield(self.link.handshake_done)
        except ConnectionError as error:
            raise ConnectionClosedError(f"QUIC handshake failed: {error}") from None

    @property
    def session_resumed(self) -> bool:
        """True when this connection resumed an earlier TLS session (a ticket was used)."""
        return self.link.session_resumed

    @property
    def early_data_accepted(self) -> bool:
        """True when the server accepted this connection's 0-RTT early data."""
        return self.link.early_data_accepted

    @property
    def early_bytes_sent(self) -> int:
        """Bytes of the Flare stream written before the handshake completed (0-RTT if resumed)."""
        return self.link.early_bytes_sent

    async def rebind(self) -> tuple[str, int]:
        """Move to a new local UDP port (calls continue); return the new local address."""
        return await self.link.rebind()

    async def close(self) -> None:
        await super().close()
        self.link.release()


def _client_configuration(
    host: str, options: ConnectOptions, ticket: SessionTicket | None
) -> QuicConfiguration:
    extra = options.extra
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[str(extra.get("alpn", ALPN))],
        server_name=str(extra.get("server_name", host)),
        idle_timeout=float(extra.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)),
    )
    ca_file = extra.get("ca_file")
    context = options.ssl_context
    if ca_file is None and context is None:
        # aioquic does not read OpenSSL's default locations; honour the usual
        # override so `SSL_CERT_FILE=dev-cert.pem flare call quic://...` works.
        ca_file = os.environ.get("SSL_CERT_FILE")
    if ca_file is not None:
        configuration.load_verify_locations(cafile=str(ca_file))
    elif context is not None:
        if context.verify_mode == ssl.CERT_NONE:
            configuration.verify_mode = ssl.CERT_NONE
        else:
            certificates = context.get_ca_certs(binary_form=True)
            if certificates:
                configuration.load_verify_locations(
                    cadata=b"".join(ssl.DER_cert_to_PEM_cert(der).encode() for der in certificates)
                )
    if extra.get("verify") is False:
        configuration.verify_mode = ssl.CERT_NONE
    configuration.session_ticket = ticket
    return configuration


_QUIC_EXTRA_OPTIONS = frozenset(
    {
        "alpn",
        "ca_file",
        "early_data",
        "idle_timeout",
        "keepalive_interval",
        "link_tuning",
        "max_write_buffer",
        "server_name",
        "tickets",
        "verify",
    }
)
"""The transport options `open_channel` reads from ``connect(**extra)``."""


async def open_channel(url: str, options: ConnectOptions) -> QuicChannel:
    """Connect to ``quic://host[:port]`` (`flare_runtime.connect` calls this).

    QUIC options, passed to `connect` as keywords: ``ca_file`` (PEM file of the
    CA or self-signed certificate to trust; else `ssl_context`'s CAs, else the
    file named by ``$SSL_CERT_FILE``, else certifi's bundle), ``verify=False``
    (development only), ``server_name``,
    ``tickets`` (a `TicketStore`; default `DEFAULT_TICKETS`; ``None`` disables
    resumption), ``early_data`` (default True: use 0-RTT when resuming),
    ``idle_timeout``, ``keepalive_interval`` (QUIC PINGs when idle; default
    None, the Flare keepalive already keeps the connection busy),
    ``link_tuning`` (a `LinkTuning`: datagram batching), ``alpn`` (tests only).

    Without a usable ticket it returns once the handshake completed (errors
    such as an untrusted certificate raise `ConnectionClosedError` here). With
    one, it returns at once so that the first calls travel as 0-RTT early
    data; a failed handshake then fails those calls with UNAVAILABLE.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "quic" or not parts.hostname:
        raise ConfigurationError(f"expected quic://host:port, got {url!r}")
    unknown = set(options.extra) - _QUIC_EXTRA_OPTIONS
    if unknown:
        # A misspelt option (``ca_fle=``) must not be ignored.
        raise ConfigurationError(f"unknown QUIC connect options: {', '.join(sorted(unknown))}")
    host = parts.hostname
    port = parts.port or DEFAULT_PORT
    extra = options.extra
    tickets: TicketStore | None = extra.get("tickets", DEFAULT_TICKETS)
    server_key = f"{extra.get('server_name', host)}:{port}"
    ticket = tickets.take(server_key) if tickets is not None else None
    if ticket is not None and not extra.get("early_data", True):
        ticket.max_early_data_size = None
    configuration = _client_configuration(host, options, ticket)
    ticket_handler: Callable[[SessionTicket], None] | None = (
        (lambda new: tickets.add(server_key, new)) if tickets is not None else None
    )
    link = ClientLink(
        QuicConnection(configuration=configuration, session_ticket_handler=ticket_handler),
        keepalive_interval=extra.get("keepalive_interval"),
        tuning=extra.get("link_tuning", DEFAULT_TUNING),
    )
    early = ticket is not None and ticket.max_early_data_size is not None
    idempotent_routes: set[int] = set()
    config = options.protocol or ProtocolConfig()
    adapter = _QuicWireTransport(
        link,
        high_water=int(extra.get("max_write_buffer", 1024 * 1024)),
        gate=EarlyDataGate(idempotent_routes.__contains__) if early else None,
        max_paused_input=config.max_buffered_input,
    )
    adapter.peer = f"{host}:{port}"
    link.listener = adapter
    try:
        async with asyncio.timeout(options.open_timeout):
            await link.open(host, port)
            if not early:
                await link.handshake_done
    except (OSError, ConnectionError, TimeoutError) as error:
        link.release()
        detail = "timed out" if isinstance(error, TimeoutError) else describe(error)
        raise ConnectionClosedError(f"cannot connect to {url}: {detail}") from None
    # The opening block goes first on the stream (not through the gate: it is
    # not a Flare frame, and it is always allowed in early data).
    link.write(encode_opening_block(options.opening_metadata()))
    endpoint = ClientEndpoint(
        adapter,
        config,
        Transport.QUIC,
        {type_id: cls for table in options.push_tables for type_id, cls in table.by_id().items()},
        options.max_pending_pushes,
    )
    adapter.endpoint = endpoint
    return QuicChannel(
        endpoint,
        link,
        interceptors=options.interceptors,
        early_routes=idempotent_routes if early else None,
    )
