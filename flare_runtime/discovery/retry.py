"""Which failed calls a balancing channel sends again, and how often it may.

Two kinds of failure, told apart by what the client knows
(`RpcError.not_processed`):

* **Not processed** -- the call never reached a handler: no endpoint could
  be connected to, the connection was closed or draining (GOAWAY) before the
  call was sent, or the server's GOAWAY excluded it. Sent again at once to
  another endpoint, whatever the route, up to `RetryPolicy.max_attempts`
  attempts in all; these cost no retry budget (the server did no work).
* **May have run** -- anything else. Sent again only when the route is
  marked ``idempotent`` in the schema, the status is one of
  `RetryPolicy.retryable_codes` (UNAVAILABLE: the connection died under the
  call), attempts are left, and the `RetryBudget` allows it; after a backoff.

No retry ever extends the call's deadline: every attempt gets what is left of
it, and a backoff that would outlast it is not waited.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

from flare_runtime.errors import ConfigurationError
from flare_runtime.status import StatusCode

__all__ = ["RetryBudget", "RetryPolicy"]


class RetryBudget:
    """Retries may add at most `ratio` of the calls of the last `window` seconds.

    Finagle's RetryBudget: each call deposits `ratio` of a retry, each retry
    withdraws one; `min_per_second` retries per second are always allowed
    (so a client making few calls can still retry one). With the default 0.1,
    retries add at most 10% load to a failing service, so retries cannot
    amplify an outage.
    """

    def __init__(
        self, ratio: float = 0.1, *, min_per_second: float = 10.0, window: float = 10.0
    ) -> None:
        if not 0 <= ratio <= 1 or min_per_second < 0 or window <= 0:
            raise ConfigurationError("RetryBudget: ratio in [0, 1], min_per_second ≥ 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for times in (self._calls, self._retries):
            while times and times[0] < horizon:
                times.popleft()

    def deposit(self, now: float | None = None) -> None:
        """Count one call (its first attempt)."""
        now = time.monotonic() if now is None else now
        self._calls.append(now)
        if len(self._calls) > 4096:
            self._trim(now)

    def try_withdraw(self, now: float | None = None) -> bool:
        """Take one retry from the budget; False when it is spent."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        allowed = self.ratio * len(self._calls) + self.min_per_second * self.window
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a balancing channel retries (see the module docstring)."""

    max_attempts: int = 3
    """Attempts per call in all, the first included (not-processed ones too)."""
    retryable_codes: frozenset[StatusCode] = frozenset({StatusCode.UNAVAILABLE})
    """Statuses after which a call that may have run is retried (idempotent routes only)."""
    initial_backoff: float = 0.01
    """Seconds before the first retry of a call that may have run; doubles per retry."""
    max_backoff: float = 0.5
    budget: RetryBudget = field(default_factory=RetryBudget)
    hedge_delay: float | None = None
    """Idempotent unary calls only: when the first attempt has not answered after this
    many seconds, send a second one to another endpoint (a withdrawal from the budget);
    the first answer wins, the other is cancelled. None: no hedging."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if self.hedge_delay is not None and self.hedge_delay < 0:
            raise ConfigurationError("hedge_delay must not be negative")

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (1-based) of a call that may have run."""
        base: float = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry - 1))
        return base * (0.5 + random.random() / 2)


NO_RETRIES = RetryPolicy(max_attempts=1)
"""A policy that sends every call once."""
