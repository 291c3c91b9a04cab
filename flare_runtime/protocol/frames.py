"""Flare frames: the fixed header, every frame type's payload layout, encoders and decoders.

Every frame is a 10-byte header followed by its payload (docs/wire-format.md §2)::

    length   u32 big-endian   payload length in bytes (header not included)
    type     u8               FrameType
    flags    u8               bit 0 = END_STREAM (MESSAGE only); other bits ignored
    call_id  u32 big-endian   the call (0 for connection frames; push type id for PUSH)

The `encode_*` functions build complete frames as `bytes`; `Connection` uses
them for everything but its MESSAGE hot path. The `decode_*_payload`
functions are shared by `Connection` and by `decode_frame`, so the two
cannot disagree; they raise `RemoteProtocolError` on malformed input. The
`*Frame` dataclasses are a readable view of one frame for tests and tools;
the connection's hot path never builds them.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.metadata import Metadata, MetadataValue

HEADER = struct.Struct(">IBBI")
"""length u32, type u8, flags u8, call_id u32 (docs/wire-format.md §2)."""
HEADER_SIZE = HEADER.size

MAGIC = b"FLARE"
"""First five payload bytes of every HELLO frame: tells a Flare peer from anything else."""

FLAG_END_STREAM = 0x01
"""On a client's MESSAGE: the client sends nothing more on this call (half-close).

On a CALL_START: the payload ends with the call's one request message and the
client sends nothing more (the compact call start, §3.2).
"""

FLAG_END_CALL = 0x02
"""On a server's MESSAGE: the call ends with it, status OK, no trailers (compact end, §3.4)."""

MAX_CALL_ID = (1 << 32) - 1
MetadataPairs: TypeAlias = tuple[tuple[str, MetadataValue], ...]
MetadataInput: TypeAlias = "Metadata | Iterable[tuple[str, MetadataValue]]"


class FrameType(enum.IntEnum):
    """Frame type numbers (docs/wire-format.md §3). Unknown types are a PROTOCOL_ERROR."""

    HELLO = 0x01
    CALL_START = 0x02
    HEADERS = 0x03
    MESSAGE = 0x04
    HALF_CLOSE = 0x05
    END_CALL = 0x06
    CANCEL = 0x07
    WINDOW_UPDATE = 0x08
    PUSH = 0x09
    PING = 0x0A
    PONG = 0x0B
    GOAWAY = 0x0C
    CLOSE = 0x0D


class CloseCode(enum.IntEnum):
    """Why a connection was closed: the code in a CLOSE frame (docs/wire-format.md §8)."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    FRAME_TOO_LARGE = 4
    UNSUPPORTED_VERSION = 5
    KEEPALIVE_TIMEOUT = 6


class SettingId(enum.IntEnum):
    """Setting ids carried in HELLO (docs/wire-format.md §4). Unknown ids are ignored."""

    MAX_FRAME_SIZE = 1
    MAX_MESSAGE_SIZE = 2
    MAX_CONCURRENT_CALLS = 3
    INITIAL_WINDOW_SIZE = 4
    MAX_METADATA_SIZE = 5
    COMPACT_CALLS = 6


# ---------------------------------------------------------------------------- primitives

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HELLO_FIXED = struct.Struct(">5sHH")
_SETTING = struct.Struct(">HI")
_CALL_START_FIXED = struct.Struct(">IQ")
_PING_PAYLOAD_SIZE = 8


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 (protobuf's varint), for 0 <= value < 2**32."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a varint at `pos` (before `end`); return (value, position after it).

    At most five bytes (values below 2**32); anything longer or truncated is a
    `RemoteProtocolError`.
    """
    if pos >= end:
        raise RemoteProtocolError("truncated varint")
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise RemoteProtocolError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 28:
            raise RemoteProtocolError("varint longer than 5 bytes")
    if value >= 1 << 32:
        raise RemoteProtocolError("varint exceeds 32 bits")
    return value, pos


def _pack_string(data: bytes) -> bytes:
    return encode_varint(len(data)) + data


def _read_string(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    length, pos = decode_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise RemoteProtocolError("length prefix runs past the end of the frame")
    return bytes(data[pos:stop]), stop


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what} is not valid UTF-8") from None


# ---------------------------------------------------------------------------- metadata

EMPTY_METADATA_BLOCK = b"\x00"


def metadata_pairs(metadata: MetadataInput) -> MetadataPairs:
    """Return `metadata` as a tuple of (key, value) pairs (a `Metadata` gives its entries)."""
    if isinstance(metadata, Metadata):
        return metadata.entries()
    return tuple(metadata)


def encode_metadata(metadata: MetadataInput) -> bytes:
    """Encode a metadata block: varint count, then per entry varint-prefixed key and value.

    Keys are ASCII; a value is UTF-8 text, or raw bytes when its key ends in
    ``-bin`` (docs/wire-format.md §5.2). Raises `ValueError` for a key or value
    of the wrong kind.
    """
    pairs = metadata_pairs(metadata)
    if not pairs:
        return EMPTY_METADATA_BLOCK
    parts = [encode_varint(len(pairs))]
    for key, value in pairs:
        try:
            raw_key = key.encode("ascii")
        except (UnicodeEncodeError, AttributeError):
            raise ValueError(f"metadata key must be an ASCII str, got {key!r}") from None
        if not raw_key:
            raise ValueError("metadata key must not be empty")
        # The gRPC rule (flare_runtime.metadata): `-bin` keys carry bytes, others
        # text; enforced here too so what is sent decodes to what was given.
        if raw_key.endswith(b"-bin"):
            if not isinstance(value, bytes):
                raise ValueError(f"metadata key {key!r} ends in -bin and needs a bytes value")
            raw_value = value
        elif isinstance(value, str):
            raw_value = value.encode("utf-8")
        else:
            raise ValueError(f"metadata key {key!r} needs a str value (use a -bin key for bytes)")
        parts.append(_pack_string(raw_key))
        parts.append(_pack_string(raw_value))
    return b"".join(parts)


def decode_metadata(data: bytes, pos: int, end: int) -> MetadataPairs:
    """Decode the metadata block that fills ``data[pos:end]`` exactly."""
    if end - pos == 1 and data[pos] == 0:
        return ()
    pairs, pos = decode_metadata_prefix(data, pos, end)
    if pos != end:
        raise RemoteProtocolError("trailing bytes after the metadata block")
    return pairs


def decode_metadata_prefix(data: bytes, pos: int, end: int) -> tuple[MetadataPairs, int]:
    """Decode the metadata block at `pos` (before `end`); return it and the position after it."""
    count, pos = decode_varint(data, pos, end)
    # Each entry takes at least 3 bytes; rejecting an impossible count up
    # front keeps a lying count from costing anything.
    if count * 3 > end - pos:
        raise RemoteProtocolError("metadata entry count exceeds the block")
    pairs: list[tuple[str, MetadataValue]] = []
    for _ in range(count):
        raw_key, pos = _read_string(data, pos, end)
        raw_value, pos = _read_string(data, pos, end)
        if not raw_key or not raw_key.isascii():
            raise RemoteProtocolError(f"invalid metadata key {raw_key!r}")
        key = raw_key.decode("ascii")
        if key.endswith("-bin"):
            pairs.append((key, raw_value))
        else:
            pairs.append((key, _utf8(raw_value, f"metadata value of {key!r}")))
    return tuple(pairs), pos


# ---------------------------------------------------------------------------- encoders


def _frame(frame_type: FrameType, flags: int, call_id: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), frame_type, flags, call_id) + payload


def encode_hello(
    min_version: int, max_version: int, settings: Iterable[tuple[int, int]] = ()
) -> bytes:
    """HELLO: magic, the version range the sender speaks, then its settings (§4)."""
    payload = _HELLO_FIXED.pack(MAGIC, min_version, max_version) + b"".join(
        _SETTING.pack(setting_id, value) for setting_id, value in settings
    )
    return _frame(FrameType.HELLO, 0, 0, payload)


def encode_call_start(
    call_id: int,
    wire_id: int,
    timeout_us: int,
    metadata: MetadataInput = (),
    message: bytes | None = None,
) -> bytes:
    """CALL_START: the route's wire id, timeout in microseconds (0 = none), request headers.

    With `message`, the compact call start (§3.2): the request follows the
    headers and the client sends nothing more (flag END_STREAM).
    """
    payload = _CALL_START_FIXED.pack(wire_id, timeout_us) + encode_metadata(metadata)
    if message is None:
        return _frame(FrameType.CALL_START, 0, call_id, payload)
    return _frame(FrameType.CALL_START, FLAG_END_STREAM, call_id, payload + message)


def encode_headers(call_id: int, metadata: MetadataInput) -> bytes:
    """HEADERS: the server's response headers."""
    return _frame(FrameType.HEADERS, 0, call_id, encode_metadata(metadata))


def encode_message(
    call_id: int, data: bytes, end_stream: bool = False, end_call: bool = False
) -> bytes:
    """MESSAGE: one serialized message; END_STREAM only from the client, END_CALL
    (the compact end, §3.4) only from the server."""
    flags = (FLAG_END_STREAM if end_stream else 0) | (FLAG_END_CALL if end_call else 0)
    return _frame(FrameType.MESSAGE, flags, call_id, data)


def encode_half_close(call_id: int) -> bytes:
    """HALF_CLOSE: the client sends no more messages (empty payload)."""
    return HEADER.pack(0, FrameType.HALF_CLOSE, 0, call_id)


_OK_END_CALL_PAYLOAD = b"\x00\x00\x00\x00"


def encode_end_call(
    call_id: int,
    status: int,
    message: str = "",
    details: bytes = b"",
    trailers: MetadataInput = (),
) -> bytes:
    """END_CALL: status u8, varint-prefixed message and details, then the trailers block."""
    if status == 0 and not message and not details and not trailers:
        return HEADER.pack(4, FrameType.END_CALL, 0, call_id) + _OK_END_CALL_PAYLOAD
    payload = (
        bytes((status,))
        + _pack_string(message.encode("utf-8"))
        + _pack_string(details)
        + encode_metadata(trailers)
    )
    return _frame(FrameType.END_CALL, 0, call_id, payload)


def encode_cancel(call_id: int, code: int, reason: str = "") -> bytes:
    """CANCEL: status code u8 (CANCELLED, DEADLINE_EXCEEDED, ...) and a UTF-8 reason."""
    return _frame(FrameType.CANCEL, 0, call_id, bytes((code,)) + reason.encode("utf-8"))


def encode_window_update(call_id: int, increment: int) -> bytes:
    """WINDOW_UPDATE: u32 byte credit added to the call's send window."""
    return HEADER.pack(4, FrameType.WINDOW_UPDATE, 0, call_id) + _U32.pack(increment)


def encode_push(type_id: int, payload: bytes) -> bytes:
    """PUSH: a server-initiated message; the header's call-id field carries the push type id.

    The result does not depend on any connection: `PreparedPush` builds it once
    for every recipient of a fan-out.
    """
    return HEADER.pack(len(payload), FrameType.PUSH, 0, type_id) + payload


class PreparedPush:
    """A push encoded once for any number of connections: "encode once, write to many".

    `payload` is the serialized message; `frame`, the whole PUSH frame, is
    built on first use and then shared, so a fan-out to N connections builds
    one frame and queues the same bytes N times (`Connection.send_push`).
    """

    __slots__ = ("_frame", "payload", "type_id")

    def __init__(self, type_id: int, payload: bytes) -> None:
        if not 0 <= type_id <= 0xFFFFFFFF:
            raise ValueError(f"push type id {type_id} is not a u32")
        self.type_id = type_id
        self.payload = payload
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The PUSH frame (docs/wire-format.md §3.7), built on first use."""
        frame = self._frame
        if frame is None:
            frame = self._frame = encode_push(self.type_id, self.payload)
        return frame

    def __repr__(self) -> str:
        return f"PreparedPush(type_id={self.type_id}, payload=<{len(self.payload)} bytes>)"


def encode_ping(data: bytes) -> bytes:
    """PING: eight opaque bytes the peer echoes in a PONG."""
    return _frame(FrameType.PING, 0, 0, data)


def encode_pong(data: bytes) -> bytes:
    """PONG: the eight bytes of the PING it answers."""
    return _frame(FrameType.PONG, 0, 0, data)


def encode_goaway(last_call_id: int, reason: str = "") -> bytes:
    """GOAWAY: the highest call id the server will process, and a UTF-8 reason."""
    return _frame(FrameType.GOAWAY, 0, 0, _U32.pack(last_call_id) + reason.encode("utf-8"))


def encode_close(code: int, reason: str = "") -> bytes:
    """CLOSE: u16 close code and a UTF-8 reason; the last frame a side sends."""
    return _frame(FrameType.CLOSE, 0, 0, _U16.pack(code) + reason.encode("utf-8"))


# ---------------------------------------------------------------------------- payload decoders
# Each takes the whole input buffer and the payload's [pos, end) span, so the
# connection decodes in place without slicing a payload first.


def decode_hello_payload(
    data: bytes, pos: int, end: int
) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """Return (min_version, max_version, settings) of a HELLO payload."""
    if end - pos < _HELLO_FIXED.size or (end - pos - _HELLO_FIXED.size) % _SETTING.size:
        raise RemoteProtocolError("malformed HELLO payload")
    magic, min_version, max_version = _HELLO_FIXED.unpack_from(data, pos)
    if magic != MAGIC:
        raise RemoteProtocolError("HELLO does not start with the FLARE magic")
    if min_version > max_version:
        raise RemoteProtocolError("HELLO version range is empty")
    settings = tuple(
        _SETTING.unpack_from(data, offset)
        for offset in range(pos + _HELLO_FIXED.size, end, _SETTING.size)
    )
    return min_version, max_version, settings


def decode_compact_call_start_payload(
    data: bytes, pos: int, end: int
) -> tuple[int, int, MetadataPairs, int]:
    """Return (wire_id, timeout_us, metadata, request position) of a compact CALL_START
    payload (§3.2): the request is ``data[request position:end]``."""
    if end - pos < _CALL_START_FIXED.size + 1:
        raise RemoteProtocolError("truncated CALL_START payload")
    wire_id, timeout_us = _CALL_START_FIXED.unpack_from(data, pos)
    pos += _CALL_START_FIXED.size
    if data[pos] == 0:  # no metadata, the common case
        return wire_id, timeout_us, (), pos + 1
    metadata, pos = decode_metadata_prefix(data, pos, end)
    return wire_id, timeout_us, metadata, pos


def decode_call_start_payload(data: bytes, pos: int, end: int) -> tuple[int, int, MetadataPairs]:
    """Return (wire_id, timeout_us, metadata) of a CALL_START payload (not a compact one)."""
    if end - pos < _CALL_START_FIXED.size + 1:
        raise RemoteProtocolError("truncated CALL_START payload")
    wire_id, timeout_us = _CALL_START_FIXED.unpack_from(data, pos)
    return wire_id, timeout_us, decode_metadata(data, pos + _CALL_START_FIXED.size, end)


def decode_end_call_payload(
    data: bytes, pos: int, end: int
) -> tuple[int, str, bytes, MetadataPairs]:
    """Return (status, message, details, trailers) of an END_CALL payload."""
    return decode_end_call(data, pos, end)[:4]


def decode_end_call(data: bytes, pos: int, end: int) -> tuple[int, str, bytes, MetadataPairs, int]:
    """`decode_end_call_payload` plus the encoded size of the trailers block (for its limit)."""
    if end - pos < 4:
        raise RemoteProtocolError("truncated END_CALL payload")
    status = data[pos]
    raw_message, pos = _read_string(data, pos + 1, end)
    details, pos = _read_string(data, pos, end)
    if pos >= end:
        raise RemoteProtocolError("truncated END_CALL payload")
    message = _utf8(raw_message, "status message")
    return status, message, details, decode_metadata(data, pos, end), end - pos


def decode_code_reason_payload(data: bytes, pos: int, end: int, what: str) -> tuple[int, str]:
    """Return (code u8, reason) of a CANCEL payload."""
    if end - pos < 1:
        raise RemoteProtocolError(f"truncated {what} payload")
    return data[pos], _utf8(bytes(data[pos + 1 : end]), f"{what} reason")


def decode_window_update_payload(data: bytes, pos: int, end: int) -> int:
    """Return the credit increment of a WINDOW_UPDATE payload (1 .. 2**31-1)."""
    if end - pos != 4:
        raise RemoteProtocolError("WINDOW_UPDATE payload must be 4 bytes")
    increment: int = _U32.unpack_from(data, pos)[0]
    if not 0 < increment < 1 << 31:
        raise RemoteProtocolError(f"WINDOW_UPDATE increment {increment} out of range")
    return increment


def decode_ping_payload(data: bytes, pos: int, end: int) -> bytes:
    """Return the eight opaque bytes of a PING or PONG payload."""
    if end - pos != _PING_PAYLOAD_SIZE:
        raise RemoteProtocolError("PING/PONG payload must be 8 bytes")
    return bytes(data[pos:end])


def decode_goaway_payload(data: bytes, pos: int, end: int) -> tuple[int, str]:
    """Return (last_call_id, reason) of a GOAWAY payload."""
    if end - pos < 4:
        raise RemoteProtocolError("truncated GOAWAY payload")
    last_call_id: int = _U32.unpack_from(data, pos)[0]
    return last_call_id, _utf8(bytes(data[pos + 4 : end]), "GOAWAY reason")


def decode_close_payload(data: bytes, pos: int, end: int) -> tuple[int, str]:
    """Return (close code, reason) of a CLOSE payload."""
    if end - pos < 2:
        raise RemoteProtocolError("truncated CLOSE payload")
    code: int = _U16.unpack_from(data, pos)[0]
    return code, _utf8(bytes(data[pos + 2 : end]), "CLOSE reason")


# ---------------------------------------------------------------------------- frame view


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
