"""`connect`: scheme registry and connection failures."""

from __future__ import annotations

import socket

import pytest

from flare_runtime.client import connect
from flare_runtime.errors import ConfigurationError, ConnectionClosedError
from flare_runtime.testing.timing import UNIT


async def test_unknown_scheme() -> None:
    with pytest.raises(ConfigurationError) as caught:
        await connect("http://127.0.0.1:1")
    assert str(caught.value).startswith("unsupported URL scheme http://: use one of ws://, ")


async def test_nothing_listening_is_connection_closed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionClosedError):
        await connect(f"ws://127.0.0.1:{port}", open_timeout=5 * UNIT)


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("ws://127.0.0.1:1", "WebSocket"),
        ("quic://127.0.0.1:1", "QUIC"),
        ("grpc://127.0.0.1:1", "gRPC"),
    ],
)
async def test_a_misspelt_transport_option_is_refused(url: str, transport: str) -> None:
    """Every transport refuses an option it does not know, instead of ignoring it."""
    with pytest.raises(ConfigurationError) as caught:
        await connect(url, ca_fle="ca.pem", open_timeout=1 * UNIT)
    assert str(caught.value) == f"unknown {transport} connect options: ca_fle"
