"""The QUIC link (aioquic plumbing) over real UDP sockets on 127.0.0.1.

The application on each end is a tiny byte listener: these tests pin down what
the link itself promises (one Flare stream, early-data marking, migration,
closing a misbehaving connection alone). The Flare protocol on top is tested in
test_quic_transport.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioquic._buffer import Buffer
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from flare_runtime.testing.timing import UNIT, wait_until
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate
from flare_runtime.transports.quic_link import (
    FLARE_PROTOCOL_ERROR,
    AdmittingQuicServer,
    ClientLink,
    DrainingSocket,
    OutputCoalescer,
    QuicLink,
    ServerLink,
    serve_links,
)
from flare_runtime.transports.quic_settings import DEFAULT_TUNING, HandshakeGuard, LinkTuning
from flare_runtime.transports.quic_tickets import MemoryTicketStore, ServerTicketStore

ALPN = "flare/1"
TIMEOUT = 5 * UNIT


@dataclass
class Recorder:
    """A listener that records what the link reports; optionally echoes."""

    link: QuicLink | None = None
    echo: bool = False
    data: bytearray = field(default_factory=bytearray)
    early: list[bool] = field(default_factory=list)
    lost: list[tuple[str, int]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def link_data_received(self, data: bytes, early: bool) -> None:
        self.data += data
        self.early.append(early)
        self.arrived.set()
        if self.echo and self.link is not None:
            self.link.write(data)

    def link_handshake_completed(self, early_data_accepted: bool) -> None:
        pass

    def link_acked(self) -> None:
        pass

    def link_lost(self, reason: str, error_code: int) -> None:
        self.lost.append((reason, error_code))

    async def wait_for(self, size: int) -> bytes:
        while len(self.data) < size:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), TIMEOUT)
        return bytes(self.data)


@dataclass
class Harness:
    files: CertificateFiles
    server: QuicServer
    port: int
    server_side: list[Recorder]
    server_tickets: ServerTicketStore
    client_tickets: MemoryTicketStore

    async def connect(
        self, *, resume: bool = False, alpn: str = ALPN, tuning: LinkTuning = DEFAULT_TUNING
    ) -> tuple[ClientLink, Recorder]:
        configuration = QuicConfiguration(
            is_client=True, alpn_protocols=[alpn], server_name="localhost", idle_timeout=5.0
        )
        configuration.load_verify_locations(str(self.files.certificate))
        if resume:
            configuration.session_ticket = self.client_tickets.take("server")
            assert configuration.session_ticket is not None
        quic = QuicConnection(
            configuration=configuration,
            session_ticket_handler=lambda ticket: self.client_tickets.add("server", ticket),
        )
        link = ClientLink(quic, keepalive_interval=None, tuning=tuning)
        recorder = Recorder(link=link)
        link.listener = recorder
        await link.open("127.0.0.1", self.port)
        return link, recorder

    async def take_ticket(self) -> None:
        """One short connection, for the session ticket a resumed `connect` uses."""
        first, recorder = await self.connect()
        first.write(b"x")
        await recorder.wait_for(1)
        assert len(self.client_tickets) == 1  # the server issued a ticket
        first.close()
        first.release()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(tmp_path, HandshakeGuard()) as started:
        yield started


@contextlib.asynccontextmanager
async def _harness(tmp_path: Path, guard: HandshakeGuard) -> AsyncIterator[Harness]:
    files = write_dev_certificate(tmp_path)
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], idle_timeout=5.0)
    configuration.load_cert_chain(files.certificate, files.private_key)
    recorders: list[Recorder] = []

    def factory(link: ServerLink) -> Recorder:
        recorder = Recorder(link=link, echo=True)
        recorders.append(recorder)
        return recorder

    tickets = ServerTicketStore()
    server, port = await serve_links(
        "127.0.0.1", 0, configuration=configuration, factory=factory, tickets=tickets, guard=guard
    )
    try:
        yield Harness(files, server, port, recorders, tickets, MemoryTicketStore())
    finally:
        server.close()


async def test_bytes_flow_both_ways_on_one_stream(harness: Harness) -> None:
    link, recorder = await harness.connect()
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    for chunk in (b"a" * 10, b"b" * 5000, b"c"):
        link.write(chunk)
    assert await recorder.wait_for(5011) == b"a" * 10 + b"b" * 5000 + b"c"
    assert harness.server_side[0].early == [False] * len(harness.server_side[0].early)
    link.close()
    link.release()


async def test_early_data_is_marked_and_accepted_on_resumption(harness: Harness) -> None:
    await harness.take_ticket()
    resumed, recorder = await harness.connect(resume=True)
    resumed.write(b"early")  # before the handshake: goes out as 0-RTT
    await recorder.wait_for(5)
    await asyncio.wait_for(resumed.handshake_done, TIMEOUT)
    assert resumed.session_resumed and resumed.early_data_accepted
    server = harness.server_side[-1]
    assert server.early[0] is True, (server.early, resumed.early_bytes_sent)
    assert server.link is not None and server.link.early_bytes == 5
    resumed.close()
    resumed.release()


async def test_client_moves_to_a_new_port_mid_connection(harness: Harness) -> None:
    link, recorder = await harness.connect()
    link.write(b"before")
    await recorder.wait_for(6)
    server_link = harness.server_side[0].link
    assert server_link is not None
    old_address = server_link.peer_address
    new_address = await link.rebind()
    link.write(b"after")
    assert await recorder.wait_for(11) == b"beforeafter"
    assert new_address != old_address
    assert server_link.peer_address == new_address
    link.close()
    link.release()


async def test_wrong_alpn_fails_only_that_connection(harness: Harness) -> None:
    good, good_recorder = await harness.connect()
    await asyncio.wait_for(good.handshake_done, TIMEOUT)
    bad, _ = await harness.connect(alpn="h3")
    with pytest.raises(ConnectionError, match="ALPN"):
        await asyncio.wait_for(bad.handshake_done, TIMEOUT)
    bad.release()
    good.write(b"still here")
    assert await good_recorder.wait_for(10) == b"still here"
    assert len(harness.server_side) == 1  # no endpoint was built for the bad one
    good.close()
    good.release()


async def test_a_second_stream_closes_that_connection_with_a_protocol_error(
    harness: Harness,
) -> None:
    link, recorder = await harness.connect()
    link.write(b"ok")
    await recorder.wait_for(2)
    other = link._quic.get_next_available_stream_id()
    other = other if other != 0 else 4
    link._quic.send_stream_data(other, b"sneaky")
    link.transmit()
    await wait_until(lambda: recorder.lost)
    assert recorder.lost and recorder.lost[0][1] == FLARE_PROTOCOL_ERROR
    assert "unexpected QUIC stream" in recorder.lost[0][0]
    link.release()
    # The server still serves other connections.
    again, again_recorder = await harness.connect()
    again.write(b"fine")
    assert await again_recorder.wait_for(4) == b"fine"
    again.close()
    again.release()


async def first_byte_echoed(harness: Harness) -> tuple[ClientLink, Recorder, Recorder]:
    """A connection whose server side exists (built at the first stream byte): client link,
    client recorder, server recorder."""
    link, recorder = await harness.connect()
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    link.write(b"!")
    await recorder.wait_for(1)
    return link, recorder, harness.server_side[0]


async def test_writes_of_one_loop_iteration_leave_in_one_datagram(harness: Harness) -> None:
    link, recorder, server = await first_byte_echoed(harness)
    deliveries = len(server.early)
    chunks = [bytes([n]) * 100 for n in range(10)]  # as ten calls answered together
    for chunk in chunks:
        link.write(chunk)
    expected = b"!" + b"".join(chunks)
    assert await recorder.wait_for(len(expected)) == expected
    # One transmit pass, so one datagram, so one delivery on the server.
    assert len(server.early) == deliveries + 1
    link.close()
    link.release()


async def test_bytes_written_just_before_an_abort_still_reach_the_peer(harness: Harness) -> None:
    link, _, server = await first_byte_echoed(harness)
    link.write(b"last words")
    link.abort(FLARE_PROTOCOL_ERROR, "going")
    await wait_until(lambda: server.lost)
    assert bytes(server.data) == b"!last words"
    assert server.lost and server.lost[0][1] == FLARE_PROTOCOL_ERROR
    link.release()


# ---------------------------------------------------------------- output coalescing (no sockets)


def test_coalescer_passes_whole_chunks_and_keeps_the_tail() -> None:
    output = OutputCoalescer(10)
    assert output.push(b"abc") == b""
    assert output.tail_size == 3
    assert not output.full_sent
    assert output.push(b"defghijklmnopqrstuvwxy") == b"abcdefghijklmnopqrst"
    assert output.full_sent
    assert output.take_tail() == b"uvwxy"
    assert output.take_tail() == b""
    assert output.tail_size == 0


def test_coalescer_holds_a_tail_only_after_a_full_chunk_until_the_peer_sends() -> None:
    output = OutputCoalescer(8)
    output.push(b"small")
    assert not output.hold_tail  # nothing in flight: a lone small write goes at once
    output.push(b"-fills-the-chunk")
    assert output.hold_tail  # a full datagram is unanswered and a tail is left
    output.peer_sent()
    assert not output.hold_tail
    assert output.take_tail() == b"chunk"


def test_coalescer_exact_chunks_leave_no_tail() -> None:
    output = OutputCoalescer(4)
    assert output.push(b"12345678") == b"12345678"
    assert output.tail_size == 0
    assert not output.hold_tail


def test_coalescer_rejects_a_non_positive_chunk() -> None:
    with pytest.raises(ValueError):
        OutputCoalescer(0)


async def test_a_burst_leaves_in_full_datagrams(harness: Harness) -> None:
    """Many small writes in one loop iteration become full datagrams plus one tail."""
    link, client = await harness.connect()
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    sent: list[int] = []
    transport = link.socket
    assert transport is not None
    original = transport.sendto

    def counting_sendto(data: bytes, addr: object = None) -> None:
        sent.append(len(data))
        original(data, addr)  # type: ignore[arg-type]

    setattr(transport, "sendto", counting_sendto)  # noqa: B010 -- instance patch, typed loosely
    link.write(bytes(100))
    assert sent == []  # less than a datagram waits for the loop to go idle
    for _ in range(99):
        link.write(bytes(100))  # 10,000 bytes: eight full datagrams and a tail
    # Each full datagram left at once, inside this loop iteration (the first
    # transmit may also carry the handshake's last control frames).
    assert len([size for size in sent if size >= 1100]) >= 7
    assert len(sent) >= 8
    assert await client.wait_for(10_000) == bytes(10_000)  # the server echoes
    full = [size for size in sent if size >= 1100]
    assert len(full) >= 8
    assert len(sent) <= len(full) + 3  # the tail, and at most a couple of ACK-only packets
    link.close()
    link.release()


async def test_a_tail_waits_for_the_loop_to_go_idle_at_most_transmit_hops(
    harness: Harness,
) -> None:
    link, _client = await harness.connect(tuning=LinkTuning(transmit_hops=4))
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    await asyncio.sleep(0.25 * UNIT)  # the handshake's last packets are out
    transport = link.socket
    assert transport is not None
    original = transport.sendto
    loop = asyncio.get_running_loop()
    iterations = 0
    busy = True
    sent_at: list[int] = []

    def recording_sendto(data: bytes, addr: object = None) -> None:
        sent_at.append(iterations)
        original(data, addr)  # type: ignore[arg-type]

    def spin() -> None:  # a callback ready every iteration: the loop is never idle
        nonlocal iterations
        iterations += 1
        if busy:
            loop.call_soon(spin)

    setattr(transport, "sendto", recording_sendto)  # noqa: B010 -- instance patch
    loop.call_soon(spin)
    link.write(b"x")  # less than a datagram: a tail
    await wait_until(lambda: iterations >= 12)
    assert sent_at and sent_at[0] <= 4  # busy, yet the tail left after <= 4 iterations
    busy = False
    await asyncio.sleep(0.05 * UNIT)
    sent_at.clear()
    link.write(b"y")  # an idle loop: the tail leaves at the first look
    await asyncio.sleep(0.05 * UNIT)
    assert sent_at


def test_link_tuning_refuses_values_that_stop_the_link() -> None:
    with pytest.raises(ValueError):
        LinkTuning(transmit_hops=0)
    with pytest.raises(ValueError):
        LinkTuning(blind_transmit_hops=0)
    with pytest.raises(ValueError):
        LinkTuning(datagrams_per_wakeup=0)
    with pytest.raises(ValueError):
        LinkTuning(tail_hold=-1.0)


async def test_data_that_needs_no_answer_is_still_acknowledged(harness: Harness) -> None:
    """A receiver that writes nothing back still ACKs (aioquic's ACK timer is re-armed)."""
    link, client = await harness.connect()
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    link.write(b"ping")
    await client.wait_for(4)  # the server echoed; the client answers nothing
    await asyncio.sleep(0)  # the re-arm runs with this loop iteration's callbacks
    # The echo was ack-eliciting: the client's timer follows it (ACK delay)
    # although no transmit pass ran.
    assert link._timer is not None
    assert link._timer_at == link._quic.get_timer()
    server_link = harness.server_side[0].link
    assert server_link is not None
    await wait_until(lambda: server_link.buffered_bytes == 0)
    assert server_link.buffered_bytes == 0  # the client's ACK arrived
    link.close()
    link.release()


async def test_a_burst_of_datagrams_rearms_the_timer_once(harness: Harness) -> None:
    """aioquic's get_timer (~5 us) runs once per loop iteration, not once per datagram."""
    link, client = await harness.connect()
    await asyncio.wait_for(link.handshake_done, TIMEOUT)
    get_timer = link._quic.get_timer
    counts = {"get_timer": 0, "datagrams": 0}

    def counting_get_timer() -> float | None:
        counts["get_timer"] += 1
        return get_timer()

    receive = link.datagram_received

    def counting_receive(data: bytes | str, addr: Any) -> None:
        counts["datagrams"] += 1
        receive(data, addr)

    link._quic.get_timer = counting_get_timer  # type: ignore[method-assign]
    link.datagram_received = counting_receive  # type: ignore[method-assign]
    payload = bytes(range(256)) * 24  # the echo comes back as a burst of five datagrams
    link.write(payload)
    link.flush()
    counts["get_timer"] = 0  # the write's own transmit passes re-armed already
    await client.wait_for(len(payload))
    await asyncio.sleep(0)
    assert counts["datagrams"] >= 4
    assert counts["get_timer"] < counts["datagrams"]
    # ...and the timer follows the last datagram once its iteration's re-arm has run (on a
    # loaded machine another datagram, an ACK, may have arrived in the iteration just ended).
    await wait_until(lambda: not link._rearm_pending)
    assert link._timer_at == get_timer()
    link.close()
    link.release()


async def test_a_large_write_before_the_handshake_arrives_whole(harness: Harness) -> None:
    """Several datagrams' worth written in the early-data phase all leave, in order."""
    await harness.take_ticket()
    resumed, recorder = await harness.connect(resume=True)
    payload = bytes(range(256)) * 20  # 5,120 bytes: four whole datagrams and a tail
    resumed.write(payload)
    assert resumed.early_bytes_sent == len(payload)
    assert await recorder.wait_for(len(payload)) == payload  # the server echoes
    resumed.close()
    resumed.release()


class _CountingSocket(DrainingSocket):
    """Counts read-readiness callbacks (each is one loop wake-up for the socket)."""

    wakeups = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.wakeups += 1
        super().datagram_received(data, addr)


async def test_queued_datagrams_are_handed_on_in_one_wakeup_each_up_to_the_cap() -> None:
    received: list[bytes] = []

    class Inner(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            received.append(data)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    counting = _CountingSocket(Inner(), sock)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: counting, sock=sock
    )
    burst = DEFAULT_TUNING.datagrams_per_wakeup + 8
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(burst):  # all queued before the loop next looks at the socket
            sender.sendto(i.to_bytes(2, "big"), sock.getsockname())
    try:
        await wait_until(lambda: len(received) == burst)
    finally:
        transport.close()
    assert received == [i.to_bytes(2, "big") for i in range(burst)]
    assert counting.wakeups == 2  # asyncio alone: one wake-up per datagram


# ---------------------------------------------------------------------------- admission


async def _first_answer(port: int) -> QuicPacketType:
    """Send one fresh client Initial to `port`; return the type of the server's first packet."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
    quic = QuicConnection(configuration=configuration)
    quic.connect(("127.0.0.1", port), now=0.0)
    initial = quic.datagrams_to_send(now=0.0)[0][0]
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, initial)
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT)
    return pull_quic_header(Buffer(data=answer), host_cid_length=8).packet_type


def test_the_retry_shim_matches_the_installed_aioquic() -> None:
    """`AdmittingQuicServer` sets aioquic's private ``QuicServer._retry`` and reads
    ``_protocols``: if aioquic renames them, this fails (and the behaviour tests below)."""
    assert "retry" in QuicServer.__init__.__code__.co_varnames
    names = QuicServer.datagram_received.__code__.co_names
    assert "_retry" in names, "aioquic's QuicServer no longer reads _retry"
    assert "_protocols" in names, "aioquic's QuicServer no longer keeps _protocols"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("always", QuicPacketType.RETRY), ("never", QuicPacketType.INITIAL)],
)
async def test_address_validation_decides_whether_a_new_client_gets_a_retry(
    tmp_path: Path, mode: str, expected: QuicPacketType
) -> None:
    async with _harness(tmp_path, HandshakeGuard(address_validation=mode)) as harness:
        assert isinstance(harness.server, AdmittingQuicServer)
        assert await _first_answer(harness.port) is expected
        link, recorder = await harness.connect()  # a real client passes either way
        link.write(b"through")
        assert await recorder.wait_for(7) == b"through"
        link.close()
        link.release()


async def test_under_load_new_clients_get_a_retry(tmp_path: Path) -> None:
    guard = HandshakeGuard(address_validation="load", retry_threshold=1)
    async with _harness(tmp_path, guard) as harness:
        assert await _first_answer(harness.port) is QuicPacketType.INITIAL  # now 1 in progress
        assert guard.in_progress == 1
        assert await _first_answer(harness.port) is QuicPacketType.RETRY
        assert guard.in_progress == 1


def test_guard_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        HandshakeGuard(address_validation="sometimes")
    with pytest.raises(ValueError):
        HandshakeGuard(max_handshakes=0)
    with pytest.raises(ValueError):
        HandshakeGuard(handshake_timeout=0)
