"""Encoding of the ``flare.im.v1`` events the core pushes, once per fan-out.

A pushed event is serialized once and the same bytes go to every recipient
(`flare_runtime.PreparedPush`). A stored message's body is already a serialized
``Content``, so `message_bytes` splices it into the ``Message`` encoding as
field 9 instead of parsing and re-encoding it: protobuf allows fields in any
order, and a length-delimited field is ``tag, length, bytes``.
"""

from __future__ import annotations

from flare.im.v1 import events_flare, events_pb2

from flare_runtime.im.storage.base import StoredMessage

# Push type ids, as the schema declares them (flare/im/v1/events.proto).
MESSAGE_RECEIVED = events_flare.MESSAGE_RECEIVED_PUSH.type_id
RECEIPT_UPDATED = events_flare.RECEIPT_UPDATED_PUSH.type_id
TYPING_CHANGED = events_flare.TYPING_CHANGED_PUSH.type_id
PRESENCE_CHANGED = events_flare.PRESENCE_CHANGED_PUSH.type_id
MEMBERSHIP_CHANGED = events_flare.MEMBERSHIP_CHANGED_PUSH.type_id
SESSION_CLOSED = events_flare.SESSION_CLOSED_PUSH.type_id
SYNC_REQUIRED = events_flare.SYNC_REQUIRED_PUSH.type_id

_EVENT_FIELD_BY_PUSH_TYPE = {
    MESSAGE_RECEIVED: "message_received",
    RECEIPT_UPDATED: "receipt_updated",
    TYPING_CHANGED: "typing_changed",
    PRESENCE_CHANGED: "presence_changed",
    MEMBERSHIP_CHANGED: "membership_changed",
    SESSION_CLOSED: "session_closed",
    SYNC_REQUIRED: "sync_required",
}

_CONTENT_TAG = bytes([9 << 3 | 2])  # Message.content: field 9, wire type LEN
_FIRST_FIELD_TAG = bytes([1 << 3 | 2])  # MessageReceived.message: field 1, LEN


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def message_bytes(message: StoredMessage) -> bytes:
    """The serialized ``flare.im.v1.Message`` of a stored message (body spliced in)."""
    head = events_pb2.Message(
        conversation_id=message.conversation_id,
        seq=message.seq,
        epoch=message.epoch,
        message_id=message.message_id,
        sender_user_id=message.sender_user_id,
        sender_device_id=message.sender_device_id,
        client_message_id=message.client_message_id,
        sent_at_ms=message.sent_at_ms,
    ).SerializeToString()
    return head + _CONTENT_TAG + _varint(len(message.body)) + message.body


def message_received(message: StoredMessage) -> bytes:
    """The serialized ``MessageReceived`` push of `message`."""
    encoded = message_bytes(message)
    return _FIRST_FIELD_TAG + _varint(len(encoded)) + encoded


def to_event(type_id: int, payload: bytes) -> events_pb2.Event:
    """Wrap a pushed event in ``Event`` (for `ImService.Subscribe` streams).

    Raises `KeyError` for a type id that is not an IM event.
    """
    event = events_pb2.Event()
    getattr(event, _EVENT_FIELD_BY_PUSH_TYPE[type_id]).MergeFromString(payload)
    return event
