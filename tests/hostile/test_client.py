"""Hostile or unlucky conditions on the client side (`flare_runtime.connect` channels).

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). Real
servers on 127.0.0.1, real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BytesValue, Int64Value

from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import Routes

TIMEOUT = 10.0


@pytest.fixture(params=["websocket", "quic"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    started = await start_rig(request.param)
    yield started
    await started.server.shutdown(grace=0)


async def test_pushes_consumed_by_a_callback_never_block_calls(rig: Rig) -> None:
    """Input: a client that consumes pushes only through `on_push` (it never iterates
    `pushes()`) receives 1,101 pushes -- more than ``max_pending_pushes`` (1,024) -- then
    makes a call. Outcome: every push reaches the callback and the call answers at once
    (no unread buffer fills, so the channel never stops reading)."""
    async with rig.connect() as channel:
        received: list[Message] = []
        channel.on_push(received.append)
        total = 1_101
        reply = await channel.unary_unary(Routes.PUSH_ME, Int64Value(value=total), timeout=TIMEOUT)
        assert reply.value == total
        echoed = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"after"), timeout=TIMEOUT)
        assert echoed.value == b"after"
        assert len(received) == total


async def test_pushes_reach_callbacks_and_an_open_iterator_alike(rig: Rig) -> None:
    """Input: a client with an `on_push` callback that also iterates `pushes()`; the server
    pushes 10. Outcome: both see all 10, in order (the callback path does not starve the
    iterator)."""
    async with rig.connect() as channel:
        seen_by_callback: list[Message] = []
        channel.on_push(seen_by_callback.append)
        iterated: list[Message] = []

        async def read() -> None:
            async for message in channel.pushes():
                iterated.append(message)
                if len(iterated) == 10:
                    return

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0)  # the iterator is open before the pushes arrive
        await channel.unary_unary(Routes.PUSH_ME, Int64Value(value=10), timeout=TIMEOUT)
        await asyncio.wait_for(reader, TIMEOUT)
        assert iterated == seen_by_callback
        assert len(iterated) == 10


async def test_pushes_buffered_before_a_callback_is_registered_go_to_it(rig: Rig) -> None:
    """Input: 5 pushes arrive before the client registers `on_push` or iterates. Outcome:
    they are kept, and handed to the callback when it is registered (nothing is lost and
    nothing stays buffered for a reader that never comes)."""
    async with rig.connect() as channel:
        await channel.unary_unary(Routes.PUSH_ME, Int64Value(value=5), timeout=TIMEOUT)
        received: list[Message] = []
        channel.on_push(received.append)
        assert len(received) == 5
        await channel.unary_unary(Routes.PUSH_ME, Int64Value(value=2), timeout=TIMEOUT)
        assert len(received) == 7
