"""`ServerStats`: what a server counts as it serves, in plain Python numbers.

Every `Server` owns one (``server.stats``) and counts into it always: calls
by route, transport and status with their durations (`CallMeter`, one per
route and transport), connections opened and closed, Flare frame bytes and
pushes of closed connections, slow consumers cut off, failed
authentications. Nothing here formats, locks or allocates per call: a call's
end costs one `CallMeter.ended` (three integer additions and a bisection),
which is what keeps metrics on within a few percent of metrics off
(bench/RESULTS.md). Exporters read the numbers when asked:
`flare_runtime.observability.metrics` turns them into Prometheus metrics,
the admin service's ``Stats`` returns them.

Not thread-safe: counted and read on the server's event loop.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DURATION_BUCKETS",
    "CallMeter",
    "CallRecord",
    "ServerStats",
    "TransportCounts",
]

DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of the call-duration histogram's buckets; +Inf follows."""

STATUS_CODES = 17
"""gRPC's status codes, 0 (OK) to 16 (UNAUTHENTICATED)."""

_monotonic = time.monotonic
_bisect_left = bisect.bisect_left


class CallRecord(Protocol):
    """What the access log reads from a call at its end (a `CallContext` is one)."""

    @property
    def peer(self) -> str: ...

    @property
    def principal(self) -> object: ...

    @property
    def connection(self) -> object: ...


AccessLog = Callable[["CallMeter", int, float, CallRecord], None]
"""Writes one access-log line: ``(meter, code, seconds, call)``."""


class CallMeter:
    """One route on one transport: calls ended by status code, and their durations.

    A transport calls `ended` exactly once per call it started, whatever the
    outcome (a handler's status, a cancellation, the connection closing).
    """

    __slots__ = ("access_log", "codes", "counts", "route", "seconds", "transport")

    def __init__(self, route: str, transport: str) -> None:
        self.route = route
        """The route's path, ``/package.Service/Method``."""
        self.transport = transport
        """The transport's name (``websocket``, ``quic``, ``grpc``...)."""
        self.codes = [0] * STATUS_CODES
        """Calls ended, by status code (index = code number)."""
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        """Calls ended per duration bucket (not cumulative; the last is +Inf)."""
        self.seconds = 0.0
        """Sum of the durations of the calls ended."""
        self.access_log: AccessLog | None = None
        """Set when the access log is on (`ServerStats.access_log`)."""

    def ended(self, code: int, started: float, call: CallRecord) -> None:
        """Count one call that started at `started` (`time.monotonic()`) ending with `code`."""
        seconds = _monotonic() - started
        self.codes[code] += 1
        self.counts[_bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.seconds += seconds
        if self.access_log is not None:
            self.access_log(self, code, seconds, call)

    @property
    def calls(self) -> int:
        """Every call ended so far."""
        return sum(self.codes)


@dataclass(slots=True)
class TransportCounts:
    """One transport's connection counters (WebSocket, QUIC and plugins; not gRPC)."""

    opened: int = 0
    """Connections opened (every one, open or closed now)."""
    closed: int = 0
    """Connections closed."""
    bytes_received: int = 0
    """Flare frame bytes received on connections closed so far (open ones add theirs)."""
    bytes_sent: int = 0
    """Flare frame bytes sent on connections closed so far."""
    pushes: int = 0
    """Server pushes sent on connections closed so far."""


@dataclass(slots=True)
class ServerStats:
    """The counters of one `Server` (see the module docstring)."""

    meters: dict[tuple[str, str], CallMeter] = field(default_factory=dict)
    """(transport, route path) -> its `CallMeter`."""
    transports: dict[str, TransportCounts] = field(default_factory=dict)
    """Transport name -> its connection counters."""
    slow_consumers: int = 0
    """Connections aborted for holding more unsent output than ``max_unsent_output``."""
    connection_auth_failures: int = 0
    """Connections whose opening credentials were rejected."""
    call_auth_failures: int = 0
    """Calls refused UNAUTHENTICATED or PERMISSION_DENIED."""
    unknown_routes: int = 0
    """Calls to a route this server does not serve (UNIMPLEMENTED before any handler)."""
    access_log: AccessLog | None = None
    """Called at each call's end when set (`flare_runtime.observability.logs`)."""

    def meter(self, transport: str, route: str) -> CallMeter:
        """The `CallMeter` of `route` on `transport` (made on first use, then the same)."""
        key = (transport, route)
        meter = self.meters.get(key)
        if meter is None:
            meter = self.meters[key] = CallMeter(route, transport)
            meter.access_log = self.access_log
        return meter

    def set_access_log(self, access_log: AccessLog | None) -> None:
        """Turn the access log on (a writer) or off (None), for every meter."""
        self.access_log = access_log
        for meter in self.meters.values():
            meter.access_log = access_log

    def transport(self, name: str) -> TransportCounts:
        """The connection counters of transport `name`."""
        counts = self.transports.get(name)
        if counts is None:
            counts = self.transports[name] = TransportCounts()
        return counts

    def calls(self) -> Iterator[CallMeter]:
        """Every meter that has counted a call."""
        return (meter for meter in self.meters.values() if any(meter.codes))
