"""The bytes a node publishes to the broker: one envelope per cluster event (sans-I/O).

An event is encoded into an envelope once, by the node that publishes it; every
node that receives it decodes the header and takes the payload as it is, so a
push payload is serialized once in the whole cluster. Layout, integers
big-endian::

    u8   version (1)
    u8   origin length N (1..255)
    N    origin node id (ASCII)
    u8   kind
    ...  by kind:
         EVENT     u32 push type id, payload (to the end)
         DIRECT    u64 connection id, u32 push type id, payload (to the end)
         CLOSE     u64 connection id, UTF-8 close reason (to the end)
         LOST      nothing: the origin may have dropped events of this channel
         LOST_ALL  nothing: the origin may have dropped events of any channel
         HEARTBEAT nothing: the origin is alive (on the cluster's control channel)
         LEAVING   nothing: the origin is closing, after its last publish

The channel an envelope travels on says what it is for (a topic, a user, a
node), so the envelope does not repeat it. The origin lets a node recognise
its own publishes echoed back by the broker (`echo_prefix`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from flare_runtime.errors import FlareError

VERSION: Final = 1
MAX_NODE_ID_BYTES: Final = 255

_U32 = struct.Struct(">I")
_U64_U32 = struct.Struct(">QI")
_U64 = struct.Struct(">Q")


class Kind(enum.IntEnum):
    """What an envelope carries."""

    EVENT = 1
    DIRECT = 2
    CLOSE = 3
    LOST = 4
    LOST_ALL = 5
    HEARTBEAT = 6
    LEAVING = 7


class MalformedEnvelopeError(FlareError):
    """Bytes on a cluster channel that are not an envelope this node can read.

    Another program (or a node of a newer, incompatible version) published on
    the cluster's channels; the node drops the message and counts it.
    """


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope; fields a kind does not use are 0 or empty."""

    origin: bytes
    kind: Kind
    type_id: int = 0
    connection_id: int = 0
    payload: bytes = b""
    """The push payload (EVENT, DIRECT) or the UTF-8 close reason (CLOSE)."""


def echo_prefix(origin: bytes) -> bytes:
    """The bytes every envelope published by `origin` starts with."""
    if not 0 < len(origin) <= MAX_NODE_ID_BYTES:
        raise ValueError(f"a node id is 1 to {MAX_NODE_ID_BYTES} bytes, not {len(origin)}")
    return bytes((VERSION, len(origin))) + origin


def encode_event(prefix: bytes, type_id: int, payload: bytes) -> bytes:
    """An EVENT envelope; `prefix` is the publisher's `echo_prefix`."""
    return b"".join((prefix, b"\x01", _U32.pack(type_id), payload))


def encode_direct(prefix: bytes, connection_id: int, type_id: int, payload: bytes) -> bytes:
    """A DIRECT envelope: a push for one connection of the receiving node."""
    return b"".join((prefix, b"\x02", _U64_U32.pack(connection_id, type_id), payload))


def encode_close(prefix: bytes, connection_id: int, reason: str) -> bytes:
    """A CLOSE envelope: close one connection of the receiving node with `reason`."""
    return b"".join((prefix, b"\x03", _U64.pack(connection_id), reason.encode("utf-8")))


def encode_lost(prefix: bytes, *, everything: bool = False) -> bytes:
    """A LOST (this channel) or LOST_ALL (every channel) notice."""
    return prefix + (b"\x05" if everything else b"\x04")


def encode_heartbeat(prefix: bytes) -> bytes:
    """A HEARTBEAT: the origin is alive."""
    return prefix + b"\x06"


def encode_leaving(prefix: bytes) -> bytes:
    """A LEAVING notice: the origin closes; nothing it published is missing."""
    return prefix + b"\x07"


def decode(data: bytes) -> Envelope:
    """Decode one envelope; raises `MalformedEnvelopeError` on anything else."""
    size = len(data)
    if size < 3 or data[0] != VERSION:
        raise MalformedEnvelopeError(
            f"not a version {VERSION} cluster envelope ({size} bytes"
            + (f", starts with {data[0]}" if size else "")
            + ")"
        )
    origin_end = 2 + data[1]
    if data[1] == 0 or origin_end >= size:
        raise MalformedEnvelopeError("truncated cluster envelope header")
    origin = data[2:origin_end]
    try:
        kind = Kind(data[origin_end])
    except ValueError:
        raise MalformedEnvelopeError(f"unknown cluster envelope kind {data[origin_end]}") from None
    body = origin_end + 1
    if kind is Kind.EVENT:
        if size - body < _U32.size:
            raise MalformedEnvelopeError("truncated EVENT envelope")
        (type_id,) = _U32.unpack_from(data, body)
        return Envelope(origin, kind, type_id=type_id, payload=data[body + _U32.size :])
    if kind is Kind.DIRECT:
        if size - body < _U64_U32.size:
            raise MalformedEnvelopeError("truncated DIRECT envelope")
        connection_id, type_id = _U64_U32.unpack_from(data, body)
        return Envelope(
            origin,
            kind,
            type_id=type_id,
            connection_id=connection_id,
            payload=data[body + _U64_U32.size :],
        )
    if kind is Kind.CLOSE:
        if size - body < _U64.size:
            raise MalformedEnvelopeError("truncated CLOSE envelope")
        (connection_id,) = _U64.unpack_from(data, body)
        return Envelope(origin, kind, connection_id=connection_id, payload=data[body + _U64.size :])
    if size != body:
        raise MalformedEnvelopeError(f"{kind.name} envelope has {size - body} trailing bytes")
    return Envelope(origin, kind)
