"""`start_eagerly`: a handler runs inside the read callback until it first suspends."""

from __future__ import annotations

import asyncio
import contextvars
import gc

import pytest

from flare_runtime.testing.timing import UNIT
from flare_runtime.wire.eager import start_eagerly


async def test_start_eagerly_runs_to_the_first_suspension_and_hands_over_to_a_task() -> None:
    loop = asyncio.get_running_loop()
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="outside")
    steps: list[str] = []

    async def quick() -> None:
        steps.append("quick")

    assert start_eagerly(loop, quick()) is None
    assert steps == ["quick"]  # ran before start_eagerly returned

    release = loop.create_future()

    async def slow() -> None:
        marker.set("inside")
        steps.append("before")
        await release
        steps.append(f"after {marker.get()}")

    task = start_eagerly(loop, slow())
    assert task is not None and steps[-1] == "before"
    assert marker.get() == "outside"  # the handler's context is its own, as in a task
    release.set_result(None)
    await task
    assert steps[-1] == "after inside"


async def test_a_task_that_took_over_an_eager_start_can_be_cancelled() -> None:
    loop = asyncio.get_running_loop()
    cleaned: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(30 * UNIT)
        finally:
            cleaned.append(True)

    task = start_eagerly(loop, waits())
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_a_failure_in_an_eager_first_step_goes_to_the_loop_handler() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:

        async def fails() -> None:
            raise ValueError("boom")

        assert start_eagerly(loop, fails()) is None
        await asyncio.sleep(0)  # Python 3.12+: the eager task reports when collected
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert any(isinstance(context.get("exception"), ValueError) for context in reported)
