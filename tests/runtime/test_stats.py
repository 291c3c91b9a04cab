"""`ServerStats`: what a real server counts, over real sockets on every transport."""

from __future__ import annotations

import asyncio

import pytest

from flare_runtime.errors import RpcError
from flare_runtime.stats import DURATION_BUCKETS, CallMeter, ServerStats
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import BytesValue, Int64Value, Routes, StringValue
from flare_runtime.testing.timing import UNIT, wait_until


def test_a_meter_counts_codes_and_durations_in_buckets() -> None:
    meter = CallMeter("/a.B/C", "websocket")
    meter.ended(StatusCode.OK, 0.0, _Call())  # started long ago: the last bucket
    meter.ended(StatusCode.NOT_FOUND, float("inf"), _Call())  # negative: the first
    assert meter.codes[0] == 1 and meter.codes[5] == 1 and meter.calls == 2
    assert meter.counts[0] == 1 and meter.counts[len(DURATION_BUCKETS)] == 1


def test_the_access_log_is_called_per_call_once_set() -> None:
    stats = ServerStats()
    early = stats.meter("quic", "/a.B/C")
    seen: list[tuple[str, int]] = []
    stats.set_access_log(lambda meter, code, seconds, call: seen.append((meter.route, code)))
    late = stats.meter("quic", "/a.B/D")
    early.ended(0, 0.0, _Call())
    late.ended(3, 0.0, _Call())
    assert seen == [("/a.B/C", 0), ("/a.B/D", 3)]


@pytest.mark.parametrize("transport", ["websocket", "quic", "grpc"])
async def test_calls_are_counted_by_route_transport_and_status(transport: str) -> None:
    rig = await start_rig(transport)
    try:
        async with rig.connect() as channel:
            for _ in range(3):
                await channel.unary_unary(Routes.ECHO, BytesValue(value=b"x"))
            with pytest.raises(RpcError):
                await channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-fail-code": "5"})
            values = [
                r.value async for r in channel.unary_stream(Routes.COUNT, Int64Value(value=2))
            ]
            assert values == [0, 1]
            echo = rig.server.stats.meters[(transport, Routes.ECHO.path)]
            count = rig.server.stats.meters[(transport, Routes.COUNT.path)]
            await wait_until(lambda: count.calls == 1, 10 * UNIT)
            assert echo.codes[StatusCode.OK] == 3
            assert echo.codes[StatusCode.NOT_FOUND] == 1
            assert sum(echo.counts) == 4 and echo.seconds > 0
            assert count.codes[StatusCode.OK] == 1
    finally:
        await rig.server.shutdown(grace=UNIT)


@pytest.mark.parametrize("transport", ["websocket", "quic"])
async def test_connections_bytes_and_cancelled_calls_are_counted(transport: str) -> None:
    rig = await start_rig(transport)
    try:
        async with rig.connect() as channel:
            await channel.unary_unary(Routes.ECHO, BytesValue(value=b"x" * 1000))
            sleeper = asyncio.ensure_future(
                channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-sleep": "30"})
            )
            await asyncio.sleep(UNIT)
            (connection,) = rig.server.connections
            info = rig.server.connections[connection]
            assert connection.connection_id == info.connection_id
            received, sent, _ = connection.traffic()
            assert received > 1000 and sent > 1000
        with pytest.raises(RpcError):
            await sleeper
        await wait_until(lambda: not rig.server.connections, 10 * UNIT)
        counts = rig.server.stats.transports[transport]
        assert counts.opened == 1 and counts.closed == 1
        assert counts.bytes_received >= received and counts.bytes_sent >= sent
        echo = rig.server.stats.meters[(transport, Routes.ECHO.path)]
        assert echo.codes[StatusCode.OK] == 1 and echo.codes[StatusCode.CANCELLED] == 1
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_failed_authentication_is_counted() -> None:
    rig = await start_rig("websocket")
    try:
        async with rig.connect(token="not-a-jwt") as channel:
            with pytest.raises(RpcError):
                await channel.unary_unary(Routes.WHO_AM_I, StringValue())
        assert rig.server.stats.connection_auth_failures == 1
        assert rig.server.stats.call_auth_failures == 1
    finally:
        await rig.server.shutdown(grace=UNIT)


class _Call:
    peer = "127.0.0.1:1"
    principal = None
    connection = None
