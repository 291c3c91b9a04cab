"""Frames: every frame type round-trips (through the `flare_runtime.testing.frames` view);
malformed payloads raise RemoteProtocolError only; the frame walkers and the heads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.metadata import MetadataValue
from flare_runtime.protocol import frames as frames_module
from flare_runtime.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    FrameType,
    PreparedPush,
    decode_metadata,
    decode_varint,
    encode_metadata,
    encode_push,
    encode_varint,
)
from flare_runtime.testing.frames import (
    CallStartFrame,
    CancelFrame,
    CloseFrame,
    EndCallFrame,
    Frame,
    GoAwayFrame,
    HalfCloseFrame,
    HeadersFrame,
    HelloFrame,
    MessageFrame,
    PingFrame,
    PongFrame,
    PushFrame,
    WindowUpdateFrame,
    decode_frame,
    decode_frames,
    encode_frame,
)

u8 = st.integers(0, 255)
u16 = st.integers(0, (1 << 16) - 1)
u32 = st.integers(0, (1 << 32) - 1)
call_ids = st.integers(1, (1 << 32) - 1)
text = st.text(max_size=40)
key_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@st.composite
def metadata_entry(draw: st.DrawFn) -> tuple[str, MetadataValue]:
    key = draw(st.text(key_chars, min_size=1, max_size=20))
    if key.endswith("-bin") or draw(st.booleans()):
        return key + "-bin", draw(st.binary(max_size=40))
    return key, draw(text)


metadata = st.lists(metadata_entry(), max_size=6).map(tuple)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        HelloFrame,
        u16,
        u16,
        st.lists(st.tuples(u16, u32), max_size=8).map(tuple),
    ),
    st.builds(
        CallStartFrame,
        call_ids,
        u32,
        st.integers(0, (1 << 64) - 1),
        metadata,
        st.none() | st.binary(max_size=300),
    ),
    st.builds(HeadersFrame, call_ids, metadata),
    st.builds(MessageFrame, call_ids, st.binary(max_size=300), st.booleans(), st.booleans()),
    st.builds(HalfCloseFrame, call_ids),
    st.builds(EndCallFrame, call_ids, u8, text, st.binary(max_size=60), metadata),
    st.builds(CancelFrame, call_ids, u8, text),
    st.builds(WindowUpdateFrame, call_ids, st.integers(1, (1 << 31) - 1)),
    st.builds(PushFrame, u32, st.binary(max_size=300)),
    st.builds(PingFrame, st.binary(min_size=8, max_size=8)),
    st.builds(PongFrame, st.binary(min_size=8, max_size=8)),
    st.builds(GoAwayFrame, u32, text),
    st.builds(CloseFrame, u16, text),
)


@given(frames)
def test_every_frame_type_round_trips(frame: Frame) -> None:
    if isinstance(frame, HelloFrame) and frame.min_version > frame.max_version:
        frame = HelloFrame(frame.max_version, frame.min_version, frame.settings)
    wire = encode_frame(frame)
    length, _, _, _ = HEADER.unpack_from(wire)
    assert length == len(wire) - HEADER_SIZE
    decoded, consumed = decode_frames(wire)
    assert decoded == [frame]
    assert consumed == len(wire)


@given(st.lists(frames, max_size=6), st.integers(0, 50))
def test_a_byte_stream_of_frames_decodes_in_order_and_stops_at_a_partial_frame(
    batch: list[Frame], cut: int
) -> None:
    batch = [HelloFrame(0, 0) if isinstance(frame, HelloFrame) else frame for frame in batch]
    wire = b"".join(encode_frame(frame) for frame in batch)
    cut = min(cut, len(wire))
    decoded, consumed = decode_frames(wire[: len(wire) - cut])
    assert decoded == batch[: len(decoded)]
    assert consumed == sum(len(encode_frame(frame)) for frame in decoded)


def test_every_frame_type_has_a_view() -> None:
    covered = {
        HelloFrame: FrameType.HELLO,
        CallStartFrame: FrameType.CALL_START,
        HeadersFrame: FrameType.HEADERS,
        MessageFrame: FrameType.MESSAGE,
        HalfCloseFrame: FrameType.HALF_CLOSE,
        EndCallFrame: FrameType.END_CALL,
        CancelFrame: FrameType.CANCEL,
        WindowUpdateFrame: FrameType.WINDOW_UPDATE,
        PushFrame: FrameType.PUSH,
        PingFrame: FrameType.PING,
        PongFrame: FrameType.PONG,
        GoAwayFrame: FrameType.GOAWAY,
        CloseFrame: FrameType.CLOSE,
    }
    assert set(covered.values()) == set(FrameType)


@given(u32)
def test_varint_round_trips(value: int) -> None:
    wire = encode_varint(value)
    assert decode_varint(wire, 0, len(wire)) == (value, len(wire))
    assert len(wire) <= 5


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x80", b"\xff\xff", b"\xff\xff\xff\xff\xff\x01", b"\xff\xff\xff\xff\x7f"],
    ids=["empty", "truncated", "truncated-2", "six-bytes", "over-32-bits"],
)
def test_bad_varints_are_remote_protocol_errors(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_varint(wire, 0, len(wire))


@given(metadata)
def test_metadata_round_trips(pairs: tuple[tuple[str, MetadataValue], ...]) -> None:
    block = encode_metadata(pairs)
    assert decode_metadata(block, 0, len(block)) == pairs


def test_metadata_rejects_values_of_the_wrong_kind_when_encoding() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        encode_metadata([("clé", "v")])
    with pytest.raises(ValueError, match="needs a str value"):
        encode_metadata([("k", 3)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="needs a str value"):
        encode_metadata([("k", b"raw")])
    with pytest.raises(ValueError, match="needs a bytes value"):
        encode_metadata([("k-bin", "text")])


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x01\x01a\x02b", "past the end"),
        (b"\x05\x01a\x01b", "count exceeds"),
        (b"\x01\x01a\x01b\x00", "trailing bytes"),
        (b"\x01\x00\x01b", "invalid metadata key"),
        (b"\x01\x01\xff\x01b", "invalid metadata key"),
        (b"\x01\x01a\x01\xff", "not valid UTF-8"),
    ],
)
def test_malformed_metadata_is_a_remote_protocol_error(block: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_metadata(block, 0, len(block))


@given(st.integers(0, 255), st.integers(0, 255), call_ids, st.binary(max_size=64))
def test_decoding_garbage_raises_only_remote_protocol_error(
    frame_type: int, flags: int, call_id: int, payload: bytes
) -> None:
    try:
        decode_frame(frame_type, flags, call_id, payload)
    except RemoteProtocolError:
        return
    assert frame_type in set(FrameType), "an unknown type must not decode"


@pytest.mark.parametrize(
    ("frame_type", "payload", "message"),
    [
        (FrameType.HELLO, b"FLARE\x00\x01", "malformed HELLO"),
        (FrameType.HELLO, b"HTTP/\x00\x01\x00\x01", "magic"),
        (FrameType.HELLO, b"FLARE\x00\x02\x00\x01", "range is empty"),
        (FrameType.CALL_START, b"\x00" * 12, "truncated CALL_START"),
        (FrameType.HALF_CLOSE, b"x", "must be empty"),
        (FrameType.END_CALL, b"\x00\x00", "truncated END_CALL"),
        (FrameType.END_CALL, b"\x00\x00\x00", "truncated END_CALL"),
        (FrameType.CANCEL, b"", "truncated CANCEL"),
        (FrameType.WINDOW_UPDATE, b"\x00\x00\x00\x00", "out of range"),
        (FrameType.WINDOW_UPDATE, b"\x80\x00\x00\x00", "out of range"),
        (FrameType.WINDOW_UPDATE, b"\x00\x01", "must be 4 bytes"),
        (FrameType.PING, b"1234567", "must be 8 bytes"),
        (FrameType.PONG, b"123456789", "must be 8 bytes"),
        (FrameType.GOAWAY, b"\x00", "truncated GOAWAY"),
        (FrameType.CLOSE, b"\x00", "truncated CLOSE"),
        (FrameType.CLOSE, b"\x00\x00\xff", "not valid UTF-8"),
        (0x7F, b"", "unknown frame type 0x7f"),
    ],
)
def test_each_malformed_payload_has_a_clear_error(
    frame_type: int, payload: bytes, message: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_frame(frame_type, 0, 1, payload)


def test_push_encoding_is_connection_independent_bytes() -> None:
    wire = encode_push(7, b"event")
    assert wire == bytes.fromhex("00000005 09 00 00000007") + b"event"
    assert decode_frames(wire) == ([PushFrame(7, b"event")], len(wire))


def test_prepared_push_builds_its_frame_once() -> None:
    push = PreparedPush(0x00FA_0004, b"\x0a\x01a")
    frame = push.frame
    assert frame is push.frame  # cached: one frame for every recipient
    assert frame == encode_push(0x00FA_0004, b"\x0a\x01a")
    assert HEADER.unpack_from(frame)[3] == 0x00FA_0004


def test_prepared_push_rejects_a_type_id_the_header_cannot_carry() -> None:
    with pytest.raises(ValueError, match="u32"):
        PreparedPush(1 << 32, b"")


# ---------------------------------------------------------------------------- heads and walkers


@given(call_ids, u32, st.integers(0, (1 << 64) - 1), metadata, st.binary(max_size=40))
def test_call_start_heads_build_the_same_bytes_as_encode_call_start(
    call_id: int,
    wire_id: int,
    timeout_us: int,
    pairs: tuple[tuple[str, MetadataValue], ...],
    message: bytes,
) -> None:
    block = encode_metadata(pairs)
    size = len(block) if pairs else 0
    compact = frames_module.compact_call_start_head(
        call_id, wire_id, timeout_us, size, len(message)
    )
    assert compact + (block if pairs else b"") + message == frames_module.encode_call_start(
        call_id, wire_id, timeout_us, pairs, message
    )
    plain = frames_module.encode_call_start(call_id, wire_id, timeout_us, pairs)
    if pairs:
        assert frames_module.call_start_head(call_id, wire_id, timeout_us, size) + block == plain
        return
    assert frames_module.empty_call_start(call_id, wire_id, timeout_us) == plain
    for end_stream in (False, True):
        head = frames_module.empty_call_start_and_message_head(
            call_id, wire_id, timeout_us, len(message), end_stream
        )
        assert head + message == plain + frames_module.encode_message(call_id, message, end_stream)


def test_the_ok_end_call_is_the_four_byte_payload() -> None:
    expected = HEADER.pack(4, FrameType.END_CALL, 0, 9) + b"\x00\x00\x00\x00"
    assert frames_module.encode_end_call_ok(9) == expected
    assert decode_frames(expected)[0] == [EndCallFrame(9, 0)]


@given(st.lists(frames, max_size=6), st.integers(0, 60))
def test_peek_frame_reads_each_header_and_a_call_starts_wire_id(
    sequence: list[Frame], cut: int
) -> None:
    data = b"".join(encode_frame(frame) for frame in sequence)
    position = 0
    for frame in sequence:
        peeked = frames_module.peek_frame(data, position)
        assert peeked is not None
        frame_type, length, wire_id = peeked
        assert wire_id == (frame.wire_id if isinstance(frame, CallStartFrame) else None)
        assert frame_type == HEADER.unpack_from(data, position)[1]
        # A prefix too short to tell: None, never a wrong answer.
        short = data[: position + min(cut, HEADER_SIZE + 3)]
        assert frames_module.peek_frame(short, position) in (None, peeked)
        position += HEADER_SIZE + length
    assert frames_module.peek_frame(data, position) is None


@given(st.lists(frames, max_size=12), st.integers(1, 200))
def test_split_frames_cuts_only_between_frames_and_keeps_every_byte(
    sequence: list[Frame], max_size: int
) -> None:
    data = b"".join(encode_frame(frame) for frame in sequence)
    pieces = frames_module.split_frames(data, max_size)
    assert b"".join(pieces) == data
    for piece in pieces:
        count = position = 0
        while position < len(piece):
            position += HEADER_SIZE + HEADER.unpack_from(piece, position)[0]
            count += 1
        assert position == len(piece)  # whole frames only
        assert len(piece) <= max_size or count == 1  # over the cap: one frame alone
