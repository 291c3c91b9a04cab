"""`BalancingChannel` over in-process servers: policies, zones, draining, retries, streams.

The servers run in the test's process on real sockets (WebSocket unless said
otherwise), announced in a `StaticRegistry`; tests/runtime/discovery/
test_processes.py runs them as processes (SIGKILL, etcd).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf.message import Message

import flare_runtime as flare
from flare_runtime.client import Connecting
from flare_runtime.discovery import HealthPolicy, Resolver, RetryBudget, RetryPolicy, announce
from flare_runtime.discovery.channel import BalancingChannel
from flare_runtime.discovery.registry import StaticRegistry
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.routing import Route
from flare_runtime.status import StatusCode
from flare_runtime.testing.discovery import (
    READ,
    SERVICE,
    SERVICE_NAME,
    TICKS,
    WORK,
    CountingService,
    StringValue,
    free_port,
)
from flare_runtime.testing.timing import UNIT, wait_until


@dataclass
class Fleet:
    """In-process servers of `CountingService`, announced in one static registry."""

    registry: StaticRegistry = field(default_factory=StaticRegistry)
    servers: list[flare.Server] = field(default_factory=list)
    services: list[CountingService] = field(default_factory=list)

    async def add(
        self, name: str, *, zone: str = "", delay: float = 0.0, transport: str = "websocket"
    ) -> flare.Server:
        service = CountingService(name, delay=delay)
        server = flare.Server([(SERVICE, service)])
        await server.start(listen={transport: "127.0.0.1:0"})
        await announce(server, self.registry, host="127.0.0.1", zone=zone)
        self.servers.append(server)
        self.services.append(service)
        return server

    def counts(self) -> dict[str, int]:
        return {s.name: sum(s.received.values()) for s in self.services}

    def connect(self, *, zone: str = "", policy: str = "p2c", **options: Any) -> Connecting:
        return flare.connect(
            Resolver(self.registry, SERVICE_NAME, zone=zone, policy=policy), **options
        )

    async def close(self) -> None:
        await asyncio.gather(*(server.shutdown(0) for server in self.servers))


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    rig = Fleet()
    try:
        yield rig
    finally:
        await rig.close()


async def calls(
    channel: flare.Channel,
    count: int,
    *,
    route: Route[StringValue, StringValue] = READ,
    concurrency: int = 32,
    **kwargs: Any,
) -> list[StringValue | BaseException]:
    """`count` calls, `concurrency` at a time; results and errors in order."""
    results: list[StringValue | BaseException] = [StringValue()] * count
    next_call = 0

    async def worker() -> None:
        nonlocal next_call
        while next_call < count:
            index = next_call
            next_call += 1
            try:
                results[index] = await channel.unary_unary(
                    route,
                    StringValue(value=f"c{index}"),
                    **kwargs,
                )
            except RpcError as error:
                results[index] = error

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def test_round_robin_spreads_evenly(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        await fleet.add(name)
    async with fleet.connect(policy="round_robin") as channel:
        results = await calls(channel, 3000)
    assert all(isinstance(r, StringValue) for r in results)
    for name, count in fleet.counts().items():
        assert 800 <= count <= 1200, (name, fleet.counts())


async def test_p2c_sends_less_to_a_slow_server_than_round_robin(fleet: Fleet) -> None:
    await fleet.add("fast1")
    await fleet.add("fast2")
    await fleet.add("slow", delay=0.02)
    shares = {}
    for policy in ("round_robin", "p2c"):
        before = fleet.counts()["slow"]
        async with fleet.connect(policy=policy) as channel:
            await calls(channel, 900, concurrency=24)
        shares[policy] = (fleet.counts()["slow"] - before) / 900
    assert shares["round_robin"] == pytest.approx(1 / 3, abs=0.05)
    assert shares["p2c"] < shares["round_robin"] / 2, shares


async def test_zone_preference_then_fallback(fleet: Fleet) -> None:
    await fleet.add("a1", zone="a")
    await fleet.add("a2", zone="a")
    near = await fleet.add("b1", zone="b")
    async with fleet.connect(zone="b") as channel:
        await calls(channel, 100)
        assert fleet.counts() == {"a1": 0, "a2": 0, "b1": 100}
        await near.shutdown(grace=5)
        results = await calls(channel, 100)
    assert all(isinstance(r, StringValue) for r in results)
    assert fleet.counts()["a1"] + fleet.counts()["a2"] == 100


async def test_graceful_shutdown_under_load_fails_nothing(fleet: Fleet) -> None:
    """Deregister, then GOAWAY: calls in flight finish, calls racing it are refused
    unprocessed and sent elsewhere; not even a non-idempotent call fails."""
    leaving = await fleet.add("leaving")
    await fleet.add("staying1")
    await fleet.add("staying2")
    async with fleet.connect() as channel:
        load = asyncio.ensure_future(
            calls(channel, 3000, route=WORK, concurrency=48, metadata={"x-sleep": "0.002"})
        )
        await wait_until(lambda: fleet.counts()["leaving"] > 100)
        await leaving.shutdown(grace=5)
        results = await load
    failed = [r for r in results if not isinstance(r, StringValue)]
    assert failed == []
    assert all(count == 1 for s in fleet.services for count in s.received.values())


async def test_a_draining_endpoint_gets_no_new_calls(fleet: Fleet) -> None:
    draining = await fleet.add("draining")
    await fleet.add("other")
    async with fleet.connect(policy="round_robin") as channel:
        slow = asyncio.ensure_future(
            calls(channel, 4, route=WORK, metadata={"x-sleep": str(0.5 * UNIT)})
        )
        await wait_until(lambda: fleet.counts()["draining"] == 2)
        shutdown = asyncio.ensure_future(draining.shutdown(grace=5))
        await asyncio.sleep(0.05)
        before = fleet.counts()["draining"]
        results = await calls(channel, 50)
        assert fleet.counts()["draining"] == before  # no new call went there
        assert all(isinstance(r, StringValue) for r in await slow)  # its calls finished
        await shutdown
    assert all(isinstance(r, StringValue) for r in results)


async def test_unreachable_endpoint_is_ejected_and_calls_go_elsewhere(fleet: Fleet) -> None:
    server = await fleet.add("up")
    dead = f"ws://127.0.0.1:{free_port()}"
    registry = StaticRegistry([dead, f"ws://127.0.0.1:{server.port('websocket')}"])
    async with flare.connect(Resolver(registry, SERVICE_NAME), open_timeout=5) as channel:
        assert isinstance(channel, BalancingChannel)
        results = await calls(channel, 200, route=WORK)
        states = {s.url: s.state.value for s in channel.subchannels.values()}
    assert all(isinstance(r, StringValue) for r in results)
    assert states[dead] in ("ejected", "connecting")


async def test_no_endpoint_reachable() -> None:
    registry = StaticRegistry([f"ws://127.0.0.1:{free_port()}"])
    with pytest.raises(ConnectionClosedError, match="no endpoint of"):
        await flare.connect(Resolver(registry, SERVICE_NAME), open_timeout=0.5)


async def test_retries_only_idempotent_calls_that_may_have_run(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        await fleet.add(name)
    policy = RetryPolicy(max_attempts=3, budget=RetryBudget(1.0))
    async with fleet.connect(retry=policy, health=HealthPolicy(eject_after=100)) as channel:
        with pytest.raises(RpcError) as failed:
            await channel.unary_unary(READ, StringValue(value="r"), metadata={"x-fail": "1"})
        assert failed.value.code is StatusCode.UNAVAILABLE
        assert sum(s.received.get("r", 0) for s in fleet.services) == 3  # 3 attempts
        with pytest.raises(RpcError):
            await channel.unary_unary(WORK, StringValue(value="w"), metadata={"x-fail": "1"})
        assert sum(s.received.get("w", 0) for s in fleet.services) == 1  # never again


async def test_retry_budget_caps_retries(fleet: Fleet) -> None:
    await fleet.add("a")
    await fleet.add("b")
    budget = RetryBudget(0.1, min_per_second=0, window=60)
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.001, budget=budget)
    async with fleet.connect(retry=policy, health=HealthPolicy(eject_after=10_000)) as channel:
        await calls(channel, 200)  # 200 deposits: 20 retries allowed
        before = sum(fleet.counts().values())
        results = await calls(channel, 50, metadata={"x-fail": "1"})
    assert all(isinstance(r, RpcError) for r in results)
    extra = sum(fleet.counts().values()) - before - 50
    assert extra <= 0.1 * 250 + 1, extra


async def test_retries_never_extend_the_deadline(fleet: Fleet) -> None:
    await fleet.add("a")
    await fleet.add("b")
    policy = RetryPolicy(max_attempts=5, budget=RetryBudget(1.0))
    async with fleet.connect(retry=policy) as channel:
        started = time.monotonic()
        with pytest.raises(RpcError) as failed:
            await channel.unary_unary(
                READ, StringValue(value="x"), timeout=0.3, metadata={"x-sleep": "1"}
            )
        took = time.monotonic() - started
    assert failed.value.code is StatusCode.DEADLINE_EXCEEDED
    assert took < 0.3 + 0.5 * UNIT


async def test_hedging_answers_from_the_fast_endpoint(fleet: Fleet) -> None:
    await fleet.add("slow", delay=1.0)
    await fleet.add("fast")
    policy = RetryPolicy(hedge_delay=0.05, budget=RetryBudget(1.0))
    async with fleet.connect(retry=policy, policy="round_robin") as channel:
        started = time.monotonic()
        answers = [
            (await channel.unary_unary(READ, StringValue(value=f"h{i}"), timeout=5)).value
            for i in range(4)
        ]
        took = time.monotonic() - started
        # Not idempotent: never hedged, so the slow server answers when picked.
        assert {
            (await channel.unary_unary(WORK, StringValue(value=f"w{i}"))).value for i in range(2)
        } == {"slow", "fast"}
    assert answers == ["fast"] * 4
    assert took < 4 * (0.05 + 0.5 * UNIT)


async def test_server_stream_stays_on_one_endpoint_and_fails_when_it_dies(fleet: Fleet) -> None:
    first = await fleet.add("first")
    second = await fleet.add("second")
    async with fleet.connect() as channel:
        stream = channel.unary_stream(TICKS, StringValue(value="t"))
        names: set[str] = set()
        stopping: list[asyncio.Task[None]] = []
        with pytest.raises(RpcError) as failed:
            async with asyncio.timeout(10 * UNIT):
                async for tick in stream:
                    if not names:  # its server goes away under it
                        server = first if tick.value == "first" else second
                        stopping.append(asyncio.ensure_future(server.shutdown(grace=0.1)))
                    names.add(tick.value)
    assert failed.value.code in (StatusCode.UNAVAILABLE, StatusCode.CANCELLED)
    assert len(names) == 1


async def test_server_stream_is_retried_before_its_first_response(fleet: Fleet) -> None:
    await fleet.add("a")
    await fleet.add("b")
    async with fleet.connect(retry=RetryPolicy(budget=RetryBudget(1.0))) as channel:
        ticks = [
            t.value
            async for t in channel.unary_stream(
                TICKS, StringValue(value="s"), metadata={"x-count": "3"}
            )
        ]
    assert len(ticks) == 3 and len(set(ticks)) == 1


async def test_grpc_endpoints(fleet: Fleet) -> None:
    for name in ("g1", "g2"):
        await fleet.add(name, transport="grpc")
    async with fleet.connect(policy="round_robin") as channel:
        results = await calls(channel, 200)
    assert all(isinstance(r, StringValue) for r in results)
    # The first calls may start while only one connection is up.
    assert min(fleet.counts().values()) >= 50, fleet.counts()


async def test_interceptors_run_once_per_call(fleet: Fleet) -> None:
    await fleet.add("a")
    seen: list[str] = []

    class Count(flare.ClientInterceptor):
        async def intercept_unary(
            self,
            request: Message,
            info: flare.ClientCallInfo,
            call_next: Callable[[Message, flare.ClientCallInfo], Awaitable[Message]],
        ) -> Message:
            seen.append(info.route.path)
            return await call_next(request, info)

    async with fleet.connect(interceptors=[Count()]) as channel:
        await channel.unary_unary(READ, StringValue(value="i"))
    assert seen == [READ.path]


async def test_no_pushes_on_a_balancing_channel(fleet: Fleet) -> None:
    await fleet.add("a")
    async with fleet.connect() as channel:
        with pytest.raises(ConfigurationError, match="reconnecting"):
            channel.pushes()


async def test_endpoints_follow_the_registry(fleet: Fleet) -> None:
    await fleet.add("a")
    async with fleet.connect() as channel:
        assert isinstance(channel, BalancingChannel)
        await fleet.add("b")
        await wait_until(lambda: len(channel.subchannels) == 2)
        await calls(channel, 100)
        assert fleet.counts()["b"] > 20
        counts = collections.Counter(s.state.value for s in channel.subchannels.values())
    assert counts == {"ready": 2}
