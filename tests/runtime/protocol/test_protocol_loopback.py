"""ConnectionPair: the in-memory client/server pair the protocol tests stand on."""

from __future__ import annotations

from flare_runtime.protocol import (
    CallStarted,
    HandshakeCompleted,
    MessageReceived,
    PingReceived,
    ProtocolConfig,
)
from flare_runtime.protocol.loopback import ConnectionPair


def test_a_pair_starts_established_or_not() -> None:
    assert ConnectionPair().client.established
    pair = ConnectionPair(handshake=False)
    assert not pair.client.established
    client_events, server_events = pair.exchange()
    assert isinstance(client_events[0], HandshakeCompleted)
    assert isinstance(server_events[0], HandshakeCompleted)


def test_chunked_delivery_reaches_the_peer_a_byte_at_a_time() -> None:
    pair = ConnectionPair(chunk_size=1)
    call_id = pair.client.start_call(1, message=b"abc")
    assert pair.to_server() == [
        CallStarted(call_id, 1, (), None, None),
        MessageReceived(call_id, b"abc"),
    ]


def test_advance_runs_due_timers_on_both_sides() -> None:
    config = ProtocolConfig(keepalive_interval=5.0)
    pair = ConnectionPair(config, ProtocolConfig(keepalive_interval=None))
    assert pair.advance(4.0) == ([], [])
    _, server_events = pair.advance(1.0)
    assert server_events == [PingReceived((1).to_bytes(8, "big"))]
    assert pair.now == 5.0
