"""One unit of time for every test: timeouts and waits are multiples of `UNIT`.

`UNIT` is one second times ``$FLARE_TEST_TIME_SCALE`` (default 1). A slow or
crowded machine sets e.g. ``FLARE_TEST_TIME_SCALE=3`` and every timeout,
deadline and grace period of the suite stretches alike (websockets' tests do
the same with their ``MS`` unit). A test never sleeps to wait for something:
it awaits the thing, or polls it with `wait_until`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Final

SCALE_VARIABLE: Final = "FLARE_TEST_TIME_SCALE"


def _scale() -> float:
    raw = os.environ.get(SCALE_VARIABLE, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_VARIABLE} must be a number, got {raw!r}") from None
    if not scale > 0:
        raise ValueError(f"{SCALE_VARIABLE} must be positive, got {raw!r}")
    return scale


UNIT: Final = 1.0 * _scale()
"""One second, scaled by ``$FLARE_TEST_TIME_SCALE``."""

POLL: Final = 0.005
"""How often `wait_until` looks (not scaled: looking more often costs nothing)."""


async def wait_until(condition: Callable[[], object], timeout: float = 10 * UNIT) -> None:
    """Return once ``condition()`` is true; raise `TimeoutError` after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(POLL)
