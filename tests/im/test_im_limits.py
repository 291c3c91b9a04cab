"""Per-user rate limits and request-size checks, on a controlled clock."""

from __future__ import annotations

import pytest

from flare_runtime.errors import RpcError
from flare_runtime.im import limits as limits_module
from flare_runtime.im.limits import ImLimits, RateLimit, Rates, check_count, page_size
from flare_runtime.status import StatusCode


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits_module, "time", fake)
    return fake


def allowed(limit: RateLimit, user: str, attempts: int) -> int:
    passed = 0
    for _ in range(attempts):
        try:
            limit.take(user)
            passed += 1
        except RpcError as error:
            assert error.code is StatusCode.RESOURCE_EXHAUSTED
            assert "typing rate limit: 2/s per user (burst 5)" in error.message
    return passed


def test_a_burst_passes_then_the_rate_holds_per_user(clock: Clock) -> None:
    limit = RateLimit("typing", rate=2.0, burst=5)
    assert allowed(limit, "alice", 20) == 5
    assert allowed(limit, "bob", 20) == 5  # another user has its own bucket
    clock.now += 1.0
    assert allowed(limit, "alice", 20) == 2
    clock.now += 100.0
    assert allowed(limit, "alice", 20) == 5  # never more than the burst saved up


def test_refused_attempts_cost_nothing(clock: Clock) -> None:
    limit = RateLimit("typing", rate=2.0, burst=5)
    allowed(limit, "alice", 5)
    passed = 0
    for _ in range(8):
        clock.now += 0.125  # a quarter of a token each time
        passed += allowed(limit, "alice", 1)
    assert passed == 2  # one second at 2/s, however often it was tried


def test_a_refilled_bucket_is_forgotten_and_the_table_stays_bounded(clock: Clock) -> None:
    limit = RateLimit("typing", rate=2.0, burst=5)
    limit.take("alice")
    assert limit.tracked_users() == 1
    clock.now += 0.4  # 0.8 of a token back: not yet full
    assert limit.tracked_users() == 1
    clock.now += 0.2
    assert limit.tracked_users() == 0
    for index in range(10_000):
        limit.take(f"user-{index}")
        clock.now += 0.01  # each bucket refills within 0.5 s, i.e. 50 users later
    assert len(limit._buckets) <= 1024


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimit("send", rate=0, burst=5)
    with pytest.raises(ValueError, match="burst at least 1"):
        RateLimit("send", rate=1, burst=0)


def test_limits_that_would_stall_or_refuse_everything_are_refused() -> None:
    with pytest.raises(ValueError, match="fanout_batch must be at least 1"):
        ImLimits(fanout_batch=0)
    with pytest.raises(ValueError, match="rate must be positive"):
        Rates(ImLimits(typing_rate_per_second=0))


def test_request_sizes_and_pages() -> None:
    check_count(1000, "members", 1000)
    with pytest.raises(RpcError) as too_many:
        check_count(1001, "members", 1000)
    assert too_many.value.code is StatusCode.INVALID_ARGUMENT
    assert "at most 1000 members per request" in too_many.value.message
    assert page_size(0, 100, 1000) == 100
    assert page_size(7, 100, 1000) == 7
    for bad in (-1, 1001):
        with pytest.raises(RpcError) as refused:
            page_size(bad, 100, 1000)
        assert refused.value.code is StatusCode.INVALID_ARGUMENT
