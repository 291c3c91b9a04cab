"""The one read of asyncio's internals (`asyncio_shim.ready_queue`) still means what it should.

If this fails after a Python upgrade, asyncio changed how the stdlib loop keeps
its ready callbacks: update flare_runtime/transports/asyncio_shim.py.
"""

from __future__ import annotations

import asyncio

import uvloop

from flare_runtime.transports.asyncio_shim import ready_queue


async def test_the_stdlib_loop_shows_its_ready_callbacks() -> None:
    loop = asyncio.get_running_loop()
    ready = ready_queue(loop)
    assert ready is not None, "the stdlib loop no longer keeps its ready callbacks in _ready"
    before = len(ready)
    handle = loop.call_soon(lambda: None)
    assert len(ready) == before + 1
    handle.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(ready) <= before


def test_a_loop_that_hides_them_is_unseen() -> None:
    loop = uvloop.new_event_loop()
    try:
        assert ready_queue(loop) is None
    finally:
        loop.close()
