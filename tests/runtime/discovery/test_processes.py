"""The balancing channel against server processes: SIGKILL, graceful shutdown, on a
static list and on etcd.

Each server process logs every request id it receives before answering
(unbuffered), so the logs of killed servers still tell which calls ran where.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import flare_runtime as flare
from flare_runtime.discovery import Resolver, StaticRegistry
from flare_runtime.discovery.channel import BalancingChannel, SubchannelState
from flare_runtime.discovery.health import HealthPolicy
from flare_runtime.errors import RpcError
from flare_runtime.status import StatusCode
from flare_runtime.testing.discovery import (
    READ,
    SERVICE_NAME,
    WORK,
    DiscoveryServer,
    EtcdProcess,
    StringValue,
    received_ids,
)
from flare_runtime.testing.timing import UNIT, wait_until


async def start_servers(tmp_path: Path, count: int, **options: object) -> list[DiscoveryServer]:
    return list(
        await asyncio.gather(
            *(
                DiscoveryServer.start(f"s{i}", str(tmp_path / f"s{i}.log"), **options)  # type: ignore[arg-type]
                for i in range(count)
            )
        )
    )


@pytest.fixture
async def servers() -> AsyncIterator[list[DiscoveryServer]]:
    started: list[DiscoveryServer] = []
    try:
        yield started
    finally:
        await asyncio.gather(*(server.close() for server in started))


class Load:
    """Calls alternating READ (idempotent) and WORK (not), `concurrency` at a time, until
    stopped; each outcome recorded by request id."""

    def __init__(self, channel: flare.Channel, concurrency: int = 16, sleep: str = "0.005") -> None:
        self.channel = channel
        self.outcomes: dict[str, StringValue | RpcError] = {}
        self._stop = False
        self._sequence = 0
        self._metadata = {"x-sleep": sleep}
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(concurrency)]

    async def _work(self) -> None:
        while not self._stop:
            self._sequence += 1
            route = READ if self._sequence % 2 else WORK
            request_id = f"{'r' if route is READ else 'w'}{self._sequence}"
            try:
                self.outcomes[request_id] = await self.channel.unary_unary(
                    route, StringValue(value=request_id), timeout=5, metadata=self._metadata
                )
            except RpcError as error:
                self.outcomes[request_id] = error

    async def stop(self) -> dict[str, StringValue | RpcError]:
        self._stop = True
        await asyncio.gather(*self._workers)
        return self.outcomes


def assert_spread(results: list[StringValue], names: list[str]) -> None:
    counts = collections.Counter(r.value for r in results)
    for name in names:
        assert 800 <= counts[name] <= 1200, counts


async def spread_3000(channel: flare.Channel) -> list[StringValue]:
    results: list[StringValue] = []
    for start in range(0, 3000, 100):
        results += await asyncio.gather(
            *(
                channel.unary_unary(READ, StringValue(value=f"spread{i}"))
                for i in range(start, start + 100)
            )
        )
    return results


def check_killed(
    outcomes: dict[str, StringValue | RpcError],
    killed: DiscoveryServer,
    others: list[DiscoveryServer],
) -> None:
    """Idempotent calls all succeeded; non-idempotent ones failed only with UNAVAILABLE
    and only if they may have run on the killed server; nothing ran twice."""
    ran: collections.Counter[str] = collections.Counter()
    for server in [killed, *others]:
        ran.update(received_ids(server.log))
    twice = [request_id for request_id, times in ran.items() if times > 1 and request_id[0] == "w"]
    assert twice == []
    elsewhere = set()
    for server in others:
        elsewhere.update(received_ids(server.log))
    for request_id, outcome in outcomes.items():
        if request_id[0] == "r":
            assert isinstance(outcome, StringValue), (request_id, outcome)
        elif isinstance(outcome, RpcError):
            assert outcome.code is StatusCode.UNAVAILABLE, outcome
            assert not outcome.not_processed
            assert request_id not in elsewhere  # it was sent to the killed server only
    failures = sum(isinstance(o, RpcError) for o in outcomes.values())
    assert failures <= 16, failures  # at most the calls in flight when it died


async def test_static_list_sigkill(tmp_path: Path, servers: list[DiscoveryServer]) -> None:
    """3 listed servers; 3,000 calls spread ±20% (round robin); one SIGKILLed: it is
    ejected, idempotent calls keep succeeding, non-idempotent ones fail only if they
    may have run on it."""
    servers += await start_servers(tmp_path, 3)
    registry = StaticRegistry([s.url for s in servers])
    health = HealthPolicy(interval=0.2, timeout=0.5)
    resolver = Resolver(registry, SERVICE_NAME, policy="round_robin")
    async with flare.connect(resolver, health=health) as channel:
        assert isinstance(channel, BalancingChannel)
        await wait_until(
            lambda: all(s.state is SubchannelState.READY for s in channel.subchannels.values())
        )
        assert_spread(await spread_3000(channel), ["s0", "s1", "s2"])
        load = Load(channel)
        await asyncio.sleep(0.3)
        servers[0].kill()
        dead = channel.subchannels[f"127.0.0.1:{servers[0].port}"]
        await wait_until(lambda: dead.state is SubchannelState.EJECTED)
        settled = len(load.outcomes)
        await asyncio.sleep(0.5)
        outcomes = await load.stop()
    check_killed(outcomes, servers[0], servers[1:])
    after = list(outcomes.values())[settled:]
    assert after and all(isinstance(o, StringValue) for o in after)


async def test_etcd_sigkill_then_graceful_shutdown(
    tmp_path: Path, servers: list[DiscoveryServer], etcd: str
) -> None:
    """3 servers register in etcd; 3,000 calls spread ±20%; one SIGKILLed: its lease
    expires and it leaves the set, calls keep succeeding (idempotent ones retried);
    then one shut down gracefully under load: not one call fails."""
    prefix = f"/flare-test/{uuid.uuid4().hex}/"
    servers += await start_servers(tmp_path, 3, etcd=etcd, prefix=prefix, ttl=2)
    address = f"etcd://{etcd}/{SERVICE_NAME}?policy=round_robin&prefix={prefix}"
    async with flare.connect(address) as channel:
        assert isinstance(channel, BalancingChannel)
        await wait_until(
            lambda: (
                len(channel.subchannels) == 3
                and all(s.state is SubchannelState.READY for s in channel.subchannels.values())
            )
        )
        assert_spread(await spread_3000(channel), ["s0", "s1", "s2"])

        load = Load(channel)
        await asyncio.sleep(0.3)
        killed_at = time.monotonic()
        servers[0].kill()
        gone = f"127.0.0.1:{servers[0].port}"
        await wait_until(lambda: gone not in channel.subchannels, timeout=20 * UNIT)
        left_after = time.monotonic() - killed_at
        settled = len(load.outcomes)
        await asyncio.sleep(0.3)
        outcomes = await load.stop()
        check_killed(outcomes, servers[0], servers[1:])
        assert list(outcomes.values())[settled:]
        assert all(isinstance(o, StringValue) for o in list(outcomes.values())[settled:])
        assert 1.0 < left_after < 10 * UNIT  # the 2 s lease ran out; no sooner than a second

        load = Load(channel)
        await asyncio.sleep(0.3)
        assert await servers[1].terminate() == 0
        await wait_until(lambda: len(channel.subchannels) == 1)
        await asyncio.sleep(0.2)
        outcomes = await load.stop()
    assert [o for o in outcomes.values() if isinstance(o, RpcError)] == []


async def test_a_non_idempotent_call_is_not_sent_again_when_its_connection_dies(
    tmp_path: Path, servers: list[DiscoveryServer]
) -> None:
    """A non-idempotent call running when its server is SIGKILLed fails with UNAVAILABLE
    (it may have run) and is never sent to the other server; idempotent calls in the same
    situation are sent again there and succeed."""
    servers += await start_servers(tmp_path, 2)
    registry = StaticRegistry([s.url for s in servers])
    async with flare.connect(Resolver(registry, SERVICE_NAME, policy="round_robin")) as channel:
        assert isinstance(channel, BalancingChannel)
        await wait_until(
            lambda: all(s.state is SubchannelState.READY for s in channel.subchannels.values())
        )
        slow = {"x-sleep": "0.5"}
        works = [
            asyncio.ensure_future(
                channel.unary_unary(WORK, StringValue(value=f"w{i}"), metadata=slow)
            )
            for i in range(4)
        ]
        reads = [
            asyncio.ensure_future(
                channel.unary_unary(READ, StringValue(value=f"r{i}"), metadata=slow, timeout=10)
            )
            for i in range(4)
        ]
        await wait_until(lambda: sum(len(received_ids(s.log)) for s in servers) == 8)
        servers[0].kill()
        work_outcomes = await asyncio.gather(*works, return_exceptions=True)
        read_outcomes = await asyncio.gather(*reads, return_exceptions=True)
    on_victim = set(received_ids(servers[0].log))
    on_other = set(received_ids(servers[1].log))
    for i, outcome in enumerate(work_outcomes):
        if f"w{i}" in on_victim:
            assert isinstance(outcome, RpcError), outcome
            assert outcome.code is StatusCode.UNAVAILABLE and not outcome.not_processed
            assert f"w{i}" not in on_other  # never sent twice
        else:
            assert isinstance(outcome, StringValue)
    assert all(isinstance(outcome, StringValue) for outcome in read_outcomes)
    retried = {f"r{i}" for i in range(4)} & on_victim & on_other
    assert retried  # the reads that ran on the victim ran again on the other server


async def test_etcd_restart_keeps_the_clients_set_and_resumes_watching(
    tmp_path: Path, servers: list[DiscoveryServer], own_etcd: EtcdProcess
) -> None:
    """etcd SIGKILLed under load: the client keeps its last known endpoints (every call
    succeeds, both servers keep getting them); etcd restarted: a server registering
    afterwards reaches the client through the resumed watch and gets calls."""
    servers += await start_servers(tmp_path, 2, etcd=own_etcd.address, ttl=2)
    async with flare.connect(f"etcd://{own_etcd.address}/{SERVICE_NAME}") as channel:
        assert isinstance(channel, BalancingChannel)
        await wait_until(lambda: len(channel.subchannels) == 2)
        await own_etcd.stop()
        load = Load(channel)
        await asyncio.sleep(1.5)
        outcomes = await load.stop()
        assert outcomes and all(isinstance(o, StringValue) for o in outcomes.values())
        assert {o.value for o in outcomes.values() if isinstance(o, StringValue)} == {"s0", "s1"}
        assert len(channel.subchannels) == 2

        await own_etcd.start()
        late = await DiscoveryServer.start(
            "late", str(tmp_path / "late.log"), etcd=own_etcd.address, ttl=2
        )
        servers.append(late)
        await wait_until(
            lambda: (
                len(channel.subchannels) == 3
                and all(s.state is SubchannelState.READY for s in channel.subchannels.values())
            ),
            timeout=20 * UNIT,
        )
        answers = await asyncio.gather(
            *(channel.unary_unary(READ, StringValue(value=f"after{i}")) for i in range(60))
        )
    assert "late" in {answer.value for answer in answers}
