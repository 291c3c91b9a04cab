"""Where the IM core sends a device's events: the `EventSink` protocol.

An event fanned out to many devices is one `PreparedPush` (the runtime's
"encode once, write to many"): its payload is serialized once, and its wire
frame is built at most once, on first use, then the same bytes are queued on
every connection.

Sinks: `ConnectionSink` (in `flare_runtime.im.service`) sends events as
server pushes on a WebSocket/QUIC connection; `QueueSink` is the in-process
sink behind `ImService.Subscribe` streams (gRPC has no pushes) and behind
tests of the core that run without sockets.

Every sink is bounded by the core's limit: `offer` refuses an event while the
device's backlog is over `ImLimits.outbound_buffer_bytes`, and the core then
disconnects that device as a slow consumer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from flare_runtime.errors import ConnectionClosedError
from flare_runtime.server_connection import PreparedPush


class EventSink(Protocol):
    """What the core needs from a device's connection."""

    def offer(self, event: PreparedPush, limit: int) -> bool:
        """Queue `event` unless more than `limit` bytes are already queued; never blocks.

        Returns False (queuing nothing) when the backlog is over `limit`.
        Raises `ConnectionClosedError` when the sink is closed.
        """

    @property
    def closed(self) -> bool:
        """True once the sink is closing or closed."""

    def close(self, reason: str = "") -> None:
        """Close the device's connection, telling it `reason`."""


class QueueSink:
    """An in-memory `EventSink` read by one consumer with `next`.

    `offer` after `close` raises `ConnectionClosedError`; the consumer
    reads what was queued before the close, then gets None.
    """

    __slots__ = ("_buffered", "_closed", "_events", "_waiter", "close_reason")

    def __init__(self) -> None:
        self._events: deque[tuple[int, bytes]] = deque()
        self._buffered = 0
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self.close_reason = ""

    def offer(self, event: PreparedPush, limit: int) -> bool:
        if self._closed:
            raise ConnectionClosedError(self.close_reason)
        if self._buffered > limit:
            return False
        self._events.append((event.type_id, event.payload))
        self._buffered += len(event.payload)
        self._wake()
        return True

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, reason: str = "") -> None:
        if not self._closed:
            self._closed = True
            self.close_reason = reason
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[tuple[int, bytes]]:
        """Every queued event, without waiting."""
        events = list(self._events)
        self._events.clear()
        self._buffered = 0
        return events

    async def next(self) -> tuple[int, bytes] | None:
        """The next event, waiting for one; None once closed and drained."""
        while not self._events:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        type_id, payload = self._events.popleft()
        self._buffered -= len(payload)
        return type_id, payload
