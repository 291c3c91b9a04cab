"""The call state machine: every cell of the transition table, walked through real connections.

For each (state, input) the test drives a call into the state through the
public API, then applies the input from the side that owns it:

* allowed  -> both ends agree on the table's next state (or forget the call);
* forbidden -> the sender raises LocalProtocolError and nothing is queued, and
  the same frame forced onto the wire makes the receiver close with
  PROTOCOL_ERROR (the peer broke the rules).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_runtime.errors import LocalProtocolError
from flare_runtime.protocol import CloseCode, ConnectionClosed, ProtocolConfig
from flare_runtime.protocol.frames import (
    encode_cancel,
    encode_end_call,
    encode_half_close,
    encode_headers,
    encode_message,
)
from flare_runtime.protocol.loopback import ConnectionPair
from flare_runtime.protocol.state import INVALID, TRANSITIONS, CallInput, CallState

CONFIG = ProtocolConfig(keepalive_interval=None)
TIMEOUT = 10.0
LIVE_STATES = [state for state in CallState if state is not CallState.CLOSED]
CLIENT_INPUTS = {
    CallInput.CLIENT_MESSAGE,
    CallInput.CLIENT_MESSAGE_END,
    CallInput.CLIENT_HALF_CLOSE,
    CallInput.CLIENT_CANCEL,
}


def open_call(pair: ConnectionPair, state: CallState) -> int:
    """Start a call and move it into `state` through the public API."""
    call_id = pair.client.start_call(1, timeout=TIMEOUT, now=pair.now)
    if state in (CallState.HALF_CLOSED, CallState.HALF_CLOSED_RESPONDING):
        pair.client.half_close(call_id)
    pair.exchange()
    if state in (CallState.OPEN_RESPONDING, CallState.HALF_CLOSED_RESPONDING):
        pair.server.send_headers(call_id, ())
        pair.exchange()
    assert pair.client.call_state(call_id) is state
    assert pair.server.call_state(call_id) is state
    return call_id


def apply(pair: ConnectionPair, call_id: int, call_input: CallInput) -> None:
    """Perform `call_input` on `call_id` through the owning side's API."""
    client, server = pair.client, pair.server
    match call_input:
        case CallInput.CLIENT_MESSAGE:
            client.send_message(call_id, b"m")
        case CallInput.CLIENT_MESSAGE_END:
            client.send_message(call_id, b"m", end_stream=True)
        case CallInput.CLIENT_HALF_CLOSE:
            client.half_close(call_id)
        case CallInput.CLIENT_CANCEL:
            client.cancel(call_id)
        case CallInput.SERVER_HEADERS:
            server.send_headers(call_id, [("k", "v")])
        case CallInput.SERVER_MESSAGE:
            server.send_message(call_id, b"r")
        case CallInput.SERVER_END:
            server.end_call(call_id)
        case CallInput.LOCAL_FAILURE:
            pair.advance(TIMEOUT)


def raw_frame(call_id: int, call_input: CallInput) -> bytes:
    """The frame `call_input` puts on the wire, built without any state check."""
    return {
        CallInput.CLIENT_MESSAGE: encode_message(call_id, b"m"),
        CallInput.CLIENT_MESSAGE_END: encode_message(call_id, b"m", end_stream=True),
        CallInput.CLIENT_HALF_CLOSE: encode_half_close(call_id),
        CallInput.CLIENT_CANCEL: encode_cancel(call_id, 1),
        CallInput.SERVER_HEADERS: encode_headers(call_id, ()),
        CallInput.SERVER_MESSAGE: encode_message(call_id, b"r"),
        CallInput.SERVER_END: encode_end_call(call_id, 0),
    }[call_input]


def test_the_table_covers_every_state_and_input() -> None:
    assert len(TRANSITIONS) == len(CallState)
    assert all(len(row) == len(CallInput) for row in TRANSITIONS)
    assert all(cell == INVALID for cell in TRANSITIONS[CallState.CLOSED])
    # Ending, cancelling and failing are allowed from every live state.
    for state in LIVE_STATES:
        for call_input in (CallInput.CLIENT_CANCEL, CallInput.SERVER_END, CallInput.LOCAL_FAILURE):
            assert TRANSITIONS[state][call_input] == CallState.CLOSED


@pytest.mark.parametrize(
    ("state", "call_input"),
    list(itertools.product(LIVE_STATES, CallInput)),
    ids=lambda value: value.name,
)
def test_each_transition_behaves_as_the_table_says(state: CallState, call_input: CallInput) -> None:
    pair = ConnectionPair(CONFIG, CONFIG)
    call_id = open_call(pair, state)
    expected = TRANSITIONS[state][call_input]
    if expected == INVALID:
        with pytest.raises(LocalProtocolError, match="not allowed"):
            apply(pair, call_id, call_input)
        sender = pair.client if call_input in CLIENT_INPUTS else pair.server
        assert not sender.has_data_to_send
        assert sender.call_state(call_id) is state
        # The same step forced onto the wire is the peer's fault.
        receiver = pair.server if call_input in CLIENT_INPUTS else pair.client
        receiver.receive_data(raw_frame(call_id, call_input), pair.now)
        events = receiver.events_received()
        assert isinstance(events[-1], ConnectionClosed)
        assert events[-1].code is CloseCode.PROTOCOL_ERROR
        assert "not allowed" in events[-1].reason
        return
    apply(pair, call_id, call_input)
    pair.exchange()
    if expected == CallState.CLOSED:
        assert pair.client.call_state(call_id) is None
        assert pair.server.call_state(call_id) is None
    else:
        assert pair.client.call_state(call_id) == expected
        assert pair.server.call_state(call_id) == expected
    assert not pair.client.closed
    assert not pair.server.closed


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list(CallInput)), max_size=12))
def test_random_walks_through_the_table_keep_both_ends_in_step(
    inputs: list[CallInput],
) -> None:
    pair = ConnectionPair(CONFIG, CONFIG)
    call_id = open_call(pair, CallState.OPEN)
    model = int(CallState.OPEN)
    for call_input in inputs:
        expected = TRANSITIONS[model][call_input]
        if expected == INVALID:
            with pytest.raises(LocalProtocolError):
                apply(pair, call_id, call_input)
            continue
        apply(pair, call_id, call_input)
        pair.exchange()
        model = expected
        if model == CallState.CLOSED:
            assert pair.client.call_state(call_id) is None
            assert pair.server.call_state(call_id) is None
            break
        assert pair.client.call_state(call_id) == model
        assert pair.server.call_state(call_id) == model
    assert not pair.client.closed
    assert not pair.server.closed
