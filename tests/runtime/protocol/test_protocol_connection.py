"""Connection: handshake, calls of every shape, deadlines, keepalive, go-away, flow control,
limits and hostile input, with two in-memory endpoints and an explicit clock."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_runtime.errors import ConnectionClosedError, LocalProtocolError
from flare_runtime.protocol import (
    CLIENT,
    SERVER,
    CallCancelled,
    CallEnded,
    CallStarted,
    CloseCode,
    Connection,
    ConnectionClosed,
    Event,
    FlowControlBlockedError,
    GoAwayReceived,
    HandshakeCompleted,
    HeadersReceived,
    LimitExceededError,
    MessageReceived,
    PingReceived,
    PongReceived,
    ProtocolConfig,
    PushReceived,
    Settings,
    StreamEnded,
    WindowUpdated,
    encode_push,
)
from flare_runtime.protocol.config import MIN_INITIAL_WINDOW_SIZE
from flare_runtime.protocol.frames import (
    FLAG_END_CALL,
    FLAG_END_STREAM,
    HEADER,
    HEADER_SIZE,
    FrameType,
    PreparedPush,
    encode_call_start,
    encode_close,
    encode_end_call,
    encode_goaway,
    encode_headers,
    encode_hello,
    encode_message,
    encode_window_update,
)
from flare_runtime.protocol.loopback import ConnectionPair
from flare_runtime.protocol.state import CallState
from flare_runtime.status import StatusCode
from flare_runtime.testing import frames
from flare_runtime.testing.frames import EndCallFrame, decode_frames

T = TypeVar("T")
QUIET = ProtocolConfig(keepalive_interval=None)
WIRE_ID = 3 << 16 | 7


def quiet(**settings_fields: Any) -> ProtocolConfig:
    return ProtocolConfig(settings=Settings(**settings_fields), keepalive_interval=None)


def closed_event(events: list[Event]) -> ConnectionClosed:
    assert events, "expected a ConnectionClosed event"
    last = events[-1]
    assert isinstance(last, ConnectionClosed), events
    return last


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


# ---------------------------------------------------------------------------- handshake


def test_handshake_exchanges_versions_and_settings() -> None:
    pair = ConnectionPair(QUIET, quiet(max_concurrent_calls=5), handshake=False)
    assert not pair.client.established
    client_events, server_events = pair.exchange()
    assert client_events == [HandshakeCompleted(1, Settings(max_concurrent_calls=5))]
    assert server_events == [HandshakeCompleted(1, Settings())]
    assert pair.client.established
    assert pair.server.established
    assert pair.client.version == pair.server.version == 1


def test_server_refuses_an_unknown_version_with_a_clear_close() -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(encode_hello(7, 9), 0.0)
    closed = closed_event(server.events_received())
    assert closed.code is CloseCode.UNSUPPORTED_VERSION
    assert "7..9" in closed.reason
    assert "speaks 1..1" in closed.reason
    assert server.closed
    # The client learns why.
    client = Connection(CLIENT, QUIET)
    client.receive_data(server.data_to_send(), 0.0)
    closed = closed_event(client.events_received())
    assert closed.code is CloseCode.UNSUPPORTED_VERSION
    assert closed.by_peer


def test_server_accepts_a_client_offering_a_range_that_includes_its_version() -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(encode_hello(1, 5), 0.0)
    assert isinstance(server.events_received()[0], HandshakeCompleted)


def test_a_client_rejects_a_server_hello_naming_a_range() -> None:
    client = Connection(CLIENT, QUIET)
    client.receive_data(encode_hello(1, 2), 0.0)
    assert closed_event(client.events_received()).code is CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "first_bytes",
    [
        encode_call_start(1, WIRE_ID, 0),
        encode_message(1, b"x"),
        encode_window_update(1, 5),
        HEADER.pack(0, FrameType.PING, 0, 0) + bytes(8),
    ],
    ids=["call-start", "message", "window-update", "ping"],
)
def test_anything_but_hello_first_is_a_protocol_error(first_bytes: bytes) -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(first_bytes, 0.0)
    assert closed_event(server.events_received()).code is CloseCode.PROTOCOL_ERROR


def test_a_non_flare_peer_is_refused_at_once() -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    closed = closed_event(server.events_received())
    assert closed.code is CloseCode.FRAME_TOO_LARGE
    assert server.data_to_send().startswith(HEADER.pack(closed_size(closed), 0x0D, 0, 0))


def closed_size(closed: ConnectionClosed) -> int:
    return 2 + len(closed.reason.encode())


def test_duplicate_hello_is_a_protocol_error() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.server.receive_data(encode_hello(1, 1), 0.0)
    closed = closed_event(pair.server.events_received())
    assert closed.reason == "duplicate HELLO"


def test_missing_hello_times_out() -> None:
    server = Connection(SERVER, ProtocolConfig(handshake_timeout=5.0, keepalive_interval=None))
    assert server.get_timer() == 5.0
    server.handle_timer(4.9)
    assert server.events_received() == []
    server.handle_timer(5.0)
    assert closed_event(server.events_received()).code is CloseCode.PROTOCOL_ERROR
    assert server.get_timer() is None


def test_calls_pipelined_before_the_server_hello_get_the_announced_window() -> None:
    pair = ConnectionPair(QUIET, quiet(initial_window_size=1 << 20), handshake=False)
    call_id = pair.client.start_call(WIRE_ID, message=b"x" * 100)
    assert pair.client.available_credit(call_id) == MIN_INITIAL_WINDOW_SIZE - 100
    _, server_events = pair.exchange()
    assert isinstance(server_events[1], CallStarted)
    assert pair.client.available_credit(call_id) == (1 << 20) - 100


@pytest.mark.parametrize(
    ("setting_id", "value", "message"),
    [(4, 1000, "INITIAL_WINDOW_SIZE"), (1, 100, "MAX_FRAME_SIZE"), (2, 0, "MAX_MESSAGE_SIZE")],
)
def test_settings_out_of_range_are_protocol_errors(
    setting_id: int, value: int, message: str
) -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(encode_hello(1, 1, [(setting_id, value)]), 0.0)
    assert message in closed_event(server.events_received()).reason


def test_unknown_settings_are_ignored() -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(encode_hello(1, 1, [(999, 5), (2, 1234)]), 0.0)
    event = server.events_received()[0]
    assert isinstance(event, HandshakeCompleted)
    assert event.peer_settings.max_message_size == 1234


# ---------------------------------------------------------------------------- calls


def test_unary_call_carries_route_metadata_message_headers_and_trailers() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(
        WIRE_ID,
        [("authorization", "Bearer t"), ("trace-bin", b"\x00\xff")],
        message=b"request",
        end_stream=True,
    )
    server_events = pair.to_server()
    assert server_events == [
        CallStarted(
            call_id,
            WIRE_ID,
            (("authorization", "Bearer t"), ("trace-bin", b"\x00\xff")),
            None,
            None,
            message=b"request",  # a compact call start: the request rides with it
        ),
    ]
    pair.server.send_headers(call_id, [("server", "flare")])
    pair.server.send_message(call_id, b"reply")
    pair.server.end_call(call_id, trailers=[("cost", "3")])
    assert pair.to_client() == [
        HeadersReceived(call_id, (("server", "flare"),)),
        MessageReceived(call_id, b"reply"),
        CallEnded(call_id, StatusCode.OK, trailers=(("cost", "3"),)),
    ]
    assert pair.client.open_calls == pair.server.open_calls == 0


@pytest.mark.parametrize("code", list(StatusCode))
def test_every_status_code_message_and_details_round_trip(code: StatusCode) -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, message=b"", end_stream=True)
    pair.exchange()
    pair.server.end_call(call_id, code, f"because {code.name} ✓", b"\x08\x01details")
    assert pair.to_client() == [
        CallEnded(call_id, code, f"because {code.name} ✓", b"\x08\x01details")
    ]


def test_ok_with_a_message_and_details_keeps_them() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, end_stream=True)
    pair.exchange()
    pair.server.end_call(call_id, StatusCode.OK, details=b"\x01")
    assert pair.to_client() == [CallEnded(call_id, StatusCode.OK, details=b"\x01")]


def test_an_unknown_status_code_reads_as_unknown() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, end_stream=True)
    pair.exchange()
    pair.client.receive_data(encode_end_call(call_id, 99, "from the future"), 0.0)
    [event] = pair.client.events_received()
    assert event == CallEnded(call_id, StatusCode.UNKNOWN, "from the future")


def test_streams_both_ways_interleave_on_many_concurrent_calls() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_ids = [pair.client.start_call(WIRE_ID) for _ in range(50)]
    for index, call_id in enumerate(call_ids):
        for part in range(3):
            pair.client.send_message(call_id, f"{index}:{part}".encode())
        pair.client.half_close(call_id)
    _, server_events = pair.exchange()
    assert len(of_type(server_events, CallStarted)) == 50
    assert len(of_type(server_events, StreamEnded)) == 50
    received = of_type(server_events, MessageReceived)
    assert [event.data for event in received if event.call_id == call_ids[7]] == [
        b"7:0",
        b"7:1",
        b"7:2",
    ]
    for call_id in reversed(call_ids):
        pair.server.send_message(call_id, b"a")
        pair.server.send_message(call_id, b"b")
        pair.server.end_call(call_id)
    client_events, _ = pair.exchange()
    assert len(of_type(client_events, CallEnded)) == 50
    assert len(of_type(client_events, MessageReceived)) == 100
    assert pair.server.open_calls == 0


def test_call_ids_increase_and_the_server_rejects_a_reused_one() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    assert [pair.client.start_call(WIRE_ID) for _ in range(3)] == [1, 2, 3]
    pair.exchange()
    pair.server.receive_data(encode_call_start(2, WIRE_ID, 0), 0.0)
    closed = closed_event(pair.server.events_received())
    assert closed.code is CloseCode.PROTOCOL_ERROR
    assert "does not exceed" in closed.reason


def test_client_cancel_reaches_the_server_and_crossing_frames_are_ignored() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, message=b"go")
    pair.exchange()
    pair.server.send_message(call_id, b"late")  # crosses the CANCEL on the wire
    pair.client.cancel(call_id, reason="user left")
    assert pair.client.call_state(call_id) is None
    client_events, server_events = pair.exchange()
    assert client_events == []
    assert server_events == [CallCancelled(call_id, StatusCode.CANCELLED, "user left")]
    # The server's handler may still try to answer: ignored, not an error.
    assert pair.server.send_message(call_id, b"ignored") == 0
    pair.server.end_call(call_id)
    pair.client.cancel(call_id)
    assert pair.exchange() == ([], [])
    assert not pair.client.closed
    assert not pair.server.closed


def test_frames_for_a_call_that_never_started_are_protocol_errors() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.server.receive_data(encode_message(5, b"x"), 0.0)
    closed = closed_event(pair.server.events_received())
    assert "never started" in closed.reason
    pair = ConnectionPair(QUIET, QUIET)
    pair.client.receive_data(encode_headers(9, ()), 0.0)
    assert "never started" in closed_event(pair.client.events_received()).reason


@pytest.mark.parametrize(
    ("receiver", "frame", "name"),
    [
        ("server", encode_headers(1, ()), "HEADERS"),
        ("server", encode_end_call(1, 0), "END_CALL"),
        ("server", encode_push(1, b""), "PUSH"),
        ("server", encode_goaway(0), "GOAWAY"),
        ("client", encode_call_start(1, WIRE_ID, 0), "CALL_START"),
    ],
)
def test_frames_from_the_wrong_side_are_protocol_errors(
    receiver: str, frame: bytes, name: str
) -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.client.start_call(WIRE_ID)
    pair.exchange()
    connection = pair.server if receiver == "server" else pair.client
    connection.receive_data(frame, 0.0)
    assert f"must not send {name}" in closed_event(connection.events_received()).reason


def test_role_misuse_raises_local_protocol_errors() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    with pytest.raises(LocalProtocolError, match="only a client starts"):
        pair.server.start_call(WIRE_ID)
    call_id = pair.client.start_call(WIRE_ID)
    pair.exchange()
    with pytest.raises(LocalProtocolError, match="only the server"):
        pair.client.send_headers(call_id, ())
    with pytest.raises(LocalProtocolError, match="only the server"):
        pair.client.end_call(call_id)
    with pytest.raises(LocalProtocolError, match="only the server"):
        pair.client.send_push(PreparedPush(1, b""))
    with pytest.raises(LocalProtocolError, match="only the server"):
        pair.client.go_away()
    with pytest.raises(LocalProtocolError, match="only a client cancels"):
        pair.server.cancel(call_id)
    with pytest.raises(LocalProtocolError, match="only the client half-closes"):
        pair.server.half_close(call_id)
    with pytest.raises(LocalProtocolError, match="only the client ends its stream"):
        pair.server.send_message(call_id, b"", end_stream=True)
    with pytest.raises(LocalProtocolError, match="never started"):
        pair.client.send_message(call_id + 1, b"")
    with pytest.raises(ValueError, match="32 bits"):
        pair.client.start_call(1 << 32)


def test_nothing_can_be_sent_after_close() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID)
    pair.client.close(CloseCode.NO_ERROR, "bye")
    client_events, server_events = pair.exchange()
    assert client_events == [ConnectionClosed(CloseCode.NO_ERROR, "bye", by_peer=False)]
    assert server_events[-1] == ConnectionClosed(CloseCode.NO_ERROR, "bye", by_peer=True)
    with pytest.raises(ConnectionClosedError):
        pair.client.start_call(WIRE_ID)
    with pytest.raises(ConnectionClosedError):
        pair.client.send_message(call_id, b"")
    with pytest.raises(ConnectionClosedError):
        pair.client.ping()
    pair.client.close()  # twice: nothing
    assert pair.client.data_to_send() == b""
    pair.server.receive_data(encode_message(call_id, b"after"), 0.0)  # ignored
    assert pair.server.events_received() == []


def test_an_unknown_close_code_is_reported_as_a_protocol_error() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.client.receive_data(encode_close(4242, "odd"), 0.0)
    closed = closed_event(pair.client.events_received())
    assert closed.code is CloseCode.PROTOCOL_ERROR
    assert closed.reason == "unknown close code 4242: odd"
    assert closed.by_peer


# ---------------------------------------------------------------------------- deadlines


def test_deadline_ends_the_call_on_both_sides_with_one_timer_each() -> None:
    pair = ConnectionPair(QUIET, QUIET, now=100.0)
    call_id = pair.client.start_call(WIRE_ID, timeout=2.5, now=100.0, message=b"slow")
    _, server_events = pair.exchange()
    assert server_events[0] == CallStarted(call_id, WIRE_ID, (), 2.5, 102.5)
    assert pair.client.get_timer() == 102.5
    assert pair.server.get_timer() == 102.5
    assert pair.advance(2.0) == ([], [])
    client_events, server_events = pair.advance(0.5)
    assert client_events == [
        CallEnded(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", local=True)
    ]
    assert server_events == [
        CallCancelled(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    ]
    assert pair.client.get_timer() is None
    assert pair.server.get_timer() is None
    assert not pair.client.closed


def test_a_server_deadline_of_its_own_ends_the_call_like_a_client_timeout() -> None:
    pair = ConnectionPair(QUIET, QUIET, now=100.0)
    call_id = pair.client.start_call(WIRE_ID, now=100.0, message=b"no timeout")
    pair.exchange()
    assert pair.server.get_timer() is None
    pair.server.set_deadline(call_id, 103.0)
    pair.server.set_deadline(call_id, 104.0)  # only ever earlier
    pair.server.set_deadline(call_id + 1, 101.0)  # not an open call: nothing
    assert pair.server.get_timer() == 103.0
    assert pair.advance(2.9) == ([], [])
    client_events, server_events = pair.advance(0.1)
    assert server_events == [
        CallCancelled(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    ]
    assert client_events == [CallEnded(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")]
    assert pair.server.get_timer() is None
    with pytest.raises(LocalProtocolError):
        pair.client.set_deadline(call_id, 1.0)


def test_the_timer_skips_calls_that_ended_before_their_deadline() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    first = pair.client.start_call(WIRE_ID, timeout=1.0, now=0.0)
    pair.client.start_call(WIRE_ID, timeout=5.0, now=0.0)
    pair.exchange()
    pair.server.end_call(first)
    pair.exchange()
    assert pair.client.get_timer() == 5.0
    assert pair.server.get_timer() == 5.0


def test_the_deadline_heap_stays_proportional_to_open_calls() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    for _ in range(2_000):
        call_id = pair.client.start_call(WIRE_ID, timeout=60.0, now=0.0, end_stream=True)
        pair.exchange()
        pair.server.end_call(call_id)
        pair.exchange()
    assert len(pair.client._deadlines) <= 2 * pair.client.open_calls + 65
    assert len(pair.server._deadlines) <= 2 * pair.server.open_calls + 65


# ---------------------------------------------------------------------------- keepalive


def test_keepalive_pings_an_idle_peer_and_the_pong_keeps_it_open() -> None:
    config = ProtocolConfig(keepalive_interval=10.0, keepalive_timeout=5.0)
    pair = ConnectionPair(config, QUIET)
    assert pair.client.get_timer() == 10.0
    client_events, server_events = pair.advance(10.0)
    assert len(of_type(server_events, PingReceived)) == 1
    assert len(of_type(client_events, PongReceived)) == 1
    assert pair.client.get_timer() == 20.0
    pair.advance(10.0)
    assert not pair.client.closed


def test_keepalive_closes_a_dead_peer() -> None:
    config = ProtocolConfig(keepalive_interval=10.0, keepalive_timeout=5.0)
    pair = ConnectionPair(QUIET, config)
    pair.now = 10.0
    pair.server.handle_timer(10.0)
    assert pair.server.data_to_send()  # the PING, lost: the client is gone
    assert pair.server.get_timer() == 15.0
    pair.server.handle_timer(14.9)
    assert not pair.server.closed
    pair.server.handle_timer(15.0)
    closed = closed_event(pair.server.events_received())
    assert closed.code is CloseCode.KEEPALIVE_TIMEOUT
    assert not closed.by_peer


def test_any_input_counts_as_liveness() -> None:
    config = ProtocolConfig(keepalive_interval=10.0, keepalive_timeout=5.0)
    pair = ConnectionPair(QUIET, config)
    call_id = pair.client.start_call(WIRE_ID)
    pair.exchange()
    pair.now = 9.0
    pair.client.send_message(call_id, b"alive")
    pair.exchange()
    assert pair.server.get_timer() == 19.0


def test_no_keepalive_ping_goes_out_before_the_handshake() -> None:
    config = ProtocolConfig(keepalive_interval=1.0, handshake_timeout=10.0)
    server = Connection(SERVER, config)
    assert server.get_timer() == 10.0
    server.handle_timer(5.0)
    assert not server.has_data_to_send


def test_manual_ping_and_keepalive_off() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    assert pair.client.get_timer() is None
    pair.client.ping(b"12345678")
    client_events, server_events = pair.exchange()
    assert server_events == [PingReceived(b"12345678")]
    assert client_events == [PongReceived(b"12345678")]
    with pytest.raises(ValueError, match="8 bytes"):
        pair.client.ping(b"short")


# ---------------------------------------------------------------------------- go-away


def test_go_away_drains_accepted_calls_and_refuses_later_ones() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    accepted = pair.client.start_call(WIRE_ID)
    pair.exchange()
    crossing = pair.client.start_call(WIRE_ID)  # in flight when the server goes away
    assert pair.server.go_away("deploy") == accepted
    assert pair.server.go_away() == accepted  # idempotent
    assert pair.server.going_away
    client_events, server_events = pair.exchange()
    assert client_events == [
        CallEnded(
            crossing,
            StatusCode.UNAVAILABLE,
            "the server is going away; the call was not processed",
            local=True,
        ),
        GoAwayReceived(accepted, "deploy"),
    ]
    assert of_type(server_events, CallStarted) == []  # refused with UNAVAILABLE, ignored
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        pair.client.start_call(WIRE_ID)
    pair.client.send_message(accepted, b"still fine", end_stream=True)
    _, server_events = pair.exchange()
    assert server_events == [MessageReceived(accepted, b"still fine", end_stream=True)]
    pair.server.end_call(accepted)
    pair.exchange()
    assert pair.server.open_calls == 0


def test_a_later_goaway_must_not_raise_the_last_call_id() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.client.receive_data(encode_goaway(0) + encode_goaway(3), 0.0)
    closed = closed_event(pair.client.events_received())
    assert "must not raise" in closed.reason


# ---------------------------------------------------------------------------- flow control


def test_a_receiver_that_stops_consuming_stops_the_sender() -> None:
    window = MIN_INITIAL_WINDOW_SIZE
    pair = ConnectionPair(quiet(initial_window_size=window), QUIET)
    call_id = pair.client.start_call(WIRE_ID, end_stream=True)
    pair.exchange()
    chunk = b"z" * 1000
    sent = 0
    while pair.server.available_credit(call_id) > 0:
        pair.server.send_message(call_id, chunk)
        sent += len(chunk)
    with pytest.raises(FlowControlBlockedError):
        pair.server.send_message(call_id, chunk)
    assert window <= sent < window + len(chunk)
    client_events, _ = pair.exchange()
    received = of_type(client_events, MessageReceived)
    assert sum(len(event.data) for event in received) == sent
    # Consuming half the window returns credit in one batched WINDOW_UPDATE.
    for event in received[: len(received) // 2 - 1]:
        pair.client.acknowledge(call_id, len(event.data))
    assert not pair.client.has_data_to_send
    pair.client.acknowledge(call_id, len(received[0].data))
    assert pair.client.has_data_to_send
    _, server_events = pair.exchange()
    [update] = server_events
    assert isinstance(update, WindowUpdated)
    assert update.credit == window - sent + len(received) // 2 * len(chunk)
    assert update.credit > 0
    pair.server.send_message(call_id, chunk)


def test_no_credit_is_returned_once_the_client_has_finished_sending() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, message=b"u" * 200_000, end_stream=True)
    pair.exchange()
    assert pair.server.acknowledge(call_id, 200_000) is False
    assert not pair.server.has_data_to_send


def test_acknowledge_says_when_it_queued_a_window_update() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID)
    half = pair.server.settings.initial_window_size // 2
    pair.client.send_message(call_id, b"a" * (half - 1))
    pair.client.send_message(call_id, b"b")
    pair.exchange()
    assert pair.server.acknowledge(call_id, half - 1) is False  # batched: nothing queued
    assert not pair.server.has_data_to_send
    assert pair.server.acknowledge(call_id, 1) is True  # half the window: WINDOW_UPDATE
    assert pair.server.has_data_to_send
    assert pair.server.acknowledge(call_id + 1, 5) is False  # unknown call


def test_a_message_larger_than_the_window_is_allowed_while_credit_is_positive() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID)
    big = b"b" * (pair.server.settings.initial_window_size + 10)
    assert pair.client.send_message(call_id, big) == -10
    _, server_events = pair.exchange()
    assert of_type(server_events, MessageReceived)[0].data == big
    with pytest.raises(FlowControlBlockedError):
        pair.client.send_message(call_id, b"x")


def test_a_peer_that_ignores_flow_control_is_closed() -> None:
    pair = ConnectionPair(QUIET, quiet(initial_window_size=MIN_INITIAL_WINDOW_SIZE))
    call_id = pair.client.start_call(WIRE_ID)
    pair.exchange()
    flood = encode_message(call_id, b"f" * 40_000) * 3
    pair.server.receive_data(flood, 0.0)
    closed = closed_event(pair.server.events_received())
    assert closed.code is CloseCode.FLOW_CONTROL_ERROR


def test_window_update_overflow_is_a_flow_control_error() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID)
    pair.exchange()
    pair.server.receive_data(encode_window_update(call_id, (1 << 31) - 1), 0.0)
    assert closed_event(pair.server.events_received()).code is CloseCode.FLOW_CONTROL_ERROR


def test_acknowledging_more_than_received_is_a_local_error() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, message=b"abc")
    pair.exchange()
    pair.server.acknowledge(call_id, 3)
    with pytest.raises(LocalProtocolError, match="only 0 are unread"):
        pair.server.acknowledge(call_id, 1)
    pair.server.acknowledge(call_id + 1, 5)  # unknown call: nothing to do


# ---------------------------------------------------------------------------- limits


def test_max_concurrent_calls_refuses_the_excess_with_resource_exhausted() -> None:
    pair = ConnectionPair(QUIET, quiet(max_concurrent_calls=3))
    call_ids = [pair.client.start_call(WIRE_ID) for _ in range(4)]
    client_events, server_events = pair.exchange()
    assert [event.call_id for event in of_type(server_events, CallStarted)] == call_ids[:3]
    [refused] = of_type(client_events, CallEnded)
    assert refused.call_id == call_ids[3]
    assert refused.status is StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_calls 3" in refused.message
    pair.server.end_call(call_ids[0])
    pair.exchange()
    later = pair.client.start_call(WIRE_ID)
    _, server_events = pair.exchange()
    assert of_type(server_events, CallStarted)[0].call_id == later


def test_max_message_size_is_checked_before_sending() -> None:
    pair = ConnectionPair(QUIET, quiet(max_message_size=1000))
    call_id = pair.client.start_call(WIRE_ID)
    with pytest.raises(LimitExceededError, match="max_message_size"):
        pair.client.send_message(call_id, b"x" * 1001)
    with pytest.raises(LimitExceededError, match="max_message_size"):
        pair.client.start_call(WIRE_ID, message=b"x" * 1001)
    pair.client.send_message(call_id, b"x" * 1000)


@pytest.mark.parametrize("chunk_size", [None, 7, 4096])
def test_an_oversized_message_fails_its_call_and_is_skipped_without_buffering(
    chunk_size: int | None,
) -> None:
    server_config = quiet(max_message_size=1000)
    pair = ConnectionPair(QUIET, server_config, chunk_size=chunk_size)
    victim = pair.client.start_call(WIRE_ID)
    bystander = pair.client.start_call(WIRE_ID)
    pair.exchange()
    raw = encode_message(victim, b"v" * 50_000) + encode_message(bystander, b"fine")
    step = chunk_size or len(raw)
    for offset in range(0, len(raw), step):
        pair.server.receive_data(raw[offset : offset + step], 0.0)
        assert pair.server.pending_input_size <= 1000 + 10
    events = pair.server.events_received()
    assert events == [
        CallCancelled(
            victim,
            StatusCode.RESOURCE_EXHAUSTED,
            "message of 50000 bytes exceeds max_message_size 1000",
        ),
        MessageReceived(bystander, b"fine"),
    ]
    client_events = pair.to_client()
    assert client_events == [
        CallEnded(
            victim,
            StatusCode.RESOURCE_EXHAUSTED,
            "message of 50000 bytes exceeds max_message_size 1000",
        )
    ]


def test_an_oversized_response_fails_the_call_on_the_client() -> None:
    pair = ConnectionPair(quiet(max_message_size=100), QUIET)
    call_id = pair.client.start_call(WIRE_ID, end_stream=True)
    pair.exchange()
    with pytest.raises(LimitExceededError):
        pair.server.send_message(call_id, b"r" * 101)
    pair.client.receive_data(encode_message(call_id, b"r" * 101), 0.0)
    assert pair.client.events_received() == [
        CallEnded(
            call_id,
            StatusCode.RESOURCE_EXHAUSTED,
            "message of 101 bytes exceeds max_message_size 100",
            local=True,
        )
    ]
    assert of_type(pair.to_server(), CallCancelled)[0].code is StatusCode.RESOURCE_EXHAUSTED


def test_an_oversized_push_closes_the_connection() -> None:
    pair = ConnectionPair(quiet(max_message_size=100), QUIET)
    with pytest.raises(LimitExceededError):
        pair.server.send_push(PreparedPush(1, b"p" * 101))
    pair.client.receive_data(encode_push(1, b"p" * 101)[:20], 0.0)
    assert closed_event(pair.client.events_received()).code is CloseCode.FRAME_TOO_LARGE


def test_a_control_frame_over_max_frame_size_closes_as_soon_as_its_header_arrives() -> None:
    pair = ConnectionPair(QUIET, quiet(max_frame_size=16_384))
    header = HEADER.pack(20_000, FrameType.CALL_START, 0, 1)
    pair.server.receive_data(header, 0.0)
    closed = closed_event(pair.server.events_received())
    assert closed.code is CloseCode.FRAME_TOO_LARGE
    assert "20000" in closed.reason


def test_max_metadata_size_on_requests() -> None:
    pair = ConnectionPair(QUIET, quiet(max_metadata_size=100))
    big = [("k", "v" * 200)]
    with pytest.raises(LimitExceededError, match="max_metadata_size"):
        pair.client.start_call(WIRE_ID, big)
    pair.server.receive_data(encode_call_start(1, WIRE_ID, 0, big), 0.0)
    assert pair.server.events_received() == []
    [refused], _ = decode_frames(pair.server.data_to_send())
    assert isinstance(refused, EndCallFrame)
    assert refused.call_id == 1
    assert refused.status == StatusCode.RESOURCE_EXHAUSTED
    assert "request metadata of 205 bytes" in refused.message


def test_max_metadata_size_on_response_headers_and_trailers() -> None:
    pair = ConnectionPair(quiet(max_metadata_size=100), QUIET)
    first = pair.client.start_call(WIRE_ID)
    second = pair.client.start_call(WIRE_ID)
    pair.exchange()
    big = [("k", "v" * 200)]
    with pytest.raises(LimitExceededError):
        pair.server.send_headers(first, big)
    with pytest.raises(LimitExceededError):
        pair.server.end_call(first, trailers=big)
    pair.client.receive_data(encode_headers(first, big), 0.0)
    pair.client.receive_data(encode_end_call(second, 0, trailers=big), 0.0)
    ended = of_type(pair.client.events_received(), CallEnded)
    assert [(event.call_id, event.status, event.local) for event in ended] == [
        (first, StatusCode.RESOURCE_EXHAUSTED, True),
        (second, StatusCode.RESOURCE_EXHAUSTED, True),
    ]


def test_max_buffered_input_bounds_unconsumed_data_across_calls() -> None:
    server_config = ProtocolConfig(max_buffered_input=100_000, keepalive_interval=None)
    pair = ConnectionPair(QUIET, server_config)
    call_ids = [pair.client.start_call(WIRE_ID) for _ in range(4)]
    for call_id in call_ids:
        pair.client.send_message(call_id, b"d" * 30_000)
    _, server_events = pair.exchange()
    assert len(of_type(server_events, MessageReceived)) == 3
    [cancelled] = of_type(server_events, CallCancelled)
    assert cancelled.call_id == call_ids[3]
    assert cancelled.code is StatusCode.RESOURCE_EXHAUSTED
    assert "max_buffered_input" in cancelled.reason
    # Consuming (or ending calls) frees room for new input.
    pair.server.acknowledge(call_ids[0], 30_000)
    pair.server.end_call(call_ids[1])
    pair.client.send_message(call_ids[2], b"d" * 30_000)
    _, server_events = pair.exchange()
    assert of_type(server_events, MessageReceived)[0].call_id == call_ids[2]


# ---------------------------------------------------------------------------- push


def test_push_reaches_the_client_by_type_id() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.server.send_push(PreparedPush(0x0102_0003, b"event"))
    assert pair.to_client() == [PushReceived(0x0102_0003, b"event")]


def test_one_prepared_push_fans_out_to_many_connections() -> None:
    pairs = [ConnectionPair(QUIET, QUIET) for _ in range(20)]
    push = PreparedPush(42, b"broadcast")
    for pair in pairs:
        pair.server.send_push(push)
        pair.server.send_push(push)
    for pair in pairs:
        assert pair.to_client() == [PushReceived(42, b"broadcast")] * 2


def test_a_push_before_the_handshake_is_refused() -> None:
    server = Connection(SERVER, QUIET)
    with pytest.raises(LocalProtocolError, match="handshake"):
        server.send_push(PreparedPush(1, b""))


# ---------------------------------------------------------------------------- byte streams


def run_scenario(chunk_size: int | None) -> tuple[list[Event], list[Event]]:
    pair = ConnectionPair(QUIET, QUIET, handshake=False, chunk_size=chunk_size)
    client_log, server_log = pair.exchange()
    unary = pair.client.start_call(WIRE_ID, [("a", "b")], message=b"q" * 300, end_stream=True)
    stream = pair.client.start_call(WIRE_ID + 1, timeout=9.0, now=0.0)
    for index in range(5):
        pair.client.send_message(stream, bytes([index]) * index)
    pair.client.half_close(stream)
    client_events, server_events = pair.exchange()
    client_log += client_events
    server_log += server_events
    pair.server.send_headers(unary, [("h-bin", b"\x01")])
    pair.server.send_message(unary, b"r" * 70_000)
    pair.server.end_call(unary, StatusCode.ABORTED, "m", b"d", [("t", "x")])
    pair.server.send_push(PreparedPush(5, b"p"))
    pair.server.end_call(stream)
    client_events, server_events = pair.exchange()
    return client_log + client_events, server_log + server_events


def test_frames_before_the_server_hello_are_protocol_errors() -> None:
    client = Connection(CLIENT, QUIET)
    call_id = client.start_call(WIRE_ID)
    client.receive_data(encode_message(call_id, b"early"), 0.0)
    assert closed_event(client.events_received()).reason == "MESSAGE before HELLO"
    client = Connection(CLIENT, QUIET)
    call_id = client.start_call(WIRE_ID)
    client.receive_data(encode_end_call(call_id, 0), 0.0)
    assert closed_event(client.events_received()).reason == "END_CALL before HELLO"


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 64))
def test_any_chunking_of_the_byte_stream_yields_the_same_events(chunk_size: int) -> None:
    assert run_scenario(chunk_size) == run_scenario(None)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["client", "server"]))
def test_garbage_input_never_raises_and_never_buffers_without_bound(
    garbage: bytes, side: str
) -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.client.start_call(WIRE_ID)
    pair.exchange()
    connection = pair.client if side == "client" else pair.server
    connection.receive_data(garbage, 0.0)
    connection.events_received()
    limit = max(connection.settings.max_frame_size, connection.settings.max_message_size)
    assert connection.pending_input_size <= limit + 10


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=100))
def test_garbage_before_the_handshake_is_refused_cleanly(garbage: bytes) -> None:
    server = Connection(SERVER, QUIET)
    server.receive_data(garbage, 0.0)
    for event in server.events_received():
        assert isinstance(event, (HandshakeCompleted, ConnectionClosed))


small_ids = st.integers(0, 6)
short_text = st.text(max_size=8)
pairs = st.lists(
    st.tuples(st.sampled_from(["a", "b-bin", "c"]), st.text(max_size=4)).map(
        lambda pair: (pair[0], pair[1].encode()) if pair[0].endswith("-bin") else pair
    ),
    max_size=3,
).map(tuple)
wire_frames = st.one_of(
    st.builds(frames.HelloFrame, st.integers(0, 3), st.integers(0, 3)),
    st.builds(
        frames.CallStartFrame,
        small_ids,
        st.integers(0, 9),
        st.integers(0, 10**7),
        pairs,
        st.none() | st.binary(max_size=30),
    ),
    st.builds(frames.HeadersFrame, small_ids, pairs),
    st.builds(frames.MessageFrame, small_ids, st.binary(max_size=30), st.booleans(), st.booleans()),
    st.builds(frames.HalfCloseFrame, small_ids),
    st.builds(
        frames.EndCallFrame, small_ids, st.integers(0, 20), short_text, st.binary(max_size=4)
    ),
    st.builds(frames.CancelFrame, small_ids, st.integers(0, 20), short_text),
    st.builds(frames.WindowUpdateFrame, small_ids, st.integers(1, 1 << 20)),
    st.builds(frames.PushFrame, small_ids, st.binary(max_size=10)),
    st.builds(frames.PingFrame, st.binary(min_size=8, max_size=8)),
    st.builds(frames.PongFrame, st.binary(min_size=8, max_size=8)),
    st.builds(frames.GoAwayFrame, small_ids, short_text),
    st.builds(frames.CloseFrame, st.integers(0, 8), short_text),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(wire_frames, max_size=12), st.sampled_from(["client", "server"]))
def test_any_sequence_of_well_formed_frames_is_handled_or_refused_cleanly(
    sequence: list[frames.Frame], side: str
) -> None:
    pair = ConnectionPair(QUIET, QUIET)
    for _ in range(3):
        pair.client.start_call(WIRE_ID)
    pair.exchange()
    connection = pair.client if side == "client" else pair.server
    for frame in sequence:
        connection.receive_data(frames.encode_frame(frame), 0.0)
    events = connection.events_received()
    closes = of_type(events, ConnectionClosed)
    assert len(closes) <= 1
    if closes:
        assert events[-1] is closes[0]
        assert connection.closed
        if not closes[0].by_peer:
            # We closed because the peer broke a rule: say which, on the wire too.
            assert closes[0].code is not CloseCode.NO_ERROR
            assert closes[0].reason
            assert connection.data_to_send().endswith(closes[0].reason.encode())
    assert connection.open_calls <= 3 + len(sequence)


text_metadata = st.lists(
    st.tuples(st.sampled_from(["a", "b", "x-trace"]), st.text(max_size=10)), max_size=3
)
binary_metadata = st.lists(
    st.tuples(st.sampled_from(["c-bin", "d-bin"]), st.binary(max_size=10)), max_size=2
)


@settings(max_examples=150, deadline=None)
@given(
    request_metadata=text_metadata,
    binary=binary_metadata,
    timeout=st.one_of(st.none(), st.floats(0.001, 10_000)),
    request=st.binary(max_size=50),
    headers=text_metadata,
    responses=st.lists(st.binary(max_size=50), max_size=3),
    status=st.sampled_from(list(StatusCode)),
    message=st.text(max_size=20),
    details=st.binary(max_size=20),
    trailers=binary_metadata,
)
def test_everything_a_call_carries_arrives_unchanged(
    *,
    request_metadata: list[tuple[str, str]],
    binary: list[tuple[str, bytes]],
    timeout: float | None,
    request: bytes,
    headers: list[tuple[str, str]],
    responses: list[bytes],
    status: StatusCode,
    message: str,
    details: bytes,
    trailers: list[tuple[str, bytes]],
) -> None:
    pair = ConnectionPair(QUIET, QUIET)
    sent_metadata: list[tuple[str, str | bytes]] = [*request_metadata, *binary]
    call_id = pair.client.start_call(
        WIRE_ID, sent_metadata, timeout=timeout, now=0.0, message=request, end_stream=True
    )
    started, *rest = pair.to_server()
    assert isinstance(started, CallStarted)
    assert started.metadata == tuple(sent_metadata)
    if timeout is None:
        assert started.timeout is None
    else:
        assert started.timeout is not None
        assert abs(started.timeout - timeout) <= 1e-6
    if started.message is None:  # too large for one frame: CALL_START, then MESSAGE
        assert rest == [MessageReceived(call_id, request, end_stream=True)]
    else:
        assert (started.message, rest) == (request, [])
    if headers:
        pair.server.send_headers(call_id, headers)
    for response in responses:
        pair.server.send_message(call_id, response)
    pair.server.end_call(call_id, status, message, details, trailers)
    expected: list[Event] = [HeadersReceived(call_id, tuple(headers))] if headers else []
    expected += [MessageReceived(call_id, response) for response in responses]
    expected.append(CallEnded(call_id, status, message, details, tuple(trailers)))
    assert pair.to_client() == expected


def test_a_client_ignores_end_stream_on_a_server_message() -> None:
    # docs/wire-format.md §3.4: a server must not set END_STREAM, and a client
    # ignores it: the message is delivered and the call stays open for END_CALL.
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, message=b"q", end_stream=True)
    pair.exchange()
    pair.client.receive_data(encode_message(call_id, b"a", end_stream=True), 0.0)
    assert pair.client.events_received() == [MessageReceived(call_id, b"a", end_stream=False)]
    assert not pair.client.closed
    assert pair.client.call_state(call_id) is not None


@pytest.mark.parametrize("timeout", [1e15, float("inf"), float("nan")])
def test_a_timeout_the_wire_cannot_carry_is_rejected_before_the_call_exists(
    timeout: float,
) -> None:
    # 1e15 s is 1e21 µs, past CALL_START's u64: refused before anything is
    # registered (no open call that was never sent).
    pair = ConnectionPair(QUIET, QUIET)
    with pytest.raises(ValueError, match="timeout"):
        pair.client.start_call(WIRE_ID, timeout=timeout, message=b"q")
    assert (pair.client.open_calls, pair.client.last_call_id) == (0, 0)
    assert not pair.client.has_data_to_send
    call_id = pair.client.start_call(WIRE_ID, timeout=1.0, message=b"q", end_stream=True)
    _, server_events = pair.exchange()
    assert server_events == [CallStarted(call_id, WIRE_ID, (), 1.0, 1.0, b"q")]
    assert call_id == 1


def test_an_end_call_too_large_for_the_peer_is_refused_locally() -> None:
    # A 300 KB status message must not go out: the client would close the
    # whole connection with FRAME_TOO_LARGE, failing every other call on it.
    pair = ConnectionPair(QUIET, QUIET)
    first = pair.client.start_call(WIRE_ID, message=b"q", end_stream=True)
    other = pair.client.start_call(WIRE_ID, message=b"q", end_stream=True)
    pair.exchange()
    with pytest.raises(LimitExceededError, match="max_frame_size"):
        pair.server.end_call(first, StatusCode.INTERNAL, "e" * 300_000)
    assert not pair.server.has_data_to_send
    pair.server.end_call(first, StatusCode.RESOURCE_EXHAUSTED, "status too large")
    pair.server.end_call(other)
    client_events, _ = pair.exchange()
    assert client_events == [
        CallEnded(first, StatusCode.RESOURCE_EXHAUSTED, "status too large"),
        CallEnded(other, StatusCode.OK),
    ]
    assert not pair.client.closed


# ------------------------------------------------------------- compact call frames (§3.2, §3.4)


def frame_types(data: bytes) -> list[tuple[int, int]]:
    """(type, flags) of every frame in `data`."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        length, frame_type, flags, _call_id = HEADER.unpack_from(data, pos)
        out.append((frame_type, flags))
        pos += HEADER_SIZE + length
    return out


def test_compact_frames_are_used_only_once_the_peer_announced_them() -> None:
    pair = ConnectionPair(QUIET, QUIET, handshake=False)
    early = pair.client.start_call(WIRE_ID, message=b"early", end_stream=True)
    assert frame_types(pair.client.data_to_send())[-2:] == [
        (FrameType.CALL_START, 0),
        (FrameType.MESSAGE, FLAG_END_STREAM),
    ]  # before the server's HELLO the client assumes no COMPACT_CALLS
    pair.client.cancel(early)
    pair.client.data_to_send()
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID, message=b"req", end_stream=True)
    request = pair.client.data_to_send()
    assert frame_types(request) == [(FrameType.CALL_START, FLAG_END_STREAM)]
    assert decode_frames(request)[0] == [frames.CallStartFrame(call_id, WIRE_ID, 0, (), b"req")]
    pair.server.receive_data(request, pair.now)
    [started] = pair.server.events_received()
    assert started == CallStarted(call_id, WIRE_ID, (), None, None, b"req")
    assert pair.server.call_state(call_id) is CallState.HALF_CLOSED
    pair.server.send_final_message(call_id, b"resp")
    response = pair.server.data_to_send()
    assert frame_types(response) == [(FrameType.MESSAGE, FLAG_END_CALL)]
    assert decode_frames(response)[0] == [frames.MessageFrame(call_id, b"resp", end_call=True)]
    pair.client.receive_data(response, pair.now)
    assert pair.client.events_received() == [CallEnded(call_id, StatusCode.OK, final=b"resp")]
    assert pair.client.open_calls == pair.server.open_calls == 0


def test_a_peer_without_compact_calls_gets_the_two_frame_forms() -> None:
    old = ProtocolConfig(settings=Settings(compact_calls=False), keepalive_interval=None)
    pair = ConnectionPair(old, old)
    call_id = pair.client.start_call(WIRE_ID, message=b"req", end_stream=True)
    request = pair.client.data_to_send()
    assert frame_types(request) == [(FrameType.CALL_START, 0), (FrameType.MESSAGE, 1)]
    pair.server.receive_data(request, pair.now)
    assert pair.server.events_received() == [
        CallStarted(call_id, WIRE_ID, (), None, None),
        MessageReceived(call_id, b"req", end_stream=True),
    ]
    pair.server.send_final_message(call_id, b"resp")
    assert frame_types(pair.server.data_to_send()) == [
        (FrameType.MESSAGE, 0),
        (FrameType.END_CALL, 0),
    ]


def test_a_compact_call_start_with_metadata_round_trips() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(
        WIRE_ID, [("k", "v"), ("b-bin", b"\x00")], timeout=2.0, message=b"\x08\x01", end_stream=True
    )
    events = pair.to_server()
    [started] = events
    assert isinstance(started, CallStarted)
    assert (started.call_id, started.metadata) == (call_id, (("k", "v"), ("b-bin", b"\x00")))
    assert started.timeout == 2.0
    assert started.message == b"\x08\x01"


def test_a_request_too_big_for_one_frame_uses_two() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    big = bytes(pair.client.peer_settings.max_frame_size)  # + 13 bytes of CALL_START
    call_id = pair.client.start_call(WIRE_ID, message=big, end_stream=True)
    assert frame_types(pair.client.data_to_send()) == [
        (FrameType.CALL_START, 0),
        (FrameType.MESSAGE, FLAG_END_STREAM),
    ]
    assert pair.client.call_state(call_id) is CallState.HALF_CLOSED


def test_a_compact_request_over_max_message_size_fails_only_its_call() -> None:
    pair = ConnectionPair(QUIET, quiet(max_message_size=8))
    # A peer that ignores the announced limit (ours checks before sending):
    # route id, no timeout, an empty metadata block, then 9 bytes of request.
    payload = WIRE_ID.to_bytes(4, "big") + bytes(8) + b"\x00" + bytes(9)
    oversized = HEADER.pack(len(payload), FrameType.CALL_START, FLAG_END_STREAM, 1) + payload
    pair.server.receive_data(oversized, pair.now)
    events = pair.server.events_received()
    assert [type(event) for event in events] == [CallStarted, CallCancelled]
    assert not pair.server.closed
    assert frame_types(pair.server.data_to_send()) == [(FrameType.END_CALL, 0)]


def test_a_truncated_compact_call_start_is_a_protocol_error() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.server.receive_data(
        HEADER.pack(6, FrameType.CALL_START, FLAG_END_STREAM, 1) + bytes(6), pair.now
    )
    assert closed_event(pair.server.events_received()).code is CloseCode.PROTOCOL_ERROR


def test_a_message_after_a_compact_call_start_is_a_protocol_error() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    pair.client.start_call(WIRE_ID, message=b"req", end_stream=True)
    request = pair.client.data_to_send() + encode_message(1, b"more")
    pair.server.receive_data(request, pair.now)
    assert closed_event(pair.server.events_received()).code is CloseCode.PROTOCOL_ERROR


def test_a_server_ignores_the_end_call_flag_on_a_client_message() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    call_id = pair.client.start_call(WIRE_ID)
    pair.to_server()
    frame = HEADER.pack(2, FrameType.MESSAGE, FLAG_END_CALL, call_id) + b"hi"
    pair.server.receive_data(frame, pair.now)
    assert pair.server.events_received() == [MessageReceived(call_id, b"hi", False)]
    assert pair.server.call_state(call_id) is CallState.OPEN


def test_send_final_message_checks_the_call_like_send_message() -> None:
    pair = ConnectionPair(QUIET, quiet(max_message_size=4))
    call_id = pair.client.start_call(WIRE_ID, message=b"req", end_stream=True)
    pair.to_server()
    pair.server.send_final_message(call_id, b"too long")  # the client's limit is the default
    pair.server.data_to_send()
    with pytest.raises(LocalProtocolError):
        pair.server.send_final_message(999, b"x")  # never started
    pair.server.send_final_message(call_id, b"again")  # ended already: ignored
    assert pair.server.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        pair.client.send_final_message(call_id, b"x")  # the server's method


def test_data_to_send_chunks_cuts_between_frames() -> None:
    pair = ConnectionPair(QUIET, QUIET)
    calls = [pair.client.start_call(WIRE_ID) for _ in range(3)]
    for call_id, size in zip(calls, (10, 200, 10), strict=True):
        pair.client.send_message(call_id, bytes(size))
    chunks = pair.client.data_to_send_chunks(100)
    assert pair.client.data_to_send_chunks(100) == []  # all taken
    sizes = [len(chunk) for chunk in chunks]
    assert [len(decode_frames(chunk)[0]) for chunk in chunks] == [4, 1, 1]
    assert sizes[0] <= 100 and sizes[1] == HEADER_SIZE + 200 and sizes[2] <= 100
    pair.server.receive_data(b"".join(chunks), 0.0)
    assert len(pair.server.events_received()) == 6  # 3 CallStarted, 3 MessageReceived
