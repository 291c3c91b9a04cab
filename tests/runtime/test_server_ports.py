"""A listener's port is its process's alone, unless the server is one of several workers.

For each built-in transport: a second server on a busy port fails with
"address already in use" (grpcio would share it through SO_REUSEPORT if let
do so), and two servers started with `SharedPorts` -- what ``flare serve
--workers`` gives each worker -- share one port.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flare_runtime.errors import ConfigurationError
from flare_runtime.server import Server, SharedPorts, TLSFiles
from flare_runtime.testing.service import SERVICE, ConformanceService
from flare_runtime.transports.quic_certs import write_dev_certificate

TRANSPORTS = ["websocket", "grpc", "quic"]


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    files = write_dev_certificate(tmp_path)
    return TLSFiles(str(files.certificate), str(files.private_key))


def _server() -> Server:
    return Server([(SERVICE, ConformanceService())])


def _address(transport: str, port: int) -> dict[str, str]:
    return {transport: f"127.0.0.1:{port}"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_second_server_on_a_busy_port_fails_with_address_already_in_use(
    transport: str, tls: TLSFiles
) -> None:
    first, second = _server(), _server()
    await first.start(**_address(transport, 0), tls=tls)  # type: ignore[arg-type]
    try:
        port = first.port(transport)
        with pytest.raises((OSError, ConfigurationError), match=r"[Aa]ddress already in use"):
            await second.start(**_address(transport, port), tls=tls)  # type: ignore[arg-type]
    finally:
        await first.shutdown(0)
        await second.shutdown(0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_workers_given_shared_ports_bind_the_same_port(
    transport: str, tls: TLSFiles, tmp_path: Path
) -> None:
    servers = [_server(), _server()]
    await servers[0].start(
        **_address(transport, 0),  # type: ignore[arg-type]
        tls=tls,
        shared_ports=SharedPorts(0, 2, directory=str(tmp_path)),
    )
    try:
        port = servers[0].port(transport)
        await servers[1].start(
            **_address(transport, port),  # type: ignore[arg-type]
            tls=tls,
            shared_ports=SharedPorts(1, 2, directory=str(tmp_path)),
        )
        assert servers[1].port(transport) == port
        # ... and a server that is not one of them still cannot.
        kind = socket.SOCK_DGRAM if transport == "quic" else socket.SOCK_STREAM
        with (
            socket.socket(socket.AF_INET, kind) as stranger,
            pytest.raises(OSError, match="Address already in use"),
        ):
            stranger.bind(("127.0.0.1", port))
    finally:
        for server in servers:
            await server.shutdown(0)
