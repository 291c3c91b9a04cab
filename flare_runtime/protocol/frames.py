"""Flare frames: the fixed header, every frame type's payload layout, encoders and decoders.

Every frame is a 10-byte header followed by its payload (docs/wire-format.md §2)::

    length   u32 big-endian   payload length in bytes (header not included)
    type     u8               FrameType
    flags    u8               bit 0 = END_STREAM (MESSAGE only); other bits ignored
    call_id  u32 big-endian   the call (0 for connection frames; push type id for PUSH)

Every byte layout of the protocol lives here. The `encode_*` functions build
complete frames as `bytes`; the `*_head` functions build the start of a frame
whose variable part (a metadata block, a message) the caller queues after it
without copying; `HEADER` packs the header of a MESSAGE. The `decode_*_payload`
functions decode one payload in place and raise `RemoteProtocolError` on
malformed input; `peek_frame` and `split_frames` walk frame headers for code
that handles frames without decoding them (the QUIC 0-RTT gate, writers with a
per-write size limit). A readable view of whole frames for tests and tools is
`flare_runtime.testing.frames`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import Final, TypeAlias

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


_CALL_START_HEAD: Final = struct.Struct(">IBBIIQ")
"""A CALL_START up to its metadata block: header, wire id u32, timeout_us u64 (§3.2)."""
_CALL_START_EMPTY: Final = struct.Struct(">IBBIIQB")
"""A CALL_START with an empty metadata block (``00``)."""
_CALL_START_EMPTY_AND_MESSAGE_HEADER: Final = struct.Struct(">IBBIIQBIBBI")
"""A CALL_START with an empty metadata block, then the header of a MESSAGE."""
_CALL_START_FIXED_SIZE: Final = _CALL_START_FIXED.size  # wire id + timeout
_CALL_START: Final = 0x02  # FrameType.CALL_START (plain ints: IntEnum arithmetic is slower)
_MESSAGE: Final = 0x04  # FrameType.MESSAGE
_END_CALL: Final = 0x06  # FrameType.END_CALL


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


def call_start_head(call_id: int, wire_id: int, timeout_us: int, metadata_size: int) -> bytes:
    """The first bytes of a CALL_START: queue its metadata block (`metadata_size` bytes) after."""
    return _CALL_START_HEAD.pack(
        _CALL_START_FIXED_SIZE + metadata_size, _CALL_START, 0, call_id, wire_id, timeout_us
    )


def compact_call_start_head(
    call_id: int, wire_id: int, timeout_us: int, metadata_size: int, message_size: int
) -> bytes:
    """The first bytes of a compact CALL_START (§3.2, flag END_STREAM): queue its metadata
    block (`metadata_size` bytes), then the request (`message_size` bytes), after it.

    With `metadata_size` 0 the empty metadata block is included: only the
    request follows.
    """
    if metadata_size:
        return _CALL_START_HEAD.pack(
            _CALL_START_FIXED_SIZE + metadata_size + message_size,
            _CALL_START,
            FLAG_END_STREAM,
            call_id,
            wire_id,
            timeout_us,
        )
    return _CALL_START_EMPTY.pack(
        _CALL_START_FIXED_SIZE + 1 + message_size,
        _CALL_START,
        FLAG_END_STREAM,
        call_id,
        wire_id,
        timeout_us,
        0,
    )


def empty_call_start(call_id: int, wire_id: int, timeout_us: int) -> bytes:
    """A whole CALL_START with no metadata (an empty block)."""
    return _CALL_START_EMPTY.pack(
        _CALL_START_FIXED_SIZE + 1, _CALL_START, 0, call_id, wire_id, timeout_us, 0
    )


def empty_call_start_and_message_head(
    call_id: int, wire_id: int, timeout_us: int, message_size: int, end_stream: bool
) -> bytes:
    """A CALL_START with no metadata and the header of its first MESSAGE, whose payload
    (`message_size` bytes) follows; `end_stream` sets the MESSAGE's END_STREAM flag."""
    return _CALL_START_EMPTY_AND_MESSAGE_HEADER.pack(
        _CALL_START_FIXED_SIZE + 1,
        _CALL_START,
        0,
        call_id,
        wire_id,
        timeout_us,
        0,
        message_size,
        _MESSAGE,
        FLAG_END_STREAM if end_stream else 0,
        call_id,
    )


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


_END_CALL_OK: Final = struct.Struct(">IBBII")
"""An END_CALL with the 4-byte OK payload: status 0, empty message, details and trailers."""


def encode_end_call_ok(call_id: int) -> bytes:
    """END_CALL with status OK and nothing else (the common end, 14 bytes)."""
    return _END_CALL_OK.pack(4, _END_CALL, 0, call_id, 0)


def encode_end_call(
    call_id: int,
    status: int,
    message: str = "",
    details: bytes = b"",
    trailers: MetadataInput = (),
) -> bytes:
    """END_CALL: status u8, varint-prefixed message and details, then the trailers block."""
    if status == 0 and not message and not details and not trailers:
        return encode_end_call_ok(call_id)
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
    size = end - pos
    if size < _CALL_START_FIXED_SIZE + 1:
        raise RemoteProtocolError("truncated CALL_START payload")
    wire_id, timeout_us = _CALL_START_FIXED.unpack_from(data, pos)
    if size == _CALL_START_FIXED_SIZE + 1 and data[end - 1] == 0:  # no metadata, the common case
        return wire_id, timeout_us, ()
    return wire_id, timeout_us, decode_metadata(data, pos + _CALL_START_FIXED_SIZE, end)


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


# ---------------------------------------------------------------------------- walking frames


def peek_frame(data: bytes, pos: int) -> tuple[int, int, int | None] | None:
    """(frame type, payload length, wire id) of the frame starting at ``data[pos]``.

    The wire id is a CALL_START's (the first four bytes of its payload, §3.2),
    None for other frames. Returns None when `data` ends before that much is
    known. Decodes nothing else and copies nothing.
    """
    if len(data) - pos < HEADER_SIZE:
        return None
    length, frame_type, _flags, _call_id = HEADER.unpack_from(data, pos)
    if frame_type != _CALL_START or length < _U32.size:
        return frame_type, length, None
    if len(data) - pos < HEADER_SIZE + _U32.size:
        return None
    wire_id: int = _U32.unpack_from(data, pos + HEADER_SIZE)[0]
    return frame_type, length, wire_id


def split_frames(data: bytes, max_size: int) -> list[bytes]:
    """Cut `data`, whole frames back to back, into pieces of at most `max_size` bytes.

    Cuts fall between frames only: a frame larger than `max_size` is a piece
    of its own. For writers that carry output in units of bounded size (one
    WebSocket message per piece).
    """
    pieces: list[bytes] = []
    view = memoryview(data)
    start = position = 0
    end = len(data)
    unpack = _U32.unpack_from
    while position < end:
        frame_end = position + HEADER_SIZE + unpack(data, position)[0]
        if frame_end - start > max_size and position > start:
            pieces.append(bytes(view[start:position]))
            start = position
        position = frame_end
    pieces.append(bytes(view[start:end]))
    return pieces
