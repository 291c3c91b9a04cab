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

    Calls and retries are counted in `SLICES` slices of the window (a ring of
    counters), so a deposit is O(1) and the budget's memory does not grow
    with the call rate; an event leaves the count between ``window`` and
    ``window * (1 + 1 / SLICES)`` seconds after it happened.
    """

    SLICES = 10

    def __init__(
        self, ratio: float = 0.1, *, min_per_second: float = 10.0, window: float = 10.0
    ) -> None:
        if not 0 <= ratio <= 1 or min_per_second < 0 or window <= 0:
            raise ConfigurationError("RetryBudget: ratio in [0, 1], min_per_second ≥ 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._slice = window / self.SLICES
        self._calls = [0] * self.SLICES
        self._retries = [0] * self.SLICES
        self._current = 0
        """The number of the slice being counted into (time // slice length)."""

    def _advance(self, now: float) -> int:
        """Move to the slice of `now`, emptying the slices that left the window."""
        number = int(now // self._slice)
        passed = number - self._current
        if passed > 0:
            for step in range(1, min(passed, self.SLICES) + 1):
                index = (self._current + step) % self.SLICES
                self._calls[index] = self._retries[index] = 0
            self._current = number
        return self._current % self.SLICES

    def deposit(self, now: float | None = None) -> None:
        """Count one call (its first attempt)."""
        self._calls[self._advance(time.monotonic() if now is None else now)] += 1

    def try_withdraw(self, now: float | None = None) -> bool:
        """Take one retry from the budget; False when it is spent."""
        index = self._advance(time.monotonic() if now is None else now)
        allowed = self.ratio * sum(self._calls) + self.min_per_second * self.window
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[index] += 1
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
