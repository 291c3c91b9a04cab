"""PeerLog: per-kind rate limits for log lines a peer can cause (explicit clock)."""

from __future__ import annotations

import logging

import pytest

from flare_runtime.peer_log import PeerLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_at_most_burst_lines_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    peer_log = PeerLog(burst=3, interval=10.0, clock=clock)
    logger = logging.getLogger("test.peer_log")
    written = [peer_log.log(logger, logging.INFO, "bad frame from %s", i) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    # Another kind has its own budget.
    assert peer_log.log(logger, logging.INFO, "auth failed for %s", "x")
    clock.now = 10.0
    assert peer_log.log(logger, logging.INFO, "bad frame from %s", 99)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "bad frame from 0",
        "bad frame from 1",
        "bad frame from 2",
        "auth failed for x",
        "bad frame from 99 (7 similar lines suppressed)",
    ]


def test_disabled_levels_cost_no_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    peer_log = PeerLog(burst=1, interval=10.0, clock=Clock())
    logger = logging.getLogger("test.peer_log.levels")
    assert not peer_log.log(logger, logging.DEBUG, "noise")
    assert peer_log.log(logger, logging.WARNING, "noise")
    assert not peer_log.log(logger, logging.WARNING, "noise")


def test_adapter_rate_limits_a_library_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    adapter = PeerLog(burst=2, interval=10.0, clock=Clock()).adapter(logging.getLogger("lib"))
    for i in range(5):
        adapter.info("connection open %d", i)
    try:
        raise ValueError("boom")
    except ValueError:
        adapter.error("handshake failed", exc_info=True)
    records = caplog.records
    assert [record.getMessage() for record in records] == [
        "connection open 0",
        "connection open 1",
        "handshake failed",
    ]
    assert records[-1].exc_info is not None


@pytest.mark.parametrize(("burst", "interval"), [(0, 1.0), (1, 0.0)])
def test_limits_must_be_positive(burst: int, interval: float) -> None:
    with pytest.raises(ValueError):
        PeerLog(burst=burst, interval=interval)
