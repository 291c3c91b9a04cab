"""`EndpointSet`: a listener's open endpoints, dropped as they close, drained at once."""

from __future__ import annotations

import asyncio

from flare_runtime.server import Server
from flare_runtime.testing.memory import memory_pair
from flare_runtime.testing.service import SERVICE, BytesValue, ConformanceService, Routes
from flare_runtime.wire.listener import EndpointSet

UNIT = 1.0


async def test_an_endpoint_leaves_the_set_when_it_closes() -> None:
    server = Server([(SERVICE, ConformanceService())])
    endpoints = EndpointSet()
    channel, endpoint, _ = memory_pair(server)
    assert endpoints.add(endpoint) is endpoint
    assert list(endpoints) == [endpoint]
    await channel.close()
    async with asyncio.timeout(10 * UNIT):
        await endpoint.wait_closed()
    assert len(endpoints) == 0


async def test_drain_lets_calls_in_flight_finish_on_every_endpoint_then_closes_them() -> None:
    service = ConformanceService()
    server = Server([(SERVICE, service)])
    endpoints = EndpointSet()
    pairs = [memory_pair(server) for _ in range(3)]
    for _, endpoint, _ in pairs:
        endpoints.add(endpoint)
    calls = [
        asyncio.ensure_future(
            channel.unary_unary(
                Routes.ECHO, BytesValue(value=b"%d" % i), metadata={"x-sleep": "0.2"}
            )
        )
        for i, (channel, _, _) in enumerate(pairs)
    ]
    async with asyncio.timeout(10 * UNIT):
        while service.started < 3:  # every call is in its handler
            await asyncio.sleep(0.01)
    async with asyncio.timeout(10 * UNIT):
        await endpoints.drain(grace=10 * UNIT)
    assert [reply.value for reply in await asyncio.gather(*calls)] == [b"0", b"1", b"2"]
    assert len(endpoints) == 0
    assert all(endpoint.closed for _, endpoint, _ in pairs)
