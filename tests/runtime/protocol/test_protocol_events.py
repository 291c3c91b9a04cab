"""Events: small frozen dataclasses whose fast constructor behaves like the generated one."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from flare_runtime.protocol import events
from flare_runtime.protocol.events import CallEnded, Event, MessageReceived
from flare_runtime.status import StatusCode

EVENT_TYPES = [
    value
    for value in vars(events).values()
    if isinstance(value, type) and issubclass(value, Event) and value is not Event
]


def test_there_is_one_event_per_documented_happening() -> None:
    assert {cls.__name__ for cls in EVENT_TYPES} == {
        "HandshakeCompleted",
        "CallStarted",
        "HeadersReceived",
        "MessageReceived",
        "StreamEnded",
        "CallEnded",
        "CallCancelled",
        "PushReceived",
        "PingReceived",
        "PongReceived",
        "GoAwayReceived",
        "WindowUpdated",
        "ConnectionClosed",
    }


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_event_is_a_frozen_slotted_dataclass_with_the_field_signature(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert "__slots__" in vars(cls)
    parameters = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [parameter.name for parameter in parameters] == [field.name for field in fields]
    for parameter, field in zip(parameters, fields, strict=True):
        expected = (
            inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        )
        assert parameter.default == expected


def test_fast_init_keeps_defaults_equality_repr_and_immutability() -> None:
    event = CallEnded(3, StatusCode.ABORTED, local=True)
    assert event == CallEnded(3, StatusCode.ABORTED, "", b"", (), True)
    assert repr(event) == (
        "CallEnded(call_id=3, status=<StatusCode.ABORTED: 10>, message='', details=b'',"
        " trailers=(), local=True, final=None)"
    )
    assert hash(MessageReceived(1, b"x")) == hash(MessageReceived(1, b"x", False))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.call_id = 4  # type: ignore[misc]
    assert dataclasses.replace(event, call_id=9).call_id == 9
    with pytest.raises(TypeError):
        MessageReceived(1)  # type: ignore[call-arg]
