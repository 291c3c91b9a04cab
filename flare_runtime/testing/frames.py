"""A readable view of Flare frames for tests and tools: one dataclass per frame type.

`encode_frame` turns a view into wire bytes and `decode_frames` turns bytes
back into views, through the encoders and payload decoders of
`flare_runtime.protocol.frames` (so the view and the protocol cannot
disagree). No limits are applied: this is a reference codec for writing and
reading test traffic, not for untrusted input (`Connection` enforces the
limits). h2's tests keep their `FrameFactory` on the test side for the same
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.protocol.frames import (
    FLAG_END_CALL,
    FLAG_END_STREAM,
    HEADER,
    HEADER_SIZE,
    FrameType,
    MetadataPairs,
    decode_call_start_payload,
    decode_close_payload,
    decode_code_reason_payload,
    decode_compact_call_start_payload,
    decode_end_call_payload,
    decode_goaway_payload,
    decode_hello_payload,
    decode_metadata,
    decode_ping_payload,
    decode_window_update_payload,
    encode_call_start,
    encode_cancel,
    encode_close,
    encode_end_call,
    encode_goaway,
    encode_half_close,
    encode_headers,
    encode_hello,
    encode_message,
    encode_ping,
    encode_pong,
    encode_push,
    encode_window_update,
)


@dataclass(frozen=True, slots=True)
class HelloFrame:
    """HELLO (§4): magic, the version range the sender speaks, its settings."""

    min_version: int
    max_version: int
    settings: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CallStartFrame:
    """CALL_START (§3.2): client opens call `call_id` on the route with wire id `wire_id`."""

    call_id: int
    wire_id: int
    timeout_us: int = 0
    metadata: MetadataPairs = ()
    message: bytes | None = None
    """The request of a compact call start (flag END_STREAM), else None."""


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    """HEADERS (§3.3): the server's response headers."""

    call_id: int
    metadata: MetadataPairs = ()


@dataclass(frozen=True, slots=True)
class MessageFrame:
    """MESSAGE (§3.4): one serialized message."""

    call_id: int
    data: bytes
    end_stream: bool = False
    end_call: bool = False
    """The compact end (flag END_CALL): the call ended OK with this message."""


@dataclass(frozen=True, slots=True)
class HalfCloseFrame:
    """HALF_CLOSE (§3.5): the client sends no more messages."""

    call_id: int


@dataclass(frozen=True, slots=True)
class EndCallFrame:
    """END_CALL (§3.6): the server ends the call with a status."""

    call_id: int
    status: int
    message: str = ""
    details: bytes = b""
    trailers: MetadataPairs = ()


@dataclass(frozen=True, slots=True)
class CancelFrame:
    """CANCEL (§3.7): the client abandons the call."""

    call_id: int
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    """WINDOW_UPDATE (§6): more send credit for a call."""

    call_id: int
    increment: int


@dataclass(frozen=True, slots=True)
class PushFrame:
    """PUSH (§3.8): a server-initiated message of push type `type_id`."""

    type_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PingFrame:
    """PING (§3.9)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PongFrame:
    """PONG (§3.9)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    """GOAWAY (§3.10): the server processes no call above `last_call_id`."""

    last_call_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CloseFrame:
    """CLOSE (§8): the sender closes the connection."""

    code: int
    reason: str = ""


Frame: TypeAlias = (
    HelloFrame
    | CallStartFrame
    | HeadersFrame
    | MessageFrame
    | HalfCloseFrame
    | EndCallFrame
    | CancelFrame
    | WindowUpdateFrame
    | PushFrame
    | PingFrame
    | PongFrame
    | GoAwayFrame
    | CloseFrame
)


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame view to its wire bytes."""
    match frame:
        case HelloFrame():
            return encode_hello(frame.min_version, frame.max_version, frame.settings)
        case CallStartFrame():
            return encode_call_start(
                frame.call_id, frame.wire_id, frame.timeout_us, frame.metadata, frame.message
            )
        case HeadersFrame():
            return encode_headers(frame.call_id, frame.metadata)
        case MessageFrame():
            return encode_message(frame.call_id, frame.data, frame.end_stream, frame.end_call)
        case HalfCloseFrame():
            return encode_half_close(frame.call_id)
        case EndCallFrame():
            return encode_end_call(
                frame.call_id, frame.status, frame.message, frame.details, frame.trailers
            )
        case CancelFrame():
            return encode_cancel(frame.call_id, frame.code, frame.reason)
        case WindowUpdateFrame():
            return encode_window_update(frame.call_id, frame.increment)
        case PushFrame():
            return encode_push(frame.type_id, frame.data)
        case PingFrame():
            return encode_ping(frame.data)
        case PongFrame():
            return encode_pong(frame.data)
        case GoAwayFrame():
            return encode_goaway(frame.last_call_id, frame.reason)
        case CloseFrame():
            return encode_close(frame.code, frame.reason)


def decode_frame(frame_type: int, flags: int, call_id: int, payload: bytes) -> Frame:
    """Decode one frame from its header fields and payload; `RemoteProtocolError` if malformed."""
    end = len(payload)
    if frame_type == FrameType.MESSAGE:
        return MessageFrame(
            call_id, payload, bool(flags & FLAG_END_STREAM), bool(flags & FLAG_END_CALL)
        )
    if frame_type == FrameType.PUSH:
        return PushFrame(call_id, payload)
    if frame_type == FrameType.CALL_START:
        if not flags & FLAG_END_STREAM:
            wire_id, timeout_us, metadata = decode_call_start_payload(payload, 0, end)
            return CallStartFrame(call_id, wire_id, timeout_us, metadata)
        wire_id, timeout_us, metadata, pos = decode_compact_call_start_payload(payload, 0, end)
        return CallStartFrame(call_id, wire_id, timeout_us, metadata, payload[pos:])
    if frame_type == FrameType.HEADERS:
        return HeadersFrame(call_id, decode_metadata(payload, 0, end))
    if frame_type == FrameType.HALF_CLOSE:
        if end:
            raise RemoteProtocolError("HALF_CLOSE payload must be empty")
        return HalfCloseFrame(call_id)
    if frame_type == FrameType.END_CALL:
        return EndCallFrame(call_id, *decode_end_call_payload(payload, 0, end))
    if frame_type == FrameType.CANCEL:
        return CancelFrame(call_id, *decode_code_reason_payload(payload, 0, end, "CANCEL"))
    if frame_type == FrameType.WINDOW_UPDATE:
        return WindowUpdateFrame(call_id, decode_window_update_payload(payload, 0, end))
    if frame_type == FrameType.PING:
        return PingFrame(decode_ping_payload(payload, 0, end))
    if frame_type == FrameType.PONG:
        return PongFrame(decode_ping_payload(payload, 0, end))
    if frame_type == FrameType.GOAWAY:
        return GoAwayFrame(*decode_goaway_payload(payload, 0, end))
    if frame_type == FrameType.CLOSE:
        return CloseFrame(*decode_close_payload(payload, 0, end))
    if frame_type == FrameType.HELLO:
        return HelloFrame(*decode_hello_payload(payload, 0, end))
    raise RemoteProtocolError(f"unknown frame type 0x{frame_type:02x}")


def decode_frames(data: bytes) -> tuple[list[Frame], int]:
    """Decode every complete frame in `data`; return them and the bytes consumed.

    No limits are applied: this is the reference decoder for tests and tools,
    not for untrusted input (`Connection` enforces the limits).
    """
    frames: list[Frame] = []
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        length, frame_type, flags, call_id = HEADER.unpack_from(data, pos)
        stop = pos + HEADER_SIZE + length
        if stop > len(data):
            break
        frames.append(
            decode_frame(frame_type, flags, call_id, bytes(data[pos + HEADER_SIZE : stop]))
        )
        pos = stop
    return frames, pos
