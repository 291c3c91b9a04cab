"""The endpoint layer's shared half: asyncio glue over the sans-I/O `protocol.Connection`.

Written once for every byte-stream transport (WebSocket, QUIC). A transport
adapter only moves bytes: it implements `WireTransport` and calls the
endpoint's `data_received` / `connection_lost` / `pause_writing` /
`resume_writing`. Everything above the bytes -- calls, streams, pushes,
keepalive, deadlines, flow control, go-away -- lives here:

* `ServerEndpoint` (`flare_runtime.wire.server`): one client connection on a
  server; runs each call through the server's `Dispatcher`.
* `ClientEndpoint` (`flare_runtime.wire.client`): the client side; `WireChannel`
  is the `Channel` on top of it. A unary call costs one future, no task.

Timers: each endpoint arms one `loop.call_at` handle from
`Connection.get_timer()` (keepalive, handshake timeout and every call
deadline share it). The handle is re-armed only when the protocol's next
deadline moves *earlier*; a handle firing early just re-arms, so an idle
connection costs one timer firing per keepalive interval and a busy one
none per message.

Output is batched: events and sends mark the endpoint dirty and one
``call_soon`` flush per loop iteration writes everything queued as one chunk
(one WebSocket message, one syscall).

Backpressure: senders wait while the call has no flow-control credit (the
peer's application is not consuming) or while the transport's write buffer is
above its high-water mark (`pause_writing`). A server also stops reading from a
client while that mark is passed (`ServerEndpoint`), so a client that never
reads cannot make it queue answers (PONGs, responses) without bound, and a
server aborts a client whose unsent output still passes
`ServerOptions.max_unsent_output` (pushes are not flow-controlled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from flare_runtime.errors import ConnectionClosedError
from flare_runtime.protocol.config import ProtocolConfig, Role
from flare_runtime.protocol.connection import Connection
from flare_runtime.protocol.events import Event
from flare_runtime.protocol.frames import CloseCode
from flare_runtime.routing import Transport

_monotonic = time.monotonic
logger = logging.getLogger("flare_runtime.endpoint")


class WireTransport(Protocol):
    """What a transport adapter offers the endpoint: a reliable, ordered byte pipe.

    An adapter whose writes travel in units of bounded size may also set
    ``max_write_size`` (an int): the endpoint then cuts its output at Flare
    frame boundaries into writes of at most that many bytes (a single larger
    frame is written alone). The WebSocket adapter does, one message per write.
    """

    peer: str
    """The remote address, ``host:port``."""

    def write(self, data: bytes) -> None:
        """Send `data` (never empty). Must not block; buffering is the adapter's."""

    def get_write_buffer_size(self) -> int:
        """Bytes accepted by `write` and not yet handed to the network."""

    def pause_reading(self) -> None:
        """Stop delivering `data_received` until `resume_reading`."""

    def resume_reading(self) -> None:
        """Deliver `data_received` again."""

    def close(self, reason: str = "") -> None:
        """Send what is buffered, then close; `connection_lost` follows."""

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""


class WireEndpoint:
    """Shared machinery of both sides: bytes in, events out, timer, batched output.

    Adapters call `data_received`, `connection_lost`, `pause_writing` and
    `resume_writing`; nothing else. The layer above (the server's calls, the
    client's `WireChannel`) uses the public methods: `flush`,
    `schedule_flush`, `rearm_timer`, `acknowledge`, `wait_writable` /
    `can_write`, `close` / `abort` / `wait_closed` and `closed`.
    """

    transport_kind: Transport = Transport.WEBSOCKET

    def __init__(
        self, transport: WireTransport, role: Role, config: ProtocolConfig, kind: Transport
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.transport_kind = kind
        self.conn = Connection(role, config, now=_monotonic())
        self._max_write_size: int | None = getattr(transport, "max_write_size", None)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._flush_scheduled = False
        self._unflushed = 0
        self._flush_batch = config.flush_batch
        self._deadline_added = False
        self._steady = False  # handshake done: the timer need not follow every input
        interval = config.keepalive_interval
        self._keepalive_interval = interval if interval is not None else float("inf")
        self._write_paused = False
        self._write_waiters: list[asyncio.Future[None]] = []
        self._credit_waiters: dict[int, asyncio.Future[None]] = {}
        self._closed = False  # the transport is gone (`connection_lost` ran)
        self._aborting = False  # `abort`: nothing more is written, not even a CLOSE
        self._closed_future: asyncio.Future[None] | None = None  # made by wait_closed
        self.received_at = 0.0
        """`time.monotonic()` when the bytes being handled arrived (calls they start
        are timed from it: one clock read per batch, not per call)."""
        self.flush()
        self.rearm_timer()

    # ------------------------------------------------------------------ adapter side

    def data_received(self, data: bytes) -> None:
        """Feed bytes from the transport (any chunking)."""
        conn = self.conn
        self.received_at = now = _monotonic()
        conn.receive_data(data, now)
        events = conn.events_received()
        if events:
            self._handle_events(events)
        self.flush()
        # Once the handshake is done, the protocol's next deadline moves
        # earlier only when a call with a deadline starts, or when input
        # answers a PING (the next keepalive is then `interval` from now,
        # before the armed PONG deadline); otherwise the armed timer fires
        # first (or early, which is harmless), so most input re-arms nothing.
        if (
            self._deadline_added
            or self._timer is None
            or not self._steady
            or self._timer_when > now + self._keepalive_interval
        ):
            self._deadline_added = False
            self._steady = conn.established
            self.rearm_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        """The transport is gone: end every call and release everything."""
        if self._closed:
            return
        self._closed = True
        if not self.conn.closed:
            self.conn.close(CloseCode.NO_ERROR, "connection lost")
            self.conn.data_to_send()  # nobody to send it to
            self._handle_events(self.conn.events_received())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_all_writers()
        self._on_lost(exc)
        if self._closed_future is not None and not self._closed_future.done():
            self._closed_future.set_result(None)

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark: senders wait."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport drained: senders continue."""
        self._write_paused = False
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ both sides

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side) or the transport is gone."""
        return self._closed or self.conn.closed

    def close(self, reason: str = "") -> None:
        """Send a Flare CLOSE (NO_ERROR, `reason`) after what is queued, then close the transport.

        Calls still open end (the peer sees the connection close); `connection_lost`
        follows once the transport is closed. Does nothing once closing or closed.
        """
        if self._closed or self._aborting:
            return
        if not self.conn.closed:
            self.conn.close(CloseCode.NO_ERROR, reason)
            self._handle_events(self.conn.events_received())
        self.flush()
        self._close_transport(reason)

    def _close_transport(self, reason: str) -> None:
        """Close the transport after what it holds (a side may bound how long that takes)."""
        self.transport.close(reason)

    def abort(self, reason: str = "") -> None:
        """Close the transport at once, dropping what is queued (nothing more is written)."""
        if self._closed:
            return
        logger.debug("aborting connection with %s: %s", self.transport.peer, reason)
        self._aborting = True
        if not self.conn.closed:
            self.conn.close(CloseCode.NO_ERROR, reason)
            self.conn.data_to_send()  # dropped with the rest of the backlog
            self._handle_events(self.conn.events_received())
        self.transport.abort()

    def acknowledge(self, call_id: int, size: int) -> None:
        """The application consumed `size` bytes of `call_id`'s messages: give the credit back.

        The protocol batches the credit; when it queues a WINDOW_UPDATE, that
        leaves with the next flush.
        """
        if self.conn.acknowledge(call_id, size):
            self.schedule_flush()

    # ------------------------------------------------------------------ output & timer

    def flush(self) -> None:
        """Write everything queued now: one write, or one per `max_write_size` chunk."""
        self._flush_scheduled = False
        self._unflushed = 0
        limit = self._max_write_size
        if limit is None:
            data = self.conn.data_to_send()
            if not data or self._closed:
                return
            self.transport.write(data)
        else:
            wrote = False
            for chunk in self.conn.data_to_send_chunks(limit):
                if self._closed:
                    return
                self.transport.write(chunk)
                wrote = True
            if not wrote:
                return
        if self._write_paused:
            self._output_backlogged()

    def schedule_flush(self) -> None:
        """Write everything queued at the end of this loop iteration (one chunk).

        Batches are capped at `ProtocolConfig.flush_batch` sends: with many
        calls in flight, the peer then starts on the first ones while we
        finish the rest, instead of both sides taking turns at whole windows.
        """
        self._unflushed += 1
        if self._unflushed >= self._flush_batch:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def rearm_timer(self) -> None:
        """Arm the connection's one timer for `Connection.get_timer()` if that is earlier.

        Call after anything that may add a deadline (a call started with a timeout).
        """
        when = self.conn.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_when <= when:
                return  # the armed timer fires first (maybe early: harmless)
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(
            self.loop.time() + max(0.0, when - _monotonic()), self._on_timer
        )

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        conn = self.conn
        conn.handle_timer(_monotonic())
        events = conn.events_received()
        if events:
            self._handle_events(events)
        self.flush()
        self.rearm_timer()

    # ------------------------------------------------------------------ backpressure

    async def wait_writable(self, call_id: int) -> None:
        """Wait until `call_id` has send credit and the transport accepts more.

        Raises `ConnectionClosedError` if the connection closes meanwhile.
        """
        while True:
            if self._closed or self.conn.closed:
                raise ConnectionClosedError("connection closed")
            if self._write_paused:
                waiter = self.loop.create_future()
                self._write_waiters.append(waiter)
                await waiter
                continue
            if self.conn.available_credit(call_id) > 0:
                return
            shared = self._credit_waiters.get(call_id)
            if shared is not None and not shared.done():
                # Another sender on the same call waits already: share its
                # wake-up (shielded, so our cancellation does not cancel theirs).
                await asyncio.shield(shared)
            else:
                waiter = self.loop.create_future()
                self._credit_waiters[call_id] = waiter
                try:
                    await waiter
                finally:
                    if self._credit_waiters.get(call_id) is waiter:
                        del self._credit_waiters[call_id]
            if self.conn.available_credit(call_id) <= 0 and not self.conn.closed:
                # Woken because the call ended: the caller sees that on send.
                return

    def can_write(self, call_id: int) -> bool:
        """True when a message may be sent on `call_id` right now without waiting."""
        return not self._write_paused and self.conn.available_credit(call_id) > 0

    def _wake_credit(self, call_id: int) -> None:
        waiter = self._credit_waiters.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_all_writers(self) -> None:
        self.resume_writing()
        for call_id in list(self._credit_waiters):
            self._wake_credit(call_id)

    # ------------------------------------------------------------------ subclass hooks

    def _handle_events(self, events: list[Event]) -> None:
        raise NotImplementedError

    def _on_lost(self, exc: BaseException | None) -> None:
        """Called once when the connection is gone."""

    def _output_backlogged(self) -> None:
        """Called after a write while the transport is above its high-water mark."""

    async def wait_output_drained(self) -> None:
        """Wait while the transport is above its high-water mark (returns at once if not,
        or once the connection closed)."""
        while self._write_paused and not self._closed:
            waiter = self.loop.create_future()
            self._write_waiters.append(waiter)
            await waiter

    async def wait_closed(self) -> None:
        """Wait until the transport has closed."""
        if self._closed:
            return
        if self._closed_future is None:
            self._closed_future = self.loop.create_future()
        await asyncio.shield(self._closed_future)
