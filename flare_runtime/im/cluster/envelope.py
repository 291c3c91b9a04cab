"""How the IM's events travel between nodes: a small header before the pushed bytes.

Each IM event crosses the cluster as one `ClusterNode` event whose push type id
is the IM push's own (``MessageReceived``: 64001, ...) and whose payload is a
header followed by the push's payload exactly as devices receive it, so a
receiving node slices the header off once and hands the same bytes to all its
devices (encode once). Devices never see the header: only the IM's in-process
subscribers receive these channels.

======================  =============================================================
event                   payload
======================  =============================================================
a message (topic)       ``epoch u64, seq u64`` then ``MessageReceived``
other events (topic,    ``exclude``, ``skip_user``, ``skip_session`` (each ``u16
user channel)           length`` + UTF-8; empty for none) then the push: not to
                        `exclude`'s devices, nor to session `skip_session` of
                        `skip_user`
a membership change     ``seq u64`` (the conversation's last seq when it changed),
(the user's channel)    ``u16 count`` and that many ``u16 length`` + user id (users
                        who joined in the same request), then ``MembershipChanged``
a control               push type `CONTROL`; a JSON object (rare: kicks, history resets)
======================  =============================================================

All integers are big-endian. A payload that does not parse raises
`MalformedEventError` (the relay drops it and logs once).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, Final

from flare_runtime.errors import FlareError

CONTROL: Final = 0
"""Push type id of the IM's control messages between nodes (never pushed to a device)."""

_SEQUENCE = struct.Struct(">QQ")
_SEQ = struct.Struct(">Q")
_LENGTH = struct.Struct(">H")


class MalformedEventError(FlareError):
    """An IM cluster payload that does not parse."""


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("an id of more than 65535 bytes")
    return _LENGTH.pack(len(data)) + data


def _read_text(payload: bytes, offset: int) -> tuple[str, int]:
    try:
        (length,) = _LENGTH.unpack_from(payload, offset)
    except struct.error:
        raise MalformedEventError("truncated length") from None
    end = offset + 2 + length
    if end > len(payload):
        raise MalformedEventError("truncated id")
    try:
        return payload[offset + 2 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedEventError("an id is not UTF-8") from None


def encode_message(epoch: int, seq: int, push_payload: bytes) -> bytes:
    """A stored message's ``MessageReceived`` with its position."""
    return _SEQUENCE.pack(epoch, seq) + push_payload


def decode_message(payload: bytes) -> tuple[int, int, bytes]:
    """``(epoch, seq, MessageReceived bytes)``."""
    if len(payload) < _SEQUENCE.size:
        raise MalformedEventError("a message event shorter than its header")
    epoch, seq = _SEQUENCE.unpack_from(payload)
    return epoch, seq, payload[_SEQUENCE.size :]


def encode_routed(
    push_payload: bytes, *, exclude: str = "", skip_user: str = "", skip_session: str = ""
) -> bytes:
    """An event for every member's (or the user's) devices but `exclude`'s and one session."""
    return _text(exclude) + _text(skip_user) + _text(skip_session) + push_payload


def decode_routed(payload: bytes) -> tuple[str, str, str, bytes]:
    """``(exclude, skip_user, skip_session, push payload)``."""
    exclude, offset = _read_text(payload, 0)
    skip_user, offset = _read_text(payload, offset)
    skip_session, offset = _read_text(payload, offset)
    return exclude, skip_user, skip_session, payload[offset:]


def encode_membership(seq: int, joined_with: Sequence[str], push_payload: bytes) -> bytes:
    """A member's own copy of its ``MembershipChanged``, for its user's channel."""
    parts = [_SEQ.pack(seq), _LENGTH.pack(len(joined_with))]
    parts.extend(_text(user) for user in joined_with)
    parts.append(push_payload)
    return b"".join(parts)


def decode_membership(payload: bytes) -> tuple[int, list[str], bytes]:
    """``(seq when it changed, users who joined with it, MembershipChanged bytes)``."""
    if len(payload) < _SEQ.size + _LENGTH.size:
        raise MalformedEventError("a membership event shorter than its header")
    (seq,) = _SEQ.unpack_from(payload)
    (count,) = _LENGTH.unpack_from(payload, _SEQ.size)
    offset = _SEQ.size + _LENGTH.size
    users = []
    for _ in range(count):
        user, offset = _read_text(payload, offset)
        users.append(user)
    return seq, users, payload[offset:]


def encode_control(**fields: Any) -> bytes:
    """A control message (``op`` names it)."""
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def decode_control(payload: bytes) -> dict[str, Any]:
    """The control message's fields; `MalformedEventError` unless a JSON object with ``op``."""
    try:
        fields = json.loads(payload)
    except ValueError:
        raise MalformedEventError("a control message is not JSON") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("op"), str):
        raise MalformedEventError("a control message without an op")
    return fields
