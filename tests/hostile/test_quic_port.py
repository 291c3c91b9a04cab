"""Hostile peers on the QUIC port: raw UDP datagrams, QUIC clients that misbehave.

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). A real
server on 127.0.0.1, real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted
from examples.chat.v1 import chat_flare, chat_pb2
from google.protobuf.empty_pb2 import Empty
from google.protobuf.wrappers_pb2 import BytesValue, StringValue

from flare_runtime import RpcError, StatusCode, connect
from flare_runtime.auth import issue_jwt
from flare_runtime.protocol import CLIENT, Connection
from flare_runtime.protocol.frames import encode_call_start
from flare_runtime.protocol.opening import encode_opening_block
from flare_runtime.server import ServerOptions
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.served import ServedProcess
from flare_runtime.testing.service import Routes
from flare_runtime.transports.quic import ALPN, QuicListener
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate
from flare_runtime.transports.quic_settings import QuicServerSettings

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
    started = await start_rig("quic")
    yield started
    await started.server.shutdown(grace=0)


async def test_two_credentials_in_the_opening_block_are_refused(rig: Rig) -> None:
    """Input: a QUIC connection whose opening metadata block holds two ``authorization``
    entries (a valid token and another). Outcome: the connection's authentication fails as
    ambiguous: an authenticated route answers UNAUTHENTICATED "ambiguous credentials";
    neither credential is picked."""
    async with rig.connect(
        token=rig.token(), metadata=[("authorization", "Bearer not-a-token")]
    ) as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.WHO_AM_I, StringValue(), timeout=TIMEOUT)
    assert caught.value.code is StatusCode.UNAUTHENTICATED
    assert "ambiguous credentials" in caught.value.message


# ------------------------------------------------------------------ a peer that never ACKs


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return write_dev_certificate(tmp_path_factory.mktemp("quic-cert"))


class SansAckClient:
    """A QUIC client (aioquic, driven by hand on a blocking UDP socket) that completes the
    handshake, then never acknowledges a packet of the server's while it keeps sending on
    the Flare stream. aioquic offers no switch for that: the instance's ACK writer is
    replaced, which only this hostile peer does."""

    def __init__(self, port: int) -> None:
        configuration = QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE
        )
        self.quic = QuicConnection(configuration=configuration)
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.written = 0

    def _transmit(self) -> None:
        for data, _ in self.quic.datagrams_to_send(now=time.monotonic()):
            self.sock.sendto(data, self.address)

    def _receive(self) -> list[object]:
        try:
            while True:
                data, _ = self.sock.recvfrom(65536)
                self.quic.receive_datagram(data, self.address, now=time.monotonic())
        except TimeoutError:
            pass
        timer = self.quic.get_timer()
        if timer is not None and timer <= time.monotonic():
            self.quic.handle_timer(now=time.monotonic())
        events: list[object] = []
        while (event := self.quic.next_event()) is not None:
            events.append(event)
        return events

    def handshake(self) -> None:
        self.quic.connect(self.address, now=time.monotonic())
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            self._transmit()
            if any(isinstance(event, HandshakeCompleted) for event in self._receive()):
                self._transmit()
                self.quic._write_ack_frame = lambda **_: None  # type: ignore[method-assign]
                return
        raise TimeoutError("QUIC handshake did not complete")

    def flood(self, chunks: Iterator[bytes], seconds: float) -> int:
        """Write `chunks` on stream 0 for `seconds`, keeping ~1 MB queued; return bytes sent."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.quic._close_event:
            stream = self.quic._streams.get(0)
            queued = self.written - (stream.sender.next_offset if stream is not None else 0)
            if queued < MB:
                chunk = next(chunks)
                self.quic.send_stream_data(0, chunk)
                self.written += len(chunk)
            self._transmit()
            self._receive()
        return self.written

    def close(self) -> None:
        self.sock.close()


async def test_pipelined_calls_from_a_client_that_never_acks_are_bounded(
    certificate: CertificateFiles,
) -> None:
    """Input: a QUIC client pipelines History calls (each answered with ~20 KB) on the
    chat example and never acknowledges the server's packets, so nothing the server sends
    is ever released. Outcome: past ``max_write_buffer`` unacknowledged bytes the server
    stops reading it; input it cannot refuse (QUIC grants credit on receipt) is held up to
    ``max_buffered_input``, then the connection is closed: memory stays bounded (grew by
    everything it answered: +215 MB)."""
    reader_token = issue_jwt(DEMO_KEY, "eve", scopes=["chat"])
    writer_token = issue_jwt(DEMO_KEY, "ada", scopes=["chat", "chat.write"])
    history_route = 1 << 16 | 5  # examples.chat.v1.ChatService/History
    request = chat_pb2.HistoryRequest(room="r", limit=20).SerializeToString()

    def calls() -> Iterator[bytes]:
        opening = encode_opening_block([("authorization", f"Bearer {reader_token}")])
        yield opening + Connection(CLIENT).data_to_send()
        call_id = 0
        while True:
            frames = []
            for _ in range(1_000):
                call_id += 1
                frames.append(encode_call_start(call_id, history_route, 0, (), request))
            yield b"".join(frames)

    async with ServedProcess.start(
        CHAT, quic=True, tls=certificate, cwd=ROOT, env=CHAT_ENV
    ) as served:
        port = served.ports["quic"]
        async with connect(
            f"quic://127.0.0.1:{port}", token=writer_token, ca_file=str(certificate.certificate)
        ) as channel:
            client = chat_flare.ChatServiceClient(channel)
            for _ in range(20):
                message = chat_pb2.ChatMessage(room="r", text="x" * 1000)
                await client.send(chat_pb2.SendRequest(message=message), timeout=TIMEOUT)
        await asyncio.sleep(0.3)
        before = served.rss()
        hostile = SansAckClient(port)
        try:
            await asyncio.to_thread(hostile.handshake)
            sent = await asyncio.to_thread(hostile.flood, calls(), 10.0)
            await asyncio.sleep(0.5)
            growth = served.rss() - before
            assert served.alive
        finally:
            hostile.close()
    print(f"sent {sent / MB:.1f} MB, server grew {growth / MB:.1f} MB", file=sys.stderr)
    assert growth < 64 * MB, f"server grew {growth / MB:.0f} MB after {sent / MB:.0f} MB"


# ------------------------------------------------------------------ half-open handshakes


def client_initials(count: int) -> list[bytes]:
    """`count` client Initial packets, each opening a new connection (its own connection
    id and TLS ClientHello), as a spoofer would send them: the answers never reach it."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE
    )
    packets = []
    for _ in range(count):
        quic = QuicConnection(configuration=configuration)
        quic.connect(("127.0.0.1", 1), now=0.0)
        packets.append(quic.datagrams_to_send(now=0.0)[0][0])
    return packets


def send_all(port: int, packets: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", port))
            time.sleep(0.002)  # about what the server handles: few are lost to its UDP buffer


class _HalfOpen:
    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    @property
    def handshakes_in_progress(self) -> int:
        listener = self.rig.server._listeners["quic"]
        assert isinstance(listener, QuicListener)
        return listener.handshakes_in_progress


@contextlib.asynccontextmanager
async def half_open(settings: QuicServerSettings, count: int) -> AsyncIterator[_HalfOpen]:
    """A conformance server with `settings`, sent `count` Initials that go no further."""
    rig = await start_rig("quic", ServerOptions(transports={"quic": settings}))
    try:
        packets = await asyncio.to_thread(client_initials, count)
        await asyncio.to_thread(send_all, rig.server.port("quic"), packets)
        await asyncio.sleep(0.1)
        yield _HalfOpen(rig)
    finally:
        await rig.server.shutdown(grace=0)


async def test_a_flood_of_spoofed_initials_is_answered_with_stateless_retry(
    certificate: CertificateFiles,
) -> None:
    """Input: 1,500 QUIC Initial packets, each starting a new connection, whose sender
    never answers (as from spoofed addresses). Outcome: past ``retry_threshold`` (128)
    handshakes in progress the server answers with a stateless Retry, so its memory stays
    bounded, and a real client still connects and calls (through the Retry) meanwhile
    (each half-open handshake held ~51 KB: +496 MB for 10,000)."""
    packets = await asyncio.to_thread(client_initials, 1_500)
    async with ServedProcess.start(
        CHAT, quic=True, tls=certificate, cwd=ROOT, env=CHAT_ENV
    ) as served:
        port = served.ports["quic"]
        url = f"quic://127.0.0.1:{port}"
        async with connect(url, ca_file=str(certificate.certificate), tickets=None) as channel:
            await chat_flare.ChatServiceClient(channel).ping(Empty(), timeout=TIMEOUT)
        await asyncio.sleep(0.3)
        before = served.rss()
        await asyncio.to_thread(send_all, port, packets)
        await asyncio.sleep(1.0)
        growth = served.rss() - before
        async with connect(url, ca_file=str(certificate.certificate), tickets=None) as channel:
            await chat_flare.ChatServiceClient(channel).ping(Empty(), timeout=TIMEOUT)
    print(f"server grew {growth / MB:.1f} MB", file=sys.stderr)
    assert growth < 24 * MB, f"server grew {growth / MB:.0f} MB"


async def test_handshakes_in_progress_are_capped() -> None:
    """Input: 60 Initial packets that each start a connection, to a server with Retry off
    and ``max_handshakes=20``. Outcome: 20 handshakes are in progress, the other Initials
    are dropped (no state)."""
    settings = QuicServerSettings(address_validation="never", max_handshakes=20)
    async with half_open(settings, 60) as listener:
        await asyncio.sleep(0.3)
        assert listener.handshakes_in_progress == 20


async def test_a_handshake_that_does_not_complete_is_dropped() -> None:
    """Input: 10 Initial packets whose sender never continues the handshake, to a server
    with ``handshake_timeout=0.5``. Outcome: 10 handshakes are in progress, none half a
    second later (their state is released), and the server still serves a real client."""
    settings = QuicServerSettings(address_validation="never", handshake_timeout=0.5)
    async with half_open(settings, 10) as listener:
        assert listener.handshakes_in_progress == 10
        async with asyncio.timeout(TIMEOUT):
            while listener.handshakes_in_progress:
                await asyncio.sleep(0.05)
        async with listener.rig.connect() as channel:
            await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"), timeout=TIMEOUT)
