"""A stateful property test: random traffic between two endpoints keeps them in agreement.

Hypothesis drives a client and a server through any interleaving of calls,
messages, half-closes, cancels, headers, ends, acknowledgements, pushes,
timer ticks and byte-stream chunkings, using only what the API allows at that
moment. After every full exchange both ends must agree on which calls are
open, in which state, and on every flow-control window; neither may ever
close the connection.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flare_runtime.protocol import (
    CallCancelled,
    CallEnded,
    CallStarted,
    CallState,
    ConnectionClosed,
    Event,
    MessageReceived,
    ProtocolConfig,
    Settings,
)
from flare_runtime.protocol.frames import PreparedPush
from flare_runtime.protocol.loopback import ConnectionPair
from flare_runtime.status import StatusCode

WINDOW = 65_536
CONFIG = ProtocolConfig(
    settings=Settings(initial_window_size=WINDOW, max_concurrent_calls=6),
    keepalive_interval=7.0,
    keepalive_timeout=30.0,
    window_update_ratio=0.05,  # frequent WINDOW_UPDATEs, so the walk exercises them
)
CLIENT_SENDING = {CallState.OPEN, CallState.OPEN_RESPONDING}
SERVER_HEADERS = {CallState.OPEN, CallState.HALF_CLOSED}


class TwoEndpoints(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = ConnectionPair(CONFIG, CONFIG)
        # Bytes each side received on a call and has not acknowledged yet.
        self.unread: dict[str, dict[int, int]] = {"client": {}, "server": {}}

    def open_ids(self) -> list[int]:
        return sorted(self.pair.client._calls)

    def record(self, side: str, events: list[Event]) -> None:
        for event in events:
            assert not isinstance(event, ConnectionClosed), event
            if isinstance(event, MessageReceived):
                unread = self.unread[side]
                unread[event.call_id] = unread.get(event.call_id, 0) + len(event.data)
            elif isinstance(event, CallStarted) and event.message is not None:
                self.unread[side][event.call_id] = len(event.message)
            elif isinstance(event, (CallEnded, CallCancelled)):
                self.unread[side].pop(event.call_id, None)

    @rule(
        chunk=st.sampled_from([None, 1, 3, 64, 1000]),
    )
    def exchange(self, chunk: int | None) -> None:
        self.pair.chunk_size = chunk
        client_events, server_events = self.pair.exchange()
        self.record("client", client_events)
        self.record("server", server_events)

    @rule(
        size=st.sampled_from([0, 10, 5000, 70_000]),
        with_message=st.booleans(),
        end=st.booleans(),
        timeout=st.sampled_from([None, 1.0, 50.0]),
    )
    def start_call(self, size: int, with_message: bool, end: bool, timeout: float | None) -> None:
        self.pair.client.start_call(
            1,
            [("k", "v")] if size % 2 else (),
            timeout=timeout,
            now=self.pair.now,
            message=b"s" * size if with_message else None,
            end_stream=end,
        )

    def client_senders(self) -> list[int]:
        client = self.pair.client
        return [
            call_id
            for call_id in self.open_ids()
            if client.call_state(call_id) in CLIENT_SENDING and client.available_credit(call_id) > 0
        ]

    def server_senders(self) -> list[int]:
        server = self.pair.server
        return [
            call_id for call_id in sorted(server._calls) if server.available_credit(call_id) > 0
        ]

    @precondition(lambda self: self.client_senders())
    @rule(data=st.data(), size=st.sampled_from([0, 100, 9000, 40_000]), end=st.booleans())
    def client_sends(self, data: st.DataObject, size: int, end: bool) -> None:
        call_id = data.draw(st.sampled_from(self.client_senders()))
        self.pair.client.send_message(call_id, b"c" * size, end_stream=end)

    @precondition(lambda self: self.open_ids())
    @rule(data=st.data())
    def client_half_closes_or_cancels(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.open_ids()))
        if data.draw(st.booleans()):
            self.pair.client.cancel(call_id)
            self.unread["client"].pop(call_id, None)
        elif self.pair.client.call_state(call_id) in CLIENT_SENDING:
            self.pair.client.half_close(call_id)

    @precondition(lambda self: self.server_senders())
    @rule(data=st.data(), size=st.sampled_from([0, 100, 9000, 40_000]))
    def server_sends(self, data: st.DataObject, size: int) -> None:
        call_id = data.draw(st.sampled_from(self.server_senders()))
        server = self.pair.server
        if server.call_state(call_id) in SERVER_HEADERS and data.draw(st.booleans()):
            server.send_headers(call_id, [("h", "1")])
        server.send_message(call_id, b"r" * size)

    @precondition(lambda self: self.pair.server._calls)
    @rule(data=st.data())
    def server_ends(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.pair.server._calls)))
        self.pair.server.end_call(call_id, data.draw(st.sampled_from(list(StatusCode))), "done")
        self.unread["server"].pop(call_id, None)

    @rule(side=st.sampled_from(["client", "server"]), data=st.data())
    def acknowledge(self, side: str, data: st.DataObject) -> None:
        unread = self.unread[side]
        if not unread:
            return
        call_id = data.draw(st.sampled_from(sorted(unread)))
        amount = data.draw(st.one_of(st.just(unread[call_id]), st.integers(0, unread[call_id])))
        connection = self.pair.client if side == "client" else self.pair.server
        connection.acknowledge(call_id, amount)
        unread[call_id] -= amount

    @rule(payload=st.binary(max_size=50))
    def push(self, payload: bytes) -> None:
        self.pair.server.send_push(PreparedPush(9, payload))

    @rule(seconds=st.sampled_from([0.5, 1.0, 8.0]))
    def time_passes(self, seconds: float) -> None:
        client_events, server_events = self.pair.advance(seconds)
        self.record("client", client_events)
        self.record("server", server_events)

    @invariant()
    def both_ends_agree_once_quiet(self) -> None:
        pair = self.pair
        if pair.client.has_data_to_send or pair.server.has_data_to_send:
            return
        assert not pair.client.closed
        assert not pair.server.closed
        assert pair.client._calls.keys() == pair.server._calls.keys()
        for call_id, client_call in pair.client._calls.items():
            server_call = pair.server._calls[call_id]
            assert client_call.state == server_call.state
            # What one side may still send is what the other still accepts.
            assert client_call.send_credit == server_call.recv_credit
            assert server_call.send_credit == client_call.recv_credit
            assert client_call.buffered == self.unread["client"].get(call_id, 0)
            assert server_call.buffered == self.unread["server"].get(call_id, 0)


TwoEndpoints.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_two_endpoints_stay_in_agreement = TwoEndpoints.TestCase
