"""`Connection`: one end of a Flare connection, sans-I/O (docs/wire-format.md).

Feed it the bytes the transport received and the current time; it reports
events and queues the bytes to send. It never reads a clock, opens a socket or
imports asyncio: the transport adapter does all I/O, the runtime above it
turns events into calls.

The calling contract, for any transport::

    conn = Connection(CLIENT, config, now=loop.time())
    transport.write(conn.data_to_send())          # the client's HELLO
    # on every chunk of input (any chunking: whole frames or a byte stream)
    conn.receive_data(chunk, loop.time())
    for event in conn.events_received(): ...
    transport.write(conn.data_to_send())          # after any batch of calls
    # one timer per connection
    when = conn.get_timer()                        # re-arm call_at(when) if earlier
    conn.handle_timer(loop.time())                 # when it fires

After any method call, `data_to_send()` may have bytes and `events_received()`
may have events; `get_timer()` may have moved earlier (a new deadline).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Final

from flare_runtime.errors import (
    ConnectionClosedError,
    FlowControlBlockedError,
    LimitExceededError,
    LocalProtocolError,
    RemoteProtocolError,
)
from flare_runtime.protocol.config import (
    MIN_INITIAL_WINDOW_SIZE,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    ProtocolConfig,
    Role,
    Settings,
)
from flare_runtime.protocol.events import (
    CallCancelled,
    CallEnded,
    CallStarted,
    ConnectionClosed,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    HeadersReceived,
    MessageReceived,
    PingReceived,
    PongReceived,
    PushReceived,
    StreamEnded,
    WindowUpdated,
)
from flare_runtime.protocol.frames import (
    FLAG_END_CALL,
    FLAG_END_STREAM,
    HEADER,
    HEADER_SIZE,
    MAX_CALL_ID,
    CloseCode,
    FrameType,
    MetadataInput,
    MetadataPairs,
    PreparedPush,
    SettingId,
    call_start_head,
    compact_call_start_head,
    decode_call_start_payload,
    decode_close_payload,
    decode_code_reason_payload,
    decode_compact_call_start_payload,
    decode_end_call,
    decode_goaway_payload,
    decode_hello_payload,
    decode_metadata,
    decode_ping_payload,
    decode_window_update_payload,
    empty_call_start,
    empty_call_start_and_message_head,
    encode_cancel,
    encode_close,
    encode_end_call,
    encode_end_call_ok,
    encode_goaway,
    encode_half_close,
    encode_headers,
    encode_hello,
    encode_metadata,
    encode_ping,
    encode_pong,
    encode_window_update,
    split_frames,
)
from flare_runtime.protocol.state import TRANSITIONS, CallInput, CallState
from flare_runtime.status import StatusCode

__all__ = ["Connection", "FlowControlBlockedError", "LimitExceededError"]


# Frame-type numbers as plain ints: comparing an int to an IntEnum member goes
# through IntEnum.__eq__, which is measurably slower in the receive loop.
_MESSAGE: Final = int(FrameType.MESSAGE)
_PUSH: Final = int(FrameType.PUSH)
_CALL_START: Final = int(FrameType.CALL_START)

_OPEN: Final = int(CallState.OPEN)
_HALF_CLOSED: Final = int(CallState.HALF_CLOSED)
_C_MSG: Final = int(CallInput.CLIENT_MESSAGE)
_C_END: Final = int(CallInput.CLIENT_MESSAGE_END)
_C_HALF: Final = int(CallInput.CLIENT_HALF_CLOSE)
_C_CANCEL: Final = int(CallInput.CLIENT_CANCEL)
_S_HEADERS: Final = int(CallInput.SERVER_HEADERS)
_S_MSG: Final = int(CallInput.SERVER_MESSAGE)
_S_END: Final = int(CallInput.SERVER_END)

_STATUS_CODES: Final = tuple(StatusCode)
_OK: Final = StatusCode.OK
_MESSAGE_HEADER_PACK: Final = HEADER.pack
_MAX_WINDOW: Final = (1 << 31) - 1
_MAX_TIMEOUT: Final = (1 << 63) / 1_000_000  # seconds; CALL_START's timeout_us is a u64


def _status(code: int) -> StatusCode:
    # An unknown code from a newer peer reads as UNKNOWN, as gRPC does.
    return _STATUS_CODES[code] if code < len(_STATUS_CODES) else StatusCode.UNKNOWN


class _Call:
    """Per-call bookkeeping; one per open call, no per-message objects."""

    __slots__ = ("buffered", "deadline", "pending_ack", "recv_credit", "send_credit", "state")

    def __init__(self, send_credit: int, recv_credit: int, deadline: float | None) -> None:
        self.state = _OPEN
        self.send_credit = send_credit
        self.recv_credit = recv_credit
        self.buffered = 0  # received, not yet acknowledged by the application
        self.pending_ack = 0  # acknowledged, not yet announced in a WINDOW_UPDATE
        self.deadline = deadline


_FrameHandler = Callable[["Connection", bytes, int, int, int, float], None]


class Connection:
    """One end (client or server) of a Flare connection.

    Only the client starts calls; only the server sends headers, ends calls,
    pushes and goes away. Methods called on the wrong side, on an unknown call,
    or in a state that forbids them raise `LocalProtocolError`; methods that
    send after the connection closed raise `ConnectionClosedError`. Input that
    breaks the protocol never raises: it queues a CLOSE frame and reports
    `ConnectionClosed` (docs/wire-format.md §8).
    """

    # Slots keep an idle connection small: servers hold many thousands.
    __slots__ = (
        "_ack_threshold",
        "_buffer",
        "_buffered_total",
        "_calls",
        "_closed",
        "_deadlines",
        "_events",
        "_goaway_last",
        "_handlers",
        "_hello_deadline",
        "_initial_window",
        "_is_client",
        "_keepalive_interval",
        "_last_call_id",
        "_last_received",
        "_max_frame_size",
        "_max_message_size",
        "_needed",
        "_out",
        "_ping_counter",
        "_ping_deadline",
        "_skip",
        "bytes_received",
        "bytes_sent",
        "config",
        "peer_settings",
        "pushes_sent",
        "role",
        "settings",
        "version",
    )

    def __init__(
        self, role: Role, config: ProtocolConfig | None = None, *, now: float = 0.0
    ) -> None:
        """Create the endpoint. A client queues its HELLO at once: send `data_to_send()`."""
        self.role = role
        self.config = config if config is not None else ProtocolConfig()
        self.settings = self.config.settings
        self._is_client = role is Role.CLIENT
        # Until the peer's HELLO arrives, assume the smallest window it may
        # announce, so calls pipelined behind our HELLO never overrun it (§6).
        self.peer_settings = Settings(
            initial_window_size=MIN_INITIAL_WINDOW_SIZE, compact_calls=False
        )
        self.version: int | None = None
        self.bytes_received = 0
        """Bytes given to `receive_data` while open (Flare frames, no transport framing)."""
        self.bytes_sent = 0
        """Bytes returned by `data_to_send` (Flare frames, no transport framing)."""
        self.pushes_sent = 0
        """Pushes queued by `send_push`."""
        self._calls: dict[int, _Call] = {}
        self._last_call_id = 0
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._buffer: bytearray | None = None  # an incomplete frame, only while one is pending
        self._needed = 0
        self._skip = 0
        self._buffered_total = 0
        self._deadlines: list[tuple[float, int]] = []
        self._last_received = now
        self._ping_deadline: float | None = None
        self._ping_counter = 0
        self._hello_deadline: float | None = now + self.config.handshake_timeout
        self._goaway_last: int | None = None
        self._closed = False
        self._max_message_size = self.settings.max_message_size
        self._max_frame_size = self.settings.max_frame_size
        self._initial_window = self.settings.initial_window_size
        self._keepalive_interval = self.config.keepalive_interval
        self._ack_threshold = max(
            1, int(self.settings.initial_window_size * self.config.window_update_ratio)
        )
        self._handlers = _CLIENT_HANDLERS if self._is_client else _SERVER_HANDLERS
        if self._is_client:
            self._out.append(
                encode_hello(PROTOCOL_VERSION, PROTOCOL_VERSION, _settings_pairs(self.settings))
            )

    # ------------------------------------------------------------------ properties

    @property
    def established(self) -> bool:
        """True once both HELLOs were exchanged and a version agreed."""
        return self.version is not None

    @property
    def closed(self) -> bool:
        """True once CLOSE was sent or received; the connection accepts nothing more."""
        return self._closed

    @property
    def has_data_to_send(self) -> bool:
        """True when `data_to_send()` would return bytes."""
        return bool(self._out)

    @property
    def pending_input_size(self) -> int:
        """Bytes of an incomplete frame held until the rest arrives (bounded by the limits)."""
        return len(self._buffer) if self._buffer is not None else 0

    @property
    def open_calls(self) -> int:
        """Number of calls not yet ended (a draining server closes when it reaches 0)."""
        return len(self._calls)

    @property
    def last_call_id(self) -> int:
        """Client: the last call id issued. Server: the highest call id received."""
        return self._last_call_id

    @property
    def going_away(self) -> bool:
        """True once GOAWAY was sent (server) or received (client)."""
        return self._goaway_last is not None

    def call_state(self, call_id: int) -> CallState | None:
        """The state of `call_id` (docs/wire-format.md §5); None once it ended or never existed."""
        call = self._calls.get(call_id)
        return CallState(call.state) if call is not None else None

    def available_credit(self, call_id: int) -> int:
        """Send credit left on `call_id`: a message may be sent while it is > 0 (§6).

        Returns 0 for a call that is not open.
        """
        call = self._calls.get(call_id)
        return call.send_credit if call is not None else 0

    # ------------------------------------------------------------------ I/O

    def receive_data(self, data: bytes, now: float) -> None:
        """Process bytes from the peer (any chunking); then read `events_received()`.

        Any complete frames are handled at once; an incomplete frame is kept
        (bounded by the frame and message size limits, checked as soon as a
        header is complete). Input after the connection closed is ignored.
        """
        if self._closed:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self.bytes_received += len(data)
        self._last_received = now
        self._ping_deadline = None  # any input proves the peer is alive
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        buffer = self._buffer
        if buffer is not None:
            buffer += data
            if len(buffer) < self._needed:
                return
            data = bytes(buffer)
            self._buffer = None
        if not data:
            return
        try:
            self._parse(data, now)
        except RemoteProtocolError as exc:
            self._fail(CloseCode.PROTOCOL_ERROR, str(exc))

    def events_received(self) -> list[Event]:
        """Return and forget the events reported since the last call, in order."""
        events = self._events
        self._events = []
        return events

    def data_to_send(self) -> bytes:
        """Return and forget every byte queued since the last call (one joined buffer).

        Returns b"" when nothing is pending. After `ConnectionClosed` this holds
        the final CLOSE frame, when this endpoint closed.
        """
        out = self._out
        if not out:
            return b""
        self._out = []
        data = out[0] if len(out) == 1 else b"".join(out)
        self.bytes_sent += len(data)
        return data

    def data_to_send_chunks(self, max_size: int) -> list[bytes]:
        """`data_to_send`, cut at frame boundaries into chunks of at most `max_size` bytes.

        For a transport that carries output in units of bounded size (one
        WebSocket message each); a frame larger than `max_size` is a chunk of
        its own. Returns [] when nothing is pending.
        """
        data = self.data_to_send()
        if len(data) <= max_size:
            return [data] if data else []
        return split_frames(data, max_size)

    def get_timer(self) -> float | None:
        """When `handle_timer` must next run (on the `now` clock), or None for never.

        Covers the handshake timeout, keepalive pings and their timeout, and
        every call deadline: one timer per connection is enough. It only moves
        earlier after `start_call` (a new deadline) or a received CALL_START;
        otherwise a timer armed earlier may fire early, which is harmless.
        """
        if self._closed:
            return None
        # Called after every batch of input, so plain comparisons, no min().
        when = self._hello_deadline  # None once the handshake is done
        interval = self._keepalive_interval
        # No PING before the handshake: the first frame each way must be HELLO.
        if interval is not None and self.version is not None:
            keepalive = self._ping_deadline
            if keepalive is None:
                keepalive = self._last_received + interval
            if when is None or keepalive < when:
                when = keepalive
        deadlines = self._deadlines
        if deadlines:
            calls = self._calls
            while deadlines:
                deadline, call_id = deadlines[0]
                call = calls.get(call_id)
                if call is not None and call.deadline == deadline:
                    if when is None or deadline < when:
                        when = deadline
                    break
                heapq.heappop(deadlines)  # the call ended before its deadline
        return when

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at `now`: handshake timeout, keepalive, call deadlines.

        May queue PING, CANCEL / END_CALL (DEADLINE_EXCEEDED) or CLOSE frames
        and report `CallEnded` / `CallCancelled` / `ConnectionClosed`. Calling
        it early does nothing.
        """
        if self._closed:
            return
        if self._hello_deadline is not None and now >= self._hello_deadline:
            self._fail(CloseCode.PROTOCOL_ERROR, "no HELLO within the handshake timeout")
            return
        interval = self.config.keepalive_interval
        if interval is not None and self.version is not None:
            if self._ping_deadline is not None:
                if now >= self._ping_deadline:
                    self._fail(CloseCode.KEEPALIVE_TIMEOUT, "no PONG within the keepalive timeout")
                    return
            elif now >= self._last_received + interval:
                self._ping_counter += 1
                self._out.append(encode_ping(self._ping_counter.to_bytes(8, "big")))
                self._ping_deadline = now + self.config.keepalive_timeout
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, call_id = heapq.heappop(deadlines)
            call = self._calls.get(call_id)
            if call is None or call.deadline != deadline:
                continue
            self._forget(call_id, call)
            if self._is_client:
                self._out.append(
                    encode_cancel(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
                )
                self._events.append(
                    CallEnded(
                        call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", local=True
                    )
                )
            else:
                self._out.append(
                    encode_end_call(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
                )
                self._events.append(
                    CallCancelled(call_id, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
                )

    # ------------------------------------------------------------------ client API

    def start_call(
        self,
        wire_id: int,
        metadata: MetadataInput = (),
        *,
        timeout: float | None = None,
        now: float = 0.0,
        message: bytes | None = None,
        end_stream: bool = False,
    ) -> int:
        """Client: open a call on the route whose wire id is `wire_id`; return the call id.

        `timeout` (seconds, from `now`) sets the deadline: both ends end the
        call with DEADLINE_EXCEEDED when it passes. `message`, when given, is
        sent in the same batch (the unary fast path); `end_stream` half-closes
        after it (or right away when there is no message). May be called before
        the handshake completes. Raises `LimitExceededError` when the metadata
        is larger than the server accepts, `LocalProtocolError` after GOAWAY,
        `ValueError` for a wire id over 32 bits or a timeout that is NaN,
        infinite or beyond the wire's u64 microseconds; nothing is sent or
        registered then.
        """
        if self._closed:
            raise ConnectionClosedError("the Flare connection is closed")
        if not self._is_client:
            raise LocalProtocolError("only a client starts calls")
        if self._goaway_last is not None:
            raise LocalProtocolError("the server sent GOAWAY: open a new connection")
        call_id = self._last_call_id + 1
        if call_id > MAX_CALL_ID:
            raise LocalProtocolError("call ids exhausted: open a new connection")
        if not 0 <= wire_id <= MAX_CALL_ID:
            raise ValueError(f"wire id {wire_id} does not fit 32 bits")
        peer = self.peer_settings
        if message is not None and len(message) > peer.max_message_size:
            raise LimitExceededError(
                f"message of {len(message)} bytes exceeds the peer's max_message_size "
                f"({peer.max_message_size})"
            )
        block = encode_metadata(metadata) if metadata else None
        if block is not None and len(block) > peer.max_metadata_size:
            raise LimitExceededError(
                f"metadata of {len(block)} bytes exceeds the peer's max_metadata_size "
                f"({peer.max_metadata_size})"
            )
        deadline: float | None = None
        timeout_us = 0
        if timeout is not None:
            # Checked before any state changes, so a timeout the u64 field cannot
            # carry leaves no call registered and nothing queued.
            if not timeout < _MAX_TIMEOUT:  # also rejects NaN
                raise ValueError(
                    f"timeout {timeout!r} is not a finite number of seconds below 2**63 µs"
                )
            timeout_us = max(1, round(timeout * 1_000_000))
            deadline = now + timeout
        self._last_call_id = call_id
        call = _Call(peer.initial_window_size, self._initial_window, deadline)
        self._calls[call_id] = call
        if deadline is not None:
            self._push_deadline(deadline, call_id)
        out = self._out
        if (
            end_stream
            and message is not None
            and peer.compact_calls
            and 12 + (len(block) if block is not None else 1) + len(message) <= peer.max_frame_size
        ):
            # The compact call start (§3.2): the request rides in CALL_START.
            size = len(message)
            if block is None:
                out.append(compact_call_start_head(call_id, wire_id, timeout_us, 0, size))
            else:
                out.append(compact_call_start_head(call_id, wire_id, timeout_us, len(block), size))
                out.append(block)
            out.append(message)
            call.send_credit -= size
            call.state = _HALF_CLOSED
            return call_id
        if block is None:
            if message is None:
                out.append(empty_call_start(call_id, wire_id, timeout_us))
            else:
                # The unary path: CALL_START and the MESSAGE header in one pack.
                size = len(message)
                out.append(
                    empty_call_start_and_message_head(
                        call_id, wire_id, timeout_us, size, end_stream
                    )
                )
                out.append(message)
                call.send_credit -= size
                if end_stream:
                    call.state = _HALF_CLOSED
                return call_id
        else:
            out.append(call_start_head(call_id, wire_id, timeout_us, len(block)))
            out.append(block)
        if message is not None:
            self.send_message(call_id, message, end_stream)
        elif end_stream:
            self.half_close(call_id)
        return call_id

    def half_close(self, call_id: int) -> None:
        """Client: send no more messages on `call_id` (the server sees `StreamEnded`)."""
        call = self._sendable_call(call_id)
        if call is None:
            return
        if not self._is_client:
            raise LocalProtocolError("only the client half-closes; the server uses end_call")
        call.state = self._transition(call, _C_HALF, call_id, local=True)
        self._out.append(encode_half_close(call_id))

    def cancel(
        self, call_id: int, code: StatusCode = StatusCode.CANCELLED, reason: str = ""
    ) -> None:
        """Client: abandon `call_id`; the server's handler is cancelled (it sees `CallCancelled`).

        The call is forgotten at once: frames the server already sent for it are
        ignored, and no event reports it. Cancelling an ended call does nothing.
        """
        if not self._is_client:
            raise LocalProtocolError("only a client cancels; the server uses end_call")
        call = self._sendable_call(call_id)
        if call is None:
            return
        self._forget(call_id, call)
        self._out.append(encode_cancel(call_id, code, reason))

    # ------------------------------------------------------------------ both sides

    def send_message(self, call_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send one serialized message on `call_id`; return the send credit left.

        `end_stream` (client only) half-closes the call after this message.
        Raises `FlowControlBlockedError` when the credit is not positive (wait for
        `WindowUpdated`), `LimitExceededError` when `data` is larger than the
        peer's max_message_size. Sending on a call that already ended (the
        peer cancelled it, its deadline passed) is ignored and returns 0.
        """
        call = self._calls.get(call_id)
        if call is None:
            self._check_known_call(call_id)
            return 0
        if self._is_client:
            call_input = _C_END if end_stream else _C_MSG
        elif end_stream:
            raise LocalProtocolError("only the client ends its stream; the server uses end_call")
        else:
            call_input = _S_MSG
        state = TRANSITIONS[call.state][call_input]
        if state < 0:
            self._transition(call, call_input, call_id, local=True)
        size = len(data)
        self._check_message(call_id, call, size)
        call.state = state
        call.send_credit -= size
        out = self._out
        out.append(
            _MESSAGE_HEADER_PACK(size, _MESSAGE, FLAG_END_STREAM if end_stream else 0, call_id)
        )
        out.append(data)
        return call.send_credit

    def acknowledge(self, call_id: int, size: int) -> bool:
        """Tell the connection the application consumed `size` bytes of messages on `call_id`.

        Credit goes back to the peer in batched WINDOW_UPDATE frames (once half
        the window is consumed, by default); returns True when one was queued
        (send `data_to_send()`), False otherwise. Acknowledging an ended call
        does nothing; acknowledging more than was received raises
        `LocalProtocolError`.
        """
        call = self._calls.get(call_id)
        if call is None:
            return False
        if size > call.buffered or size < 0:
            raise LocalProtocolError(
                f"acknowledged {size} bytes on call {call_id} but only {call.buffered} are unread"
            )
        call.buffered -= size
        self._buffered_total -= size
        if not self._is_client and call.state >= _HALF_CLOSED:
            return False  # the client sends nothing more: no credit to give back
        pending = call.pending_ack + size
        if pending >= self._ack_threshold and not self._closed:
            call.recv_credit += pending
            call.pending_ack = 0
            self._out.append(encode_window_update(call_id, pending))
            return True
        call.pending_ack = pending
        return False

    def ping(self, data: bytes = bytes(8)) -> None:
        """Send a PING with eight opaque bytes; the peer answers with a PONG (`PongReceived`)."""
        self._check_open()
        if len(data) != 8:
            raise ValueError("PING data must be exactly 8 bytes")
        self._out.append(encode_ping(data))

    def close(self, code: CloseCode = CloseCode.NO_ERROR, reason: str = "") -> None:
        """Queue a CLOSE frame and end every call; reports `ConnectionClosed(by_peer=False)`.

        Send `data_to_send()`, then close the transport. Closing twice does nothing.
        """
        if self._closed:
            return
        self._out.append(encode_close(code, reason))
        self._shut(code, reason, by_peer=False)

    # ------------------------------------------------------------------ server API

    def set_deadline(self, call_id: int, deadline: float) -> None:
        """Server: give `call_id` a deadline of its own (on the clock passed as `now`).

        For a call the client opened without a timeout, e.g. to apply the
        route's default timeout. When `deadline` passes the call ends exactly
        as if the client had sent that timeout: END_CALL DEADLINE_EXCEEDED to
        the peer and a `CallCancelled` event here. Only ever moves a deadline
        earlier; does nothing for a call that is not open. `get_timer()` may
        move earlier: re-arm the connection's timer.
        """
        if self._is_client:
            raise LocalProtocolError("only a server sets a deadline of its own")
        call = self._calls.get(call_id)
        if call is None or (call.deadline is not None and call.deadline <= deadline):
            return
        call.deadline = deadline
        self._push_deadline(deadline, call_id)

    def send_headers(self, call_id: int, metadata: MetadataInput) -> None:
        """Server: send the response headers of `call_id` (at most once, before any message).

        Optional: a call whose first server frame is a MESSAGE or END_CALL has
        empty response headers.
        """
        call = self._server_call(call_id)
        if call is None:
            return
        state = self._transition(call, _S_HEADERS, call_id, local=True)
        frame = encode_headers(call_id, metadata)
        if len(frame) - HEADER_SIZE > self.peer_settings.max_metadata_size:
            raise LimitExceededError(
                f"headers of {len(frame) - HEADER_SIZE} bytes exceed the peer's "
                f"max_metadata_size ({self.peer_settings.max_metadata_size})"
            )
        call.state = state
        self._out.append(frame)

    def end_call(
        self,
        call_id: int,
        status: StatusCode = StatusCode.OK,
        message: str = "",
        details: bytes = b"",
        trailers: MetadataInput = (),
    ) -> None:
        """Server: end `call_id` with a status (gRPC's codes), message, details and trailers.

        `details` is opaque here (the runtime packs `google.rpc.Status` details
        into it). The call is forgotten. Ending an already ended call (cancelled
        by the client, deadline passed) does nothing. Raises `LimitExceededError`
        (the call stays open, so it can be ended again with a shorter status)
        when the trailers exceed the peer's max_metadata_size or the whole
        frame its max_frame_size.
        """
        call = self._calls.get(call_id)
        if call is None or self._is_client:
            call = self._server_call(call_id)
            if call is None:
                return
        if TRANSITIONS[call.state][_S_END] < 0:
            self._transition(call, _S_END, call_id, local=True)
        if status == 0 and not message and not details and not trailers:
            frame = encode_end_call_ok(call_id)
        else:
            if trailers:
                size = len(encode_metadata(trailers))
                if size > self.peer_settings.max_metadata_size:
                    raise LimitExceededError(
                        f"trailers of {size} bytes exceed the peer's max_metadata_size "
                        f"({self.peer_settings.max_metadata_size})"
                    )
            frame = encode_end_call(call_id, status, message, details, trailers)
            # A long status message or large details would make the peer close
            # the whole connection (FRAME_TOO_LARGE), failing every other call.
            if len(frame) - HEADER_SIZE > self.peer_settings.max_frame_size:
                raise LimitExceededError(
                    f"END_CALL of {len(frame) - HEADER_SIZE} bytes (status message, details "
                    f"and trailers) exceeds the peer's max_frame_size "
                    f"({self.peer_settings.max_frame_size})"
                )
        del self._calls[call_id]
        if call.buffered:
            self._buffered_total -= call.buffered
        self._out.append(frame)

    def send_final_message(self, call_id: int, data: bytes) -> None:
        """Server: send `data` as the last message of `call_id` and end it with OK, no trailers.

        One compact MESSAGE frame (END_CALL flag, §3.4) when the client accepts
        it, else MESSAGE then END_CALL. The call is forgotten. Raises like
        `send_message` (`LimitExceededError` for a message over the client's
        max_message_size, `FlowControlBlockedError` without credit); sending on
        a call that already ended does nothing.
        """
        call = self._calls.get(call_id)
        if call is None or self._is_client:
            call = self._server_call(call_id)
            if call is None:
                return
        if not self.peer_settings.compact_calls:
            self.send_message(call_id, data)
            self.end_call(call_id)
            return
        state = TRANSITIONS[call.state][_S_MSG]
        if state < 0 or TRANSITIONS[state][_S_END] < 0:
            self._transition(call, _S_MSG, call_id, local=True)
            self._transition(call, _S_END, call_id, local=True)
        size = len(data)
        self._check_message(call_id, call, size)
        self._forget(call_id, call)
        out = self._out
        out.append(_MESSAGE_HEADER_PACK(size, _MESSAGE, FLAG_END_CALL, call_id))
        out.append(data)

    def send_push(self, push: PreparedPush) -> None:
        """Server: queue `push` for the client (it arrives as `PushReceived`).

        The frame is the push's own (`PreparedPush.frame`, built once for a
        fan-out). Pushes are not flow-controlled per call: a client that stops
        reading back-pressures the transport itself.
        """
        self._check_server_ready()
        size = len(push.payload)
        if size > self.peer_settings.max_message_size:
            raise LimitExceededError(
                f"push of {size} bytes exceeds the peer's max_message_size "
                f"({self.peer_settings.max_message_size})"
            )
        self._out.append(push.frame)
        self.pushes_sent += 1

    def go_away(self, reason: str = "") -> int:
        """Server: start draining: calls started so far complete, later ones are refused.

        Returns the last accepted call id (announced in GOAWAY). Calls above it
        are refused with UNAVAILABLE; once `open_calls` reaches 0, `close()`.
        Calling it again re-announces nothing and returns the same id.
        """
        self._check_server_ready()
        if self._goaway_last is None:
            self._goaway_last = self._last_call_id
            self._out.append(encode_goaway(self._last_call_id, reason))
        return self._goaway_last

    # ------------------------------------------------------------------ receiving

    def _parse(self, data: bytes, now: float) -> None:
        """Handle every complete frame in `data`; keep or skip the incomplete tail."""
        pos = 0
        end = len(data)
        unpack = HEADER.unpack_from
        calls = self._calls
        events = self._events
        handlers = self._handlers
        is_client = self._is_client
        max_message_size = self._max_message_size
        max_buffered_input = self.config.max_buffered_input
        while end - pos >= HEADER_SIZE:
            length, frame_type, flags, call_id = unpack(data, pos)
            start = pos + HEADER_SIZE
            stop = start + length
            if frame_type == _MESSAGE:
                # The hot path, inline: state check, flow control, one event.
                if length > max_message_size:
                    self._message_too_large(call_id, length)
                    if self._closed:
                        return
                    if stop > end:
                        self._skip = stop - end
                        return
                    pos = stop
                    continue
                if stop > end:
                    break
                call = calls.get(call_id)
                if call is None:
                    self._check_ignorable(call_id, "MESSAGE")
                    pos = stop
                    continue
                if is_client:
                    if self.version is None:
                        raise RemoteProtocolError("MESSAGE before HELLO")
                    call_input = _S_MSG
                    end_stream = False
                else:
                    end_stream = bool(flags & FLAG_END_STREAM)
                    call_input = _C_END if end_stream else _C_MSG
                state = TRANSITIONS[call.state][call_input]
                if state < 0:
                    self._transition(call, call_input, call_id, local=False)
                if call.recv_credit <= 0:
                    self._fail(
                        CloseCode.FLOW_CONTROL_ERROR,
                        f"MESSAGE on call {call_id} without flow-control credit",
                    )
                    return
                call.state = state
                call.recv_credit -= length
                call.buffered += length
                self._buffered_total += length
                if self._buffered_total > max_buffered_input:
                    self._fail_call(
                        call_id,
                        call,
                        f"connection receive buffer full (max_buffered_input {max_buffered_input}"
                        " bytes)",
                    )
                elif flags & FLAG_END_CALL and is_client:
                    # The compact end (§3.4): the call ended OK with this message.
                    if TRANSITIONS[state][_S_END] < 0:
                        self._transition(call, _S_END, call_id, local=False)
                    self._forget(call_id, call)
                    events.append(CallEnded(call_id, _OK, "", b"", (), False, data[start:stop]))
                else:
                    events.append(MessageReceived(call_id, data[start:stop], end_stream))
                pos = stop
                continue
            if frame_type == _PUSH:
                if length > max_message_size:
                    self._fail(
                        CloseCode.FRAME_TOO_LARGE,
                        f"PUSH of {length} bytes exceeds max_message_size {max_message_size}",
                    )
                    return
            elif length > self._max_frame_size:
                self._fail(
                    CloseCode.FRAME_TOO_LARGE,
                    f"frame of {length} bytes exceeds max_frame_size {self._max_frame_size}",
                )
                return
            if stop > end:
                break
            handler = handlers[frame_type]
            if handler is None:
                raise RemoteProtocolError(f"unknown frame type 0x{frame_type:02x}")
            if flags & FLAG_END_STREAM and frame_type == _CALL_START and not is_client:
                self._on_call_start(data, start, stop, call_id, now, with_message=True)
            else:
                handler(self, data, start, stop, call_id, now)
            if self._closed:
                return
            pos = stop
        if pos < end:
            self._buffer = bytearray(data[pos:])
            if end - pos >= HEADER_SIZE:
                self._needed = HEADER_SIZE + HEADER.unpack_from(data, pos)[0]
            else:
                self._needed = HEADER_SIZE

    def _require_established(self, what: str) -> None:
        if self.version is None:
            raise RemoteProtocolError(f"{what} before HELLO")

    def _on_hello(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        if self.version is not None:
            raise RemoteProtocolError("duplicate HELLO")
        min_version, max_version, pairs = decode_hello_payload(data, start, stop)
        if not min_version <= PROTOCOL_VERSION <= max_version:
            reason = (
                f"unsupported protocol version {min_version}..{max_version}; "
                f"this endpoint speaks {PROTOCOL_VERSION}..{PROTOCOL_VERSION}"
            )
            self._fail(CloseCode.UNSUPPORTED_VERSION, reason)
            return
        if self._is_client and min_version != max_version:
            raise RemoteProtocolError("the server's HELLO must name exactly one version")
        peer = _PEER_SETTINGS.get(pairs)
        if peer is None:
            peer = _settings_from_pairs(pairs)
            # Peers almost always announce identical settings: share one
            # object (and its ints) across connections; bounded, so a peer
            # varying its settings cannot grow the cache.
            if len(_PEER_SETTINGS) < 64:
                _PEER_SETTINGS[pairs] = peer
        old_window = self.peer_settings.initial_window_size
        self.peer_settings = peer
        self.version = PROTOCOL_VERSION
        self._hello_deadline = None
        if self._is_client:
            # Calls pipelined before this HELLO assumed the minimum window (§6).
            delta = peer.initial_window_size - old_window
            if delta:
                for call in self._calls.values():
                    call.send_credit += delta
        else:
            self._out.append(
                encode_hello(PROTOCOL_VERSION, PROTOCOL_VERSION, _settings_pairs(self.settings))
            )
        self._events.append(HandshakeCompleted(PROTOCOL_VERSION, peer))

    def _on_call_start(
        self,
        data: bytes,
        start: int,
        stop: int,
        call_id: int,
        now: float,
        *,
        with_message: bool = False,
    ) -> None:
        if self.version is None:
            raise RemoteProtocolError("CALL_START before HELLO")
        if call_id <= self._last_call_id:
            raise RemoteProtocolError(
                f"CALL_START call id {call_id} does not exceed the previous {self._last_call_id}"
            )
        message_start = stop
        metadata: MetadataPairs
        if with_message:
            # The compact call start (§3.2): the request follows the metadata block.
            wire_id, timeout_us, metadata, message_start = decode_compact_call_start_payload(
                data, start, stop
            )
        else:
            wire_id, timeout_us, metadata = decode_call_start_payload(data, start, stop)
        self._last_call_id = call_id
        metadata_size = message_start - start - 12
        if metadata_size > self.settings.max_metadata_size:
            self._refuse(
                call_id,
                StatusCode.RESOURCE_EXHAUSTED,
                f"request metadata of {metadata_size} bytes exceeds max_metadata_size "
                f"{self.settings.max_metadata_size}",
            )
            return
        if self._goaway_last is not None and call_id > self._goaway_last:
            self._refuse(call_id, StatusCode.UNAVAILABLE, "the server is going away")
            return
        if len(self._calls) >= self.settings.max_concurrent_calls:
            self._refuse(
                call_id,
                StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent calls (max_concurrent_calls "
                f"{self.settings.max_concurrent_calls})",
            )
            return
        timeout: float | None = None
        deadline: float | None = None
        if timeout_us:
            timeout = timeout_us / 1_000_000
            deadline = now + timeout
        call = _Call(self.peer_settings.initial_window_size, self._initial_window, deadline)
        self._calls[call_id] = call
        if deadline is not None:
            self._push_deadline(deadline, call_id)
        if not with_message:
            self._events.append(CallStarted(call_id, wire_id, metadata, timeout, deadline))
            return
        # The compact call start (§3.2): one event carries the call and its request.
        size = stop - message_start
        if size > self._max_message_size:
            self._events.append(CallStarted(call_id, wire_id, metadata, timeout, deadline))
            self._message_too_large(call_id, size)
            return
        call.state = _HALF_CLOSED
        call.recv_credit -= size
        call.buffered = size
        self._buffered_total += size
        if self._buffered_total > self.config.max_buffered_input:
            self._events.append(CallStarted(call_id, wire_id, metadata, timeout, deadline))
            self._fail_call(
                call_id,
                call,
                "connection receive buffer full (max_buffered_input "
                f"{self.config.max_buffered_input} bytes)",
            )
            return
        self._events.append(
            CallStarted(call_id, wire_id, metadata, timeout, deadline, data[message_start:stop])
        )

    def _on_headers(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        self._require_established("HEADERS")
        call = self._calls.get(call_id)
        if call is None:
            self._check_ignorable(call_id, "HEADERS")
            return
        state = self._transition(call, _S_HEADERS, call_id, local=False)
        metadata = decode_metadata(data, start, stop)
        if stop - start > self.settings.max_metadata_size:
            self._fail_call(
                call_id,
                call,
                f"response headers of {stop - start} bytes exceed max_metadata_size "
                f"{self.settings.max_metadata_size}",
            )
            return
        call.state = state
        self._events.append(HeadersReceived(call_id, metadata))

    def _on_half_close(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        if stop != start:
            raise RemoteProtocolError("HALF_CLOSE payload must be empty")
        call = self._calls.get(call_id)
        if call is None:
            self._check_ignorable(call_id, "HALF_CLOSE")
            return
        call.state = self._transition(call, _C_HALF, call_id, local=False)
        self._events.append(StreamEnded(call_id))

    def _on_end_call(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        if self.version is None:
            raise RemoteProtocolError("END_CALL before HELLO")
        trailers: MetadataPairs
        if stop - start == 4 and data[start + 1 : stop] == b"\x00\x00\x00":
            status, message, details, trailers, trailers_size = data[start], "", b"", (), 1
        else:
            status, message, details, trailers, trailers_size = decode_end_call(data, start, stop)
        call = self._calls.get(call_id)
        if call is None:
            self._check_ignorable(call_id, "END_CALL")
            return
        if TRANSITIONS[call.state][_S_END] < 0:
            self._transition(call, _S_END, call_id, local=False)
        del self._calls[call_id]
        if call.buffered:
            self._buffered_total -= call.buffered
        if trailers_size > self.settings.max_metadata_size:
            self._events.append(
                CallEnded(
                    call_id,
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"trailers exceed max_metadata_size {self.settings.max_metadata_size}",
                    local=True,
                )
            )
            return
        if status == 0 and not trailers and not message and not details:
            self._events.append(CallEnded(call_id, _OK))
        else:
            self._events.append(CallEnded(call_id, _status(status), message, details, trailers))

    def _on_cancel(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        code, reason = decode_code_reason_payload(data, start, stop, "CANCEL")
        call = self._calls.get(call_id)
        if call is None:
            self._check_ignorable(call_id, "CANCEL")
            return
        self._transition(call, _C_CANCEL, call_id, local=False)
        self._forget(call_id, call)
        self._events.append(CallCancelled(call_id, _status(code), reason))

    def _on_window_update(
        self, data: bytes, start: int, stop: int, call_id: int, now: float
    ) -> None:
        self._require_established("WINDOW_UPDATE")
        increment = decode_window_update_payload(data, start, stop)
        if call_id == 0:
            raise RemoteProtocolError("WINDOW_UPDATE on call id 0")
        call = self._calls.get(call_id)
        if call is None:
            self._check_ignorable(call_id, "WINDOW_UPDATE")
            return
        call.send_credit += increment
        if call.send_credit > _MAX_WINDOW:
            self._fail(
                CloseCode.FLOW_CONTROL_ERROR, f"send credit of call {call_id} exceeds 2**31-1"
            )
            return
        self._events.append(WindowUpdated(call_id, call.send_credit))

    def _on_push(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        self._require_established("PUSH")
        self._events.append(PushReceived(call_id, data[start:stop]))

    def _on_ping(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        self._require_established("PING")
        payload = decode_ping_payload(data, start, stop)
        self._out.append(encode_pong(payload))
        self._events.append(PingReceived(payload))

    def _on_pong(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        self._require_established("PONG")
        self._events.append(PongReceived(decode_ping_payload(data, start, stop)))

    def _on_goaway(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        self._require_established("GOAWAY")
        last_call_id, reason = decode_goaway_payload(data, start, stop)
        if self._goaway_last is not None and last_call_id > self._goaway_last:
            raise RemoteProtocolError("a later GOAWAY must not raise last_call_id")
        self._goaway_last = last_call_id
        for excluded in [call_id for call_id in self._calls if call_id > last_call_id]:
            self._forget(excluded, self._calls[excluded])
            self._events.append(
                CallEnded(
                    excluded,
                    StatusCode.UNAVAILABLE,
                    "the server is going away; the call was not processed",
                    local=True,
                )
            )
        self._events.append(GoAwayReceived(last_call_id, reason))

    def _on_close(self, data: bytes, start: int, stop: int, call_id: int, now: float) -> None:
        code, reason = decode_close_payload(data, start, stop)
        try:
            close_code = CloseCode(code)
        except ValueError:
            close_code = CloseCode.PROTOCOL_ERROR
            reason = f"unknown close code {code}: {reason}"
        self._shut(close_code, reason, by_peer=True)

    # ------------------------------------------------------------------ helpers

    def _transition(self, call: _Call, call_input: int, call_id: int, *, local: bool) -> int:
        """The next state of `call`, or the right protocol error if the table forbids the step."""
        state = TRANSITIONS[call.state][call_input]
        if state < 0:
            message = (
                f"{CallInput(call_input).name} is not allowed on call {call_id} "
                f"in state {CallState(call.state).name}"
            )
            if local:
                raise LocalProtocolError(message)
            raise RemoteProtocolError(message)
        return state

    def _check_ignorable(self, call_id: int, what: str) -> None:
        # A frame for a call that ended here may cross the peer's own end of it
        # on the wire (§5): ignore it. A call that never existed is a bug.
        if call_id == 0 or call_id > self._last_call_id:
            raise RemoteProtocolError(f"{what} for call {call_id}, which was never started")

    def _check_known_call(self, call_id: int) -> None:
        self._check_open()
        if call_id <= 0 or call_id > self._last_call_id:
            raise LocalProtocolError(f"call {call_id} was never started")

    def _sendable_call(self, call_id: int) -> _Call | None:
        call = self._calls.get(call_id)
        if call is None:
            self._check_known_call(call_id)
        return call

    def _server_call(self, call_id: int) -> _Call | None:
        if self._is_client:
            raise LocalProtocolError("only the server sends headers and ends calls")
        return self._sendable_call(call_id)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError("the Flare connection is closed")

    def _check_server_ready(self) -> None:
        self._check_open()
        if self._is_client:
            raise LocalProtocolError("only the server pushes and goes away")
        if self.version is None:
            raise LocalProtocolError("the handshake has not completed")

    def _push_deadline(self, deadline: float, call_id: int) -> None:
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, call_id))
        # Calls that end before their deadline leave entries behind; rebuild
        # when they dominate so the heap stays proportional to open calls.
        if len(deadlines) > 2 * len(self._calls) + 64:
            calls = self._calls
            live = [
                (call.deadline, live_id)
                for live_id, call in calls.items()
                if call.deadline is not None
            ]
            heapq.heapify(live)
            self._deadlines = live

    def _check_message(self, call_id: int, call: _Call, size: int) -> None:
        """Raise unless a message of `size` bytes may be sent on `call` now (limit, credit)."""
        if size > self.peer_settings.max_message_size:
            raise LimitExceededError(
                f"message of {size} bytes exceeds the peer's max_message_size "
                f"({self.peer_settings.max_message_size})"
            )
        if call.send_credit <= 0:
            raise FlowControlBlockedError(
                f"call {call_id} has no send credit; wait for WindowUpdated"
            )

    def _forget(self, call_id: int, call: _Call) -> None:
        del self._calls[call_id]
        self._buffered_total -= call.buffered

    def _refuse(self, call_id: int, code: StatusCode, message: str) -> None:
        # A refused call never becomes a CallStarted; later frames for it are
        # ignored because its id is not above `last_call_id`.
        self._out.append(encode_end_call(call_id, code, message))

    def _fail_call(self, call_id: int, call: _Call, message: str) -> None:
        """End one call with RESOURCE_EXHAUSTED because the peer broke a call-level limit."""
        self._forget(call_id, call)
        if self._is_client:
            self._out.append(encode_cancel(call_id, StatusCode.RESOURCE_EXHAUSTED, message))
            self._events.append(
                CallEnded(call_id, StatusCode.RESOURCE_EXHAUSTED, message, local=True)
            )
        else:
            self._out.append(encode_end_call(call_id, StatusCode.RESOURCE_EXHAUSTED, message))
            self._events.append(CallCancelled(call_id, StatusCode.RESOURCE_EXHAUSTED, message))

    def _message_too_large(self, call_id: int, length: int) -> None:
        """A MESSAGE over max_message_size: fail its call; the caller skips the payload."""
        call = self._calls.get(call_id)
        if call is None:
            self._check_ignorable(call_id, "MESSAGE")
            return
        self._fail_call(
            call_id,
            call,
            f"message of {length} bytes exceeds max_message_size {self._max_message_size}",
        )

    def _fail(self, code: CloseCode, reason: str) -> None:
        """The peer broke the rules: queue CLOSE and report it (§8)."""
        self._out.append(encode_close(code, reason))
        self._shut(code, reason, by_peer=False)

    def _shut(self, code: CloseCode, reason: str, *, by_peer: bool) -> None:
        self._closed = True
        self._calls.clear()
        self._deadlines.clear()
        self._buffer = None
        self._buffered_total = 0
        self._events.append(ConnectionClosed(code, reason, by_peer))


_PEER_SETTINGS: dict[tuple[tuple[int, int], ...], Settings] = {}


def _settings_pairs(settings: Settings) -> tuple[tuple[int, int], ...]:
    return (
        (SettingId.MAX_FRAME_SIZE, settings.max_frame_size),
        (SettingId.MAX_MESSAGE_SIZE, settings.max_message_size),
        (SettingId.MAX_CONCURRENT_CALLS, settings.max_concurrent_calls),
        (SettingId.INITIAL_WINDOW_SIZE, settings.initial_window_size),
        (SettingId.MAX_METADATA_SIZE, settings.max_metadata_size),
        (SettingId.COMPACT_CALLS, int(settings.compact_calls)),
    )


def _settings_from_pairs(pairs: tuple[tuple[int, int], ...]) -> Settings:
    """Build the peer's Settings from HELLO pairs; unknown ids are ignored (§4).

    Raises `RemoteProtocolError` for a value outside its range (the table of
    docs/wire-format.md §4) and for a known setting announced twice: which of
    the two the peer means is ambiguous, so neither is picked.
    """
    resolved = {int(key): value for key, value in _settings_pairs(Settings())}
    resolved[SettingId.COMPACT_CALLS] = 0  # only a peer that announces it accepts them
    seen: set[int] = set()
    for setting_id, value in pairs:
        if setting_id in resolved:
            if setting_id in seen:
                raise RemoteProtocolError(f"{SettingId(setting_id).name} announced twice")
            seen.add(setting_id)
            resolved[setting_id] = value
    window = resolved[SettingId.INITIAL_WINDOW_SIZE]
    if not MIN_INITIAL_WINDOW_SIZE <= window <= _MAX_WINDOW:
        raise RemoteProtocolError(f"INITIAL_WINDOW_SIZE {window} out of range")
    if resolved[SettingId.MAX_FRAME_SIZE] < MIN_MAX_FRAME_SIZE:
        raise RemoteProtocolError("MAX_FRAME_SIZE below the minimum 16384")
    for setting_id in (
        SettingId.MAX_MESSAGE_SIZE,
        SettingId.MAX_CONCURRENT_CALLS,
        SettingId.MAX_METADATA_SIZE,
    ):
        if resolved[setting_id] == 0:
            raise RemoteProtocolError(f"{setting_id.name} must not be 0")
    compact_calls = resolved[SettingId.COMPACT_CALLS]
    if compact_calls > 1:
        raise RemoteProtocolError(f"COMPACT_CALLS {compact_calls} out of range (0 or 1)")
    return Settings(
        max_frame_size=resolved[SettingId.MAX_FRAME_SIZE],
        max_message_size=resolved[SettingId.MAX_MESSAGE_SIZE],
        max_concurrent_calls=resolved[SettingId.MAX_CONCURRENT_CALLS],
        initial_window_size=resolved[SettingId.INITIAL_WINDOW_SIZE],
        max_metadata_size=resolved[SettingId.MAX_METADATA_SIZE],
        compact_calls=compact_calls == 1,
    )


def _wrong_side(frame_type: FrameType, sender: str) -> _FrameHandler:
    def handler(connection: Connection, *frame: object) -> None:
        raise RemoteProtocolError(f"a {sender} must not send {frame_type.name}")

    return handler


def _handler_table(*, for_client: bool) -> tuple[_FrameHandler | None, ...]:
    """Frame handlers by type byte for one role (shared by every connection of that role)."""
    # One slot per possible type byte, so lookup needs no bounds check.
    table: list[_FrameHandler | None] = [None] * 256
    table[FrameType.HELLO] = Connection._on_hello
    table[FrameType.WINDOW_UPDATE] = Connection._on_window_update
    table[FrameType.PING] = Connection._on_ping
    table[FrameType.PONG] = Connection._on_pong
    table[FrameType.CLOSE] = Connection._on_close
    if for_client:
        table[FrameType.HEADERS] = Connection._on_headers
        table[FrameType.END_CALL] = Connection._on_end_call
        table[FrameType.PUSH] = Connection._on_push
        table[FrameType.GOAWAY] = Connection._on_goaway
        wrong_side: tuple[FrameType, ...] = (
            FrameType.CALL_START,
            FrameType.HALF_CLOSE,
            FrameType.CANCEL,
        )
    else:
        table[FrameType.CALL_START] = Connection._on_call_start
        table[FrameType.HALF_CLOSE] = Connection._on_half_close
        table[FrameType.CANCEL] = Connection._on_cancel
        wrong_side = (FrameType.HEADERS, FrameType.END_CALL, FrameType.PUSH, FrameType.GOAWAY)
    for frame_type in wrong_side:
        table[frame_type] = _wrong_side(frame_type, "server" if for_client else "client")
    return tuple(table)


_CLIENT_HANDLERS: Final = _handler_table(for_client=True)
_SERVER_HANDLERS: Final = _handler_table(for_client=False)
