"""The early-data gate: idempotent calls pass; the first other call and all after it wait."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.protocol.frames import (
    encode_call_start,
    encode_hello,
    encode_message,
    encode_ping,
)
from flare_runtime.transports.quic_early_data import MAX_HELD_BYTES, EarlyDataGate

IDEMPOTENT = 0x10001
NOT_IDEMPOTENT = 0x10002


def is_idempotent(wire_id: int) -> bool:
    return wire_id == IDEMPOTENT


def frames_for(kinds: list[str]) -> list[bytes]:
    out = [encode_hello(1, 1, [(1, 65536)])]
    for call_id, kind in enumerate(kinds, start=1):
        if kind == "ping":
            out.append(encode_ping(b"12345678"))
            continue
        route = IDEMPOTENT if kind == "idempotent" else NOT_IDEMPOTENT
        out.append(encode_call_start(call_id, route, 0, [("k", "v" * call_id)]))
        out.append(encode_message(call_id, b"x" * (call_id * 7), end_stream=True))
    return out


def feed_in_chunks(gate: EarlyDataGate, stream: bytes, cuts: list[int]) -> bytes:
    passed = bytearray()
    last = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        passed += gate.feed(stream[last:cut])
        last = cut
    return bytes(passed)


@given(
    kinds=st.lists(st.sampled_from(["idempotent", "other", "ping"]), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_passes_exactly_the_frames_before_the_first_non_idempotent_call(
    kinds: list[str], cuts: list[int]
) -> None:
    frames = frames_for(kinds)
    stream = b"".join(frames)
    expected_pass = bytearray(frames[0])
    for kind, frame_pair in zip(kinds, _pairs(frames[1:], kinds), strict=True):
        if kind == "other":
            break
        expected_pass += frame_pair
    gate = EarlyDataGate(is_idempotent)
    passed = feed_in_chunks(gate, stream, [c for c in cuts if c <= len(stream)])
    assert passed == bytes(expected_pass)
    assert gate.holding == ("other" in kinds)
    assert passed + gate.release() == stream


def _pairs(frames: list[bytes], kinds: list[str]) -> list[bytes]:
    out: list[bytes] = []
    index = 0
    for kind in kinds:
        if kind == "ping":
            out.append(frames[index])
            index += 1
        else:
            out.append(frames[index] + frames[index + 1])
            index += 2
    return out


def test_a_header_split_across_feeds_is_delivered_once() -> None:
    stream = b"".join(frames_for(["idempotent"]))
    gate = EarlyDataGate(is_idempotent)
    passed = b"".join(gate.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert passed == stream
    assert gate.release() == b""


def test_unknown_routes_are_held() -> None:
    gate = EarlyDataGate(lambda wire_id: False)
    frame = encode_call_start(1, IDEMPOTENT, 0)
    assert gate.feed(frame) == b""
    assert gate.held_calls == 1
    assert gate.release() == frame


def test_holding_is_bounded() -> None:
    gate = EarlyDataGate(is_idempotent)
    gate.feed(encode_call_start(1, NOT_IDEMPOTENT, 0))
    with pytest.raises(RemoteProtocolError, match="held"):
        for _ in range(MAX_HELD_BYTES // 65536 + 2):
            gate.feed(bytes(65536))
