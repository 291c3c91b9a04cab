"""The bytes IM events travel as between nodes (sans-I/O)."""

from __future__ import annotations

import pytest

from flare_runtime.im.cluster import envelope
from flare_runtime.im.cluster.envelope import MalformedEventError


def test_each_kind_round_trips_and_keeps_the_push_bytes_as_they_are() -> None:
    push = b"\x0a\x03abc"
    assert envelope.decode_message(envelope.encode_message(2, 2**40, push)) == (2, 2**40, push)
    routed = envelope.encode_routed(push, exclude="bob", skip_user="alice", skip_session="s1")
    assert envelope.decode_routed(routed) == ("bob", "alice", "s1", push)
    assert envelope.decode_routed(envelope.encode_routed(push)) == ("", "", "", push)
    membership = envelope.encode_membership(7, ["carol", "dave é"], push)
    assert envelope.decode_membership(membership) == (7, ["carol", "dave é"], push)
    control = envelope.encode_control(op="end", session="s", reason=1)
    assert envelope.decode_control(control) == {"op": "end", "session": "s", "reason": 1}


@pytest.mark.parametrize(
    ("decode", "payload"),
    [
        (envelope.decode_message, b"\x00" * 15),
        (envelope.decode_routed, b"\x00"),
        (envelope.decode_routed, b"\x00\x05ab"),
        (envelope.decode_routed, b"\x00\x02\xff\xfe\x00\x00\x00\x00"),
        (envelope.decode_membership, b"\x00" * 9),
        (envelope.decode_membership, b"\x00" * 8 + b"\x00\x02\x00\x01a"),
        (envelope.decode_control, b"not json"),
        (envelope.decode_control, b"[1]"),
        (envelope.decode_control, b'{"session": "s"}'),
    ],
)
def test_a_payload_that_does_not_parse_is_a_typed_error(decode: object, payload: bytes) -> None:
    with pytest.raises(MalformedEventError):
        decode(payload)  # type: ignore[operator]
