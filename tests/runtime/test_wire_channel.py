"""`WireChannel` details the conformance suite does not reach."""

from __future__ import annotations

import asyncio

import pytest

from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import BytesValue, Routes

UNIT = 1.0


@pytest.mark.parametrize("transport", ["websocket", "quic"])
async def test_several_tasks_await_the_headers_and_one_gives_up(transport: str) -> None:
    rig = await start_rig(transport)
    try:
        async with rig.connect() as channel:
            call = channel.stream_stream(Routes.BIDI_ECHO)
            # The echo handler sends its headers with its first response.
            leaving = asyncio.ensure_future(call.initial_metadata())
            staying = [asyncio.ensure_future(call.initial_metadata()) for _ in range(2)]
            await asyncio.sleep(0.05 * UNIT)
            leaving.cancel()
            await call.send(BytesValue(value=b"h"))
            async with asyncio.timeout(10 * UNIT):
                headers = await asyncio.gather(*staying)
            assert headers[0] is headers[1]
            assert leaving.cancelled()
            async for reply in call:
                assert reply.value == b"h"
                break
            call.cancel()
    finally:
        await rig.server.shutdown(grace=UNIT)
