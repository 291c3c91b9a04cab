"""Event encoding: the spliced `Message` bytes equal protobuf's own encoding, decoded."""

from __future__ import annotations

from flare.im.v1 import content_pb2, events_pb2
from hypothesis import given
from hypothesis import strategies as st

from flare_runtime.im import events
from flare_runtime.im.storage import StoredMessage

texts = st.text(max_size=300)


@given(
    conversation=texts,
    seq=st.integers(min_value=0, max_value=2**63),
    epoch=st.integers(min_value=0, max_value=2**40),
    sender=texts,
    body_text=st.text(max_size=5000),
    sent_at=st.integers(min_value=0, max_value=2**62),
)
def test_message_received_decodes_to_the_stored_message(
    *, conversation: str, seq: int, epoch: int, sender: str, body_text: str, sent_at: int
) -> None:
    content = content_pb2.Content(text=content_pb2.TextContent(text=body_text))
    stored = StoredMessage(
        conversation,
        seq,
        epoch,
        "id-1",
        sender,
        "device",
        "client-1",
        sent_at,
        content.SerializeToString(),
    )
    decoded = events_pb2.MessageReceived.FromString(events.message_received(stored)).message
    assert decoded == events_pb2.Message(
        conversation_id=conversation,
        seq=seq,
        epoch=epoch,
        message_id="id-1",
        sender_user_id=sender,
        sender_device_id="device",
        client_message_id="client-1",
        sent_at_ms=sent_at,
        content=content,
    )


def test_to_event_wraps_every_push_type_and_rejects_others() -> None:
    typing = events_pb2.TypingChanged(conversation_id="c", user_id="u", typing=True)
    event = events.to_event(events.TYPING_CHANGED, typing.SerializeToString())
    assert event.WhichOneof("event") == "typing_changed" and event.typing_changed == typing
    for type_id in range(events.MESSAGE_RECEIVED, events.SYNC_REQUIRED + 1):
        assert events.to_event(type_id, b"").WhichOneof("event") is not None
    try:
        events.to_event(1, b"")
    except KeyError:
        pass
    else:
        raise AssertionError("type id 1 is not an IM event")
