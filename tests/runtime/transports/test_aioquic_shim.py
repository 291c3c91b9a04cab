"""The aioquic internals the QUIC link reads (`aioquic_shim`) still mean what the link expects.

Two real aioquic connections, no sockets: datagrams are moved by hand. If a
test here fails after an aioquic upgrade, update
flare_runtime/transports/aioquic_shim.py (and the link's timer re-arm) first.
"""

from __future__ import annotations

import asyncio

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from flare_runtime.transports.aioquic_shim import (
    network_peer_address,
    stream_has_unsent_data,
    stream_unacked_bytes,
)
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

CLIENT_ADDRESS = ("10.0.0.1", 4000)
SERVER_ADDRESS = ("10.0.0.2", 443)
STREAM = 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return write_dev_certificate(tmp_path_factory.mktemp("shim"))


def _pair(files: CertificateFiles) -> tuple[QuicConnection, QuicConnection]:
    server_configuration = QuicConfiguration(is_client=False, alpn_protocols=["shim"])
    server_configuration.load_cert_chain(files.certificate, files.private_key)
    client_configuration = QuicConfiguration(is_client=True, alpn_protocols=["shim"])
    client_configuration.load_verify_locations(cafile=str(files.certificate))
    client_configuration.server_name = "localhost"
    client = QuicConnection(configuration=client_configuration)
    server = QuicConnection(
        configuration=server_configuration,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    client.connect(SERVER_ADDRESS, now=0.0)
    _exchange(client, server)
    return client, server


def _exchange(client: QuicConnection, server: QuicConnection, now: float = 0.0) -> float:
    """Move datagrams both ways until neither side has any; return the clock.

    The clock moves 10 ms a round, so pacing lets every datagram go.
    """
    for _ in range(50):
        moved = False
        for data, _address in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT_ADDRESS, now=now)
            moved = True
        for data, _address in server.datagrams_to_send(now=now):
            client.receive_datagram(data, SERVER_ADDRESS, now=now)
            moved = True
        now += 0.01
        if not moved:
            break
    return now


def test_unacked_and_unsent_bytes_of_a_stream(certificate: CertificateFiles) -> None:
    client, server = _pair(certificate)
    assert stream_unacked_bytes(client, STREAM) == 0  # no stream yet
    assert not stream_has_unsent_data(client, STREAM, 0)
    client.send_stream_data(STREAM, b"x" * 3000)
    assert stream_unacked_bytes(client, STREAM) == 3000
    assert stream_has_unsent_data(client, STREAM, 3000)  # queued, no transmit pass yet
    now = 1.0
    while stream_has_unsent_data(client, STREAM, 3000) and now < 2.0:
        for data, _address in client.datagrams_to_send(now=now):  # paced: a few per pass
            server.receive_datagram(data, CLIENT_ADDRESS, now=now)
        now += 0.01
    assert not stream_has_unsent_data(client, STREAM, 3000)  # all sent ...
    assert stream_unacked_bytes(client, STREAM) > 0  # ... and not all acknowledged yet
    server.handle_timer(now=now + 1.0)  # the server's ACK delay passes
    _exchange(client, server, now + 1.0)
    assert stream_unacked_bytes(client, STREAM) == 0


def test_the_peer_address_is_the_current_path(certificate: CertificateFiles) -> None:
    client, server = _pair(certificate)
    assert network_peer_address(server) == CLIENT_ADDRESS
    assert network_peer_address(client) == SERVER_ADDRESS
    fresh = QuicConnection(configuration=QuicConfiguration(is_client=True))
    assert network_peer_address(fresh) is None


async def test_the_protocol_timer_fields_the_link_re_arms(certificate: CertificateFiles) -> None:
    client, _server = _pair(certificate)
    protocol = QuicConnectionProtocol(client)
    # `QuicLink._rearm_timer` does what aioquic's transmit pass does with these.
    assert protocol._timer is None and protocol._timer_at is None
    assert callable(protocol._handle_timer)
    protocol.connection_made(_NullTransport())
    protocol.transmit()
    assert isinstance(protocol._timer, asyncio.TimerHandle)
    assert protocol._timer_at == client.get_timer()
    protocol._timer.cancel()


class _NullTransport(asyncio.DatagramTransport):
    def sendto(self, data: bytes, addr: object = None) -> None:  # type: ignore[override]
        pass
