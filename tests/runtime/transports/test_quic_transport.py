"""Flare over QUIC on 127.0.0.1: 0-RTT rules, anti-replay, migration, bad input.

Real aioquic on both ends, a real `Server` and `QuicChannel`. The conformance
suite (`flare_runtime.testing`) covers calls themselves on every transport;
these tests cover what only QUIC has.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import SessionTicket
from google.protobuf.wrappers_pb2 import BytesValue, UInt64Value

import flare_runtime as flare
from flare_runtime.context import CallContext
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.protocol.frames import encode_hello
from flare_runtime.protocol.opening import OPENING_LENGTH
from flare_runtime.routing import Cardinality, Route, RouteOptions, ServiceRoutes
from flare_runtime.server import Server, TLSFiles
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import Routes
from flare_runtime.testing.timing import UNIT, wait_until
from flare_runtime.transports.quic import (
    ALPN,
    QuicChannel,
    QuicListener,
    serve_quic,
)
from flare_runtime.transports.quic_certs import write_dev_certificate
from flare_runtime.transports.quic_link import ClientLink, ServerLink
from flare_runtime.transports.quic_settings import QuicServerSettings
from flare_runtime.transports.quic_tickets import MemoryTicketStore, ServerTicketStore
from flare_runtime.wire.server import ServerEndpoint

TIMEOUT = 10 * UNIT

ECHO: Route[BytesValue, BytesValue] = Route(
    path="/flare.test.Quic/Echo",
    service_id=0x51,
    route_id=1,
    cardinality=Cardinality.UNARY,
    request_type=BytesValue,
    response_type=BytesValue,
    handler_name="echo",
    options=RouteOptions(idempotent=True),
)
INCREMENT: Route[UInt64Value, UInt64Value] = Route(
    path="/flare.test.Quic/Increment",
    service_id=0x51,
    route_id=2,
    cardinality=Cardinality.UNARY,
    request_type=UInt64Value,
    response_type=UInt64Value,
    handler_name="increment",
)
TICKS: Route[UInt64Value, UInt64Value] = Route(
    path="/flare.test.Quic/Ticks",
    service_id=0x51,
    route_id=3,
    cardinality=Cardinality.SERVER_STREAM,
    request_type=UInt64Value,
    response_type=UInt64Value,
    handler_name="ticks",
    options=RouteOptions(idempotent=True),
)
ROUTES = ServiceRoutes("flare.test.Quic", 0x51, (ECHO, INCREMENT, TICKS))


@dataclass
class QuicService:
    """Counts what ran, so a test can tell whether a (replayed) call executed."""

    echoes: int = 0
    counter: int = 0
    tick_peers: list[str] = field(default_factory=list)

    async def echo(self, request: BytesValue, context: CallContext) -> BytesValue:
        self.echoes += 1
        return request

    async def increment(self, request: UInt64Value, context: CallContext) -> UInt64Value:
        self.counter += request.value
        return UInt64Value(value=self.counter)

    async def ticks(self, request: UInt64Value, context: CallContext) -> AsyncIterator[UInt64Value]:
        for tick in range(request.value):
            await asyncio.sleep(0.02 * UNIT)
            yield UInt64Value(value=tick)


class ReusableTickets(ServerTicketStore):
    """A ticket store that (wrongly) lets a ticket resume many times: replay succeeds."""

    def take(self, label: bytes) -> SessionTicket | None:
        ticket = super().take(label)
        if ticket is not None:
            self.add(ticket)
        return ticket


@dataclass
class Served:
    server: Server
    listener: QuicListener
    service: QuicService
    ca_file: str
    url: str

    def connect(self, **options: Any) -> Any:
        options.setdefault("tickets", None)
        return flare.connect(self.url, ca_file=self.ca_file, **options)

    def endpoints(self) -> list[ServerEndpoint]:
        return sorted(self.listener.endpoints, key=id)


async def serve(tmp_path: Path, settings: QuicServerSettings | None = None) -> Served:
    files = write_dev_certificate(tmp_path, overwrite=True)
    service = QuicService()
    server = Server([(ROUTES, service)])
    listener = await serve_quic(
        server,
        "127.0.0.1:0",
        TLSFiles(str(files.certificate), str(files.private_key)),
        settings,
    )
    return Served(
        server, listener, service, str(files.certificate), f"quic://localhost:{listener.port}"
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    served = await serve(tmp_path)
    yield served
    await served.listener.shutdown(grace=1.0 * UNIT)


def add_latency(served: Served, seconds: float = 0.02) -> None:
    """Delay every datagram the server receives by `seconds`, in order (a slow network).

    Client and server share one event loop here, so without it the server can
    answer the ClientHello before the client has written its first calls:
    with a real round trip, calls made right after `connect` are early data.
    """
    quic_server: Any = served.listener.quic_server
    deliver = quic_server.datagram_received
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[bytes, Any]] = collections.deque()

    def next_datagram() -> None:
        deliver(*queue.popleft())

    def delayed(data: bytes, address: Any) -> None:
        queue.append((data, address))
        loop.call_later(seconds, next_datagram)

    quic_server.datagram_received = delayed


async def open_resumable(served: Served, tickets: MemoryTicketStore) -> None:
    """Make one full-handshake connection so that `tickets` holds a fresh ticket."""
    async with served.connect(tickets=tickets) as channel:
        await channel.unary_unary(ECHO, BytesValue(value=b"warm-up"))
        await wait_until(lambda: len(tickets) > 0)
    assert len(tickets) == 1, "the server issued no session ticket"
    await wait_until(lambda: not served.listener.endpoints)  # the server forgot it


async def test_server_needs_a_certificate() -> None:
    server = Server([(ROUTES, QuicService())])
    with pytest.raises(ConfigurationError, match="TLS"):
        await server.start(quic="127.0.0.1:0")


async def test_served_through_server_start_and_connect(tmp_path: Path) -> None:
    files = write_dev_certificate(tmp_path)
    server = Server([(ROUTES, QuicService())])
    await server.start(
        quic="127.0.0.1:0", tls=TLSFiles(str(files.certificate), str(files.private_key))
    )
    try:
        url = f"quic://localhost:{server.port('quic')}"
        async with flare.connect(url, ca_file=str(files.certificate), tickets=None) as channel:
            assert isinstance(channel, QuicChannel)
            reply = await channel.unary_unary(ECHO, BytesValue(value=b"hello"), timeout=TIMEOUT)
            assert reply.value == b"hello"
            assert channel.link.alpn_protocol == ALPN
    finally:
        await server.shutdown(grace=1.0 * UNIT)


async def test_zero_rtt_carries_an_idempotent_call(served: Served) -> None:
    tickets = MemoryTicketStore()
    await open_resumable(served, tickets)
    add_latency(served)
    async with served.connect(tickets=tickets) as channel:
        assert not channel.handshake_complete  # connect returned before the handshake
        reply = await channel.unary_unary(ECHO, BytesValue(value=b"early"), timeout=TIMEOUT)
        assert reply.value == b"early"
        await channel.wait_handshake()
        assert channel.session_resumed and channel.early_data_accepted
        # The server received the call before the handshake completed: early data.
        (endpoint,) = served.endpoints()
        assert endpoint.transport.early_calls_passed == 1  # type: ignore[attr-defined]
        assert endpoint.transport.early_calls_held == 0  # type: ignore[attr-defined]


async def test_zero_rtt_holds_a_non_idempotent_call_until_the_handshake(
    served: Served,
) -> None:
    tickets = MemoryTicketStore()
    await open_resumable(served, tickets)
    add_latency(served)
    async with served.connect(tickets=tickets) as channel:
        assert not channel.handshake_complete
        reply = await channel.unary_unary(INCREMENT, UInt64Value(value=5), timeout=TIMEOUT)
        assert reply.value == 5
        assert channel.early_data_accepted  # early data was used (HELLO), not for this call
        adapter: Any = channel.endpoint.transport
        assert adapter.early_calls_held == 1  # the client held the call
        (endpoint,) = served.endpoints()
        server_adapter: Any = endpoint.transport
        assert server_adapter.early_calls_passed == 0
        assert server_adapter.early_calls_held == 0  # nothing to hold: it never came early


async def test_server_holds_a_non_idempotent_call_sent_early_by_a_rogue_client(
    served: Served,
) -> None:
    tickets = MemoryTicketStore()
    await open_resumable(served, tickets)
    add_latency(served)
    async with served.connect(tickets=tickets) as channel:
        # Misbehave: tell our own gate that INCREMENT may travel in early data.
        channel._early_routes.add(INCREMENT.wire_id)
        reply = await channel.unary_unary(INCREMENT, UInt64Value(value=1), timeout=TIMEOUT)
        assert reply.value == 1
        (endpoint,) = served.endpoints()
        assert endpoint.transport.early_calls_held == 1  # type: ignore[attr-defined]


async def replay(served: Served, datagrams: list[bytes]) -> ServerLink:
    """Send recorded datagrams from a fresh socket, as an attacker would.

    Returns the server's link of the replayed connection, once the server has
    handled every replayed datagram and whatever they started has had time to run.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)
    quic_server: Any = served.listener.quic_server

    def links() -> set[ServerLink]:  # every connection aioquic knows, handshake done or not
        return set(quic_server._protocols.values())

    # The recorded connection must be gone (draining ends): a replay to a live
    # connection id would just reach that one.
    await wait_until(lambda: not links())
    before = links()
    try:
        for datagram in datagrams:
            transport.sendto(datagram, ("127.0.0.1", served.listener.port))

        def replay_arrived() -> bool:
            new = links() - before
            return bool(new) and next(iter(new)).received_bytes >= REPLAYED_STREAM_BYTES_AT_LEAST

        await wait_until(lambda: links() - before)  # the replay reached the server
        with contextlib.suppress(TimeoutError):  # a refused replay never gets stream bytes
            await wait_until(replay_arrived, 3 * UNIT)
        await asyncio.sleep(0.3 * UNIT)  # let what the replay started run (it answers nobody)
    finally:
        transport.close()
    (link,) = links() - before
    return link


REPLAYED_STREAM_BYTES_AT_LEAST = 1
"""A resumed replay decrypts its 0-RTT stream bytes; a refused one never gets any."""


async def capture_first_flight(served: Served, tickets: MemoryTicketStore) -> list[bytes]:
    """Resume, send ECHO and INCREMENT in early data; return the client's first flight.

    Recorded as the server received it, with a 50 ms one-way delay: what arrives
    within 40 ms of the first datagram was sent before any answer could reach
    the client (its ClientHello and 0-RTT packets).
    """
    latency = 0.05
    add_latency(served, latency)
    quic_server: Any = served.listener.quic_server
    original = quic_server.datagram_received
    first_flight: list[bytes] = []
    loop = asyncio.get_running_loop()
    started: list[float] = []

    def record(data: bytes, address: Any) -> None:
        now = loop.time()
        started[:] = started or [now]
        if now - started[0] < latency * 0.8:
            first_flight.append(data)
        original(data, address)

    quic_server.datagram_received = record
    try:
        async with served.connect(tickets=tickets) as channel:
            channel._early_routes.add(INCREMENT.wire_id)
            echo = asyncio.ensure_future(channel.unary_unary(ECHO, BytesValue(value=b"r")))
            await asyncio.sleep(0)  # ECHO's CALL_START goes first on the stream
            increment = channel.unary_unary(INCREMENT, UInt64Value(value=1))
            await asyncio.wait_for(asyncio.gather(echo, increment), TIMEOUT)
            assert channel.early_data_accepted
            # ECHO ran from early data; the server's own gate held INCREMENT.
            (endpoint,) = served.endpoints()
            server_side: Any = endpoint.transport
            assert (server_side.early_calls_passed, server_side.early_calls_held) == (1, 1)
    finally:
        quic_server.datagram_received = original
    return first_flight


async def test_a_replayed_first_flight_executes_nothing(served: Served) -> None:
    tickets = MemoryTicketStore()
    await open_resumable(served, tickets)
    first_flight = await capture_first_flight(served, tickets)
    echoes, counter = served.service.echoes, served.service.counter
    link = await replay(served, first_flight)
    # Single-use tickets: the replay reached the server but cannot resume, so
    # its 0-RTT packets are undecryptable: not one stream byte was read.
    assert served.listener.tickets is not None and served.listener.tickets.resumed == 1
    assert not link.session_resumed and link.received_bytes == 0
    assert (served.service.echoes, served.service.counter) == (echoes, counter)


async def test_replay_with_reusable_tickets_never_runs_a_non_idempotent_call(
    tmp_path: Path,
) -> None:
    served = await serve(tmp_path, QuicServerSettings(ticket_store=ReusableTickets()))
    try:
        tickets = MemoryTicketStore()
        await open_resumable(served, tickets)
        first_flight = await capture_first_flight(served, tickets)
        echoes, counter = served.service.echoes, served.service.counter
        link = await replay(served, first_flight)
        assert link.early_bytes > 0 and not link.handshake_complete
        # The replay resumed and its early data was read: the idempotent call ran
        # again (allowed), the non-idempotent one is held for a handshake the
        # attacker cannot finish -- it never runs.
        assert served.service.echoes == echoes + 1
        assert served.service.counter == counter
    finally:
        await served.listener.shutdown(grace=1.0 * UNIT)


async def test_a_call_survives_the_client_moving_to_a_new_port(served: Served) -> None:
    async with served.connect() as channel:
        seen: list[int] = []
        before: Any = None
        after: Any = None
        server_link: Any = None
        async for tick in channel.unary_stream(TICKS, UInt64Value(value=12), timeout=TIMEOUT):
            seen.append(tick.value)
            if len(seen) == 3:
                (endpoint,) = served.endpoints()
                server_link = endpoint.transport.link  # type: ignore[attr-defined]
                before = server_link.peer_address
                after = await channel.rebind()
        assert seen == list(range(12))
        assert server_link.peer_address == after != before
        reply = await channel.unary_unary(ECHO, BytesValue(value=b"still"), timeout=TIMEOUT)
        assert reply.value == b"still"


async def test_wrong_alpn_is_refused_and_only_that_connection_fails(served: Served) -> None:
    async with served.connect() as good:
        with pytest.raises(ConnectionClosedError, match="ALPN"):
            await served.connect(alpn="h3")
        reply = await good.unary_unary(ECHO, BytesValue(value=b"ok"), timeout=TIMEOUT)
        assert reply.value == b"ok"


async def test_untrusted_certificate_is_refused(served: Served, tmp_path: Path) -> None:
    other = write_dev_certificate(tmp_path / "other")
    with pytest.raises(ConnectionClosedError):
        await flare.connect(served.url, ca_file=str(other.certificate), tickets=None)


async def raw_link(served: Served) -> ClientLink:
    """A QUIC connection with Flare's ALPN whose stream bytes the test writes itself."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], server_name="localhost"
    )
    configuration.load_verify_locations(served.ca_file)
    link = ClientLink(QuicConnection(configuration=configuration), keepalive_interval=None)
    await link.open("127.0.0.1", served.listener.port)
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    return link


EMPTY_OPENING = OPENING_LENGTH.pack(1) + b"\x00"  # no metadata


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xff" * 64, id="opening-block-too-large"),
        pytest.param(OPENING_LENGTH.pack(3) + b"\x05ab", id="malformed-opening-block"),
        pytest.param(EMPTY_OPENING + b"GET / HTTP/1.1\r\n\r\n" * 4, id="not-flare"),
        pytest.param(EMPTY_OPENING + encode_hello(1, 1) + b"\xff" * 40, id="bad-frame"),
    ],
)
async def test_garbage_on_the_stream_closes_only_that_connection(
    served: Served, garbage: bytes
) -> None:
    async with served.connect() as good:
        bad = await raw_link(served)
        try:
            bad.write(garbage)
            await wait_until(lambda: bad.closed)
        finally:
            bad.release()
        reply = await good.unary_unary(ECHO, BytesValue(value=b"fine"), timeout=TIMEOUT)
        assert reply.value == b"fine"
        assert len(served.endpoints()) == 1


async def test_idle_timeout_closes_a_silent_connection_on_both_sides(tmp_path: Path) -> None:
    served = await serve(tmp_path, QuicServerSettings(idle_timeout=0.6))
    try:
        silent = ProtocolConfig(keepalive_interval=None)
        async with served.connect(protocol=silent, idle_timeout=0.6) as channel:
            await channel.unary_unary(ECHO, BytesValue(value=b"x"), timeout=TIMEOUT)
            assert served.endpoints()
            # Nobody sends anything: QUIC's idle timeout ends it, no packet needed.
            await wait_until(lambda: channel.closed and not served.endpoints())
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(ECHO, BytesValue(value=b"x"), timeout=TIMEOUT)
            assert caught.value.code is StatusCode.UNAVAILABLE
    finally:
        await served.listener.shutdown(grace=1.0 * UNIT)


async def test_flare_keepalive_keeps_an_idle_connection_open(tmp_path: Path) -> None:
    served = await serve(tmp_path, QuicServerSettings(idle_timeout=0.6))
    try:
        pinging = ProtocolConfig(
            keepalive_interval=0.15, keepalive_timeout=0.3, handshake_timeout=0.3
        )
        async with served.connect(protocol=pinging, idle_timeout=0.6) as channel:
            await channel.unary_unary(ECHO, BytesValue(value=b"x"), timeout=TIMEOUT)
            (endpoint,) = served.endpoints()
            await asyncio.sleep(1.5 * UNIT)  # 2.5 idle timeouts without a call
            assert not channel.closed
            reply = await channel.unary_unary(ECHO, BytesValue(value=b"y"), timeout=TIMEOUT)
            assert reply.value == b"y"
            assert served.endpoints() == [endpoint]
    finally:
        await served.listener.shutdown(grace=1.0 * UNIT)


async def test_a_dead_peer_is_dropped_by_the_idle_timeout(tmp_path: Path) -> None:
    served = await serve(tmp_path, QuicServerSettings(idle_timeout=0.6))
    try:
        async with served.connect() as channel:
            await channel.unary_unary(ECHO, BytesValue(value=b"x"), timeout=TIMEOUT)
            assert served.endpoints()
            # The client's packets stop reaching the server (a dead peer).
            quic_server: Any = served.listener.quic_server
            quic_server.datagram_received = lambda data, address: None
            await wait_until(lambda: not served.endpoints())
    finally:
        await served.listener.shutdown(grace=1.0 * UNIT)


async def test_quic_pings_keep_an_idle_connection_open(tmp_path: Path) -> None:
    served = await serve(tmp_path, QuicServerSettings(idle_timeout=0.6))
    try:
        silent = ProtocolConfig(keepalive_interval=None)  # no Flare PINGs: only QUIC's
        async with served.connect(
            protocol=silent, idle_timeout=0.6, keepalive_interval=0.15
        ) as channel:
            await channel.unary_unary(ECHO, BytesValue(value=b"x"), timeout=TIMEOUT)
            await asyncio.sleep(1.5 * UNIT)
            assert not channel.closed and served.endpoints()
            reply = await channel.unary_unary(ECHO, BytesValue(value=b"y"), timeout=TIMEOUT)
            assert reply.value == b"y"
    finally:
        await served.listener.shutdown(grace=1.0 * UNIT)


def test_quic_serves_and_calls_on_uvloop() -> None:
    # The link reads its sockets itself (DrainingSocket) and cannot see
    # uvloop's ready queue: both must still work there (`flare serve --uvloop`).
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        rig = await start_rig("quic")
        try:
            async with rig.connect() as channel:
                calls = [
                    channel.unary_unary(Routes.ECHO, BytesValue(value=bytes([i % 256]) * 100))
                    for i in range(500)
                ]
                async with asyncio.timeout(20 * UNIT):
                    replies = await asyncio.gather(*calls)
        finally:
            await rig.server.shutdown(grace=1.0 * UNIT)
        assert [reply.value for reply in replies] == [bytes([i % 256]) * 100 for i in range(500)]
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")

    uvloop.run(main())


async def test_messages_beyond_quics_flow_control_window_keep_flowing() -> None:
    # 3 MB each way is past aioquic's initial MAX_DATA / MAX_STREAM_DATA (1 MiB):
    # the sender must go on as soon as the peer's window update arrives. It used
    # to wait for its next write or the keepalive (seconds, or for ever).
    rig = await start_rig("quic")
    try:
        async with rig.connect() as channel:
            async with asyncio.timeout(10 * UNIT):
                reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=bytes(3_000_000)))
                assert len(reply.value) == 3_000_000
    finally:
        await rig.server.shutdown(grace=1.0 * UNIT)
