"""The cluster envelope codec, without I/O: every kind round-trips; anything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flare_runtime.cluster import envelope
from flare_runtime.cluster.envelope import Envelope, Kind, MalformedEnvelopeError

PREFIX = envelope.echo_prefix(b"node-1")


def test_every_kind_round_trips() -> None:
    assert envelope.decode(envelope.encode_event(PREFIX, 7, b"payload")) == Envelope(
        b"node-1", Kind.EVENT, type_id=7, payload=b"payload"
    )
    assert envelope.decode(envelope.encode_direct(PREFIX, 2**40, 0xFFFFFFFF, b"")) == Envelope(
        b"node-1", Kind.DIRECT, type_id=0xFFFFFFFF, connection_id=2**40
    )
    assert envelope.decode(envelope.encode_close(PREFIX, 3, "kicked: é")) == Envelope(
        b"node-1", Kind.CLOSE, connection_id=3, payload="kicked: é".encode()
    )
    assert envelope.decode(envelope.encode_lost(PREFIX)) == Envelope(b"node-1", Kind.LOST)
    assert envelope.decode(envelope.encode_lost(PREFIX, everything=True)) == Envelope(
        b"node-1", Kind.LOST_ALL
    )


def test_every_envelope_starts_with_its_origins_prefix() -> None:
    for data in (
        envelope.encode_event(PREFIX, 1, b"x"),
        envelope.encode_direct(PREFIX, 1, 1, b"x"),
        envelope.encode_close(PREFIX, 1, ""),
        envelope.encode_lost(PREFIX),
    ):
        assert data.startswith(PREFIX)
        assert not data.startswith(envelope.echo_prefix(b"node-10"))
        assert not data.startswith(envelope.echo_prefix(b"node-"))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "not a version 1"),
        (b"\x02\x01a\x01\x00\x00\x00\x01", "not a version 1"),
        (b"\x01\x00\x01", "truncated"),
        (b"\x01\x05ab", "truncated"),
        (b"\x01\x01a\x09", "unknown cluster envelope kind 9"),
        (b"\x01\x01a\x01\x00\x00", "truncated EVENT"),
        (b"\x01\x01a\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00", "truncated DIRECT"),
        (b"\x01\x01a\x03\x00", "truncated CLOSE"),
        (b"\x01\x01a\x04extra", "trailing"),
    ],
)
def test_malformed_envelopes_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=error):
        envelope.decode(data)


def test_node_ids_fit_the_length_byte() -> None:
    with pytest.raises(ValueError, match="1 to 255"):
        envelope.echo_prefix(b"")
    with pytest.raises(ValueError, match="1 to 255"):
        envelope.echo_prefix(b"x" * 256)


@given(st.binary(max_size=64))
def test_decoding_any_bytes_returns_or_refuses(data: bytes) -> None:
    try:
        decoded = envelope.decode(data)
    except MalformedEnvelopeError:
        return
    assert decoded.origin == data[2 : 2 + data[1]]
