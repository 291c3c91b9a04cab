"""`RetryBudget` and `RetryPolicy`: the arithmetic, with time passed in."""

from __future__ import annotations

import tracemalloc

import pytest

from flare_runtime.discovery.retry import RetryBudget, RetryPolicy
from flare_runtime.errors import ConfigurationError


def test_budget_allows_the_ratio_of_calls() -> None:
    budget = RetryBudget(0.1, min_per_second=0, window=10)
    for _ in range(1000):
        budget.deposit(now=0.0)
    allowed = sum(budget.try_withdraw(now=0.0) for _ in range(500))
    assert allowed == 100


def test_budget_has_a_floor_for_quiet_clients() -> None:
    budget = RetryBudget(0.1, min_per_second=1, window=5)
    assert sum(budget.try_withdraw(now=0.0) for _ in range(20)) == 5


def test_budget_forgets_after_the_window() -> None:
    budget = RetryBudget(0.5, min_per_second=0, window=1)
    for _ in range(10):
        budget.deposit(now=0.0)
    assert sum(budget.try_withdraw(now=0.5) for _ in range(10)) == 5
    assert not budget.try_withdraw(now=2.0)  # the calls left the window too
    for _ in range(2):
        budget.deposit(now=2.0)
    assert budget.try_withdraw(now=2.0)


def test_budget_counts_the_calls_across_the_window() -> None:
    now, later = RetryBudget(0.1, min_per_second=0), RetryBudget(0.1, min_per_second=0)
    for i in range(1000):  # 1,000 calls over 9 s
        now.deposit(now=i * 0.009)
        later.deposit(now=i * 0.009)
    assert sum(now.try_withdraw(now=9.5) for _ in range(200)) == 100
    # At 15 s the calls of the first 5 s (or 6 s: the window's last slice) have left it.
    assert 30 <= sum(later.try_withdraw(now=15.0) for _ in range(200)) <= 45


def test_budget_memory_does_not_grow_with_the_call_rate() -> None:
    """100,000 calls in one second: the budget keeps counters, not one entry per call."""
    budget = RetryBudget()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            budget.deposit(now=i * 1e-5)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000, grown


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.3)
    assert 0.05 <= policy.backoff(1) <= 0.1
    assert 0.1 <= policy.backoff(2) <= 0.2
    assert 0.15 <= policy.backoff(5) <= 0.3


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryBudget(1.5)
