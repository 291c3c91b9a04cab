"""`PeerLog`: log lines a remote peer can cause, rate-limited.

A peer decides how often some log lines are written: a refused WebSocket
upgrade, a protocol error that closes its connection, failed connection
authentication, a slow consumer cut off, a handler failing on its request.
Written one per event, a hostile peer turns the server's log into its own
disk-filling channel. Every such line goes through a `PeerLog`::

    peer_log.log(logger, logging.INFO, "refused WebSocket upgrade from %s: %s", peer, why)

Per kind of line (the logger and the format string: a finite set, fixed in
code) at most `burst` lines are written per `interval` seconds; the others are
counted, and the first line written after them says how many were suppressed.
Lines the logger would drop anyway (level disabled) cost one check.

The limits come from `ServerOptions.log_burst` / `ServerOptions.log_interval`
(each `Server` owns one `PeerLog`, `Server.peer_log`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

__all__ = ["PeerLog"]

_MAX_KINDS = 256
"""Kinds tracked at once; more (a bug: kinds are format strings in code) share one bucket."""


class _Bucket:
    __slots__ = ("start", "suppressed", "written")

    def __init__(self, start: float) -> None:
        self.start = start
        self.written = 0
        self.suppressed = 0


class PeerLog:
    """Rate limits for log lines a peer can cause (see the module docstring).

    `burst` lines per kind per `interval` seconds; `clock` is injectable for
    tests. Not thread-safe: use it from the event loop.
    """

    def __init__(
        self,
        *,
        burst: int = 20,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if not interval > 0:
            raise ValueError("interval must be positive")
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Write ``logger.log(level, message % args)`` unless this kind is over its limit.

        Returns True when the line was written. `exc_info` adds a traceback.
        """
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        key = (logger.name, message)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_KINDS:
                key = ("", "")
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(now)
        if now - bucket.start >= self.interval:
            bucket.start = now
            bucket.written = 0
        if bucket.written >= self.burst:
            bucket.suppressed += 1
            return False
        bucket.written += 1
        if bucket.suppressed:
            message = f"{message} ({bucket.suppressed} similar lines suppressed)"
            bucket.suppressed = 0
        logger.log(level, message, *args, exc_info=exc_info)
        return True

    def adapter(self, logger: logging.Logger) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose every line goes through this `PeerLog`, for a library that
        takes a logger (websockets' protocol objects log one line per connection)."""
        return _RateLimitedAdapter(logger, self)


class _RateLimitedAdapter(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, logger: logging.Logger, peer_log: PeerLog) -> None:
        super().__init__(logger, {})
        self._peer_log = peer_log

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        exc_info = kwargs.get("exc_info")
        error: BaseException | None = None
        if isinstance(exc_info, BaseException):
            error = exc_info
        elif exc_info:
            error = sys.exc_info()[1]
        self._peer_log.log(self.logger, level, str(msg), *args, exc_info=error)
