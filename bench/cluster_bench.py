"""Cluster broker benchmark: publish→deliver through `ClusterNode` vs raw redis-py pub/sub.

    python -m bench.cluster_bench                 # 2,000 latency samples, 50,000-event bursts
    python -m bench.cluster_bench --quick

Runs its own ``redis-server`` on a free port (no persistence), so nothing else
shares it. Two `ClusterNode`s run in this one process on one event loop
(uvloop), as do the raw redis-py publisher and subscriber it is compared
with, so both sides pay for publisher and receiver on the same core. Each
subscriber is an in-process callback (what the IM's per-conversation
sequencer will be); connections are left to the IM-level rows.

Phases, all in the same run:

1. **latency, same node**: ``publish`` → the local subscriber's callback (no
   broker trip; memory broker and Redis broker alike), one event at a time.
2. **latency, other node through Redis**: node A publishes, node B's callback
   receives; one at a time, p50/p99. Baseline in the same run: redis-py's
   ``Redis.publish`` → a ``PubSub.listen()`` reader.
3. **burst**: N events published back to back, until the other node has them
   all: µs and CPU µs per delivery through Redis, vs the same node, vs raw
   redis-py with a pipeline of 100 PUBLISHes per round trip and ``PubSub``
   reading. The Redis hop's cost per delivery is the difference between the
   other-node and same-node rows.

Prints one line per figure, the ratios, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._measure import latency_percentiles, run_loop, set_deadline  # noqa: E402
from flare_runtime.cluster import ClusterEvent, ClusterNode, Subscription  # noqa: E402
from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: E402
from flare_runtime.server_connection import PreparedPush  # noqa: E402
from flare_runtime.testing.cluster import RedisProcess  # noqa: E402

PAYLOAD = b"x" * 100


def _no_gap(subscription: Subscription) -> None:
    raise RuntimeError(f"unexpected gap on {subscription}")


async def latency_node(
    publisher: ClusterNode, receiver: ClusterNode, count: int, topic: str
) -> list[int]:
    """Publish one event at a time on `topic` (one per phase); ns until the callback runs."""
    loop = asyncio.get_running_loop()
    arrived: list[asyncio.Future[int]] = []

    def on_event(event: ClusterEvent) -> None:
        arrived[-1].set_result(time.perf_counter_ns())

    subscription = receiver.subscribe(topic, on_event, on_missed=_no_gap)
    await subscription.ready()
    push = PreparedPush(1, PAYLOAD)
    samples = []
    for n in range(count + count // 10):
        arrived.append(loop.create_future())
        start = time.perf_counter_ns()
        publisher.publish(topic, push)
        end = await arrived[-1]
        if n >= count // 10:  # warm-up first
            samples.append(end - start)
    subscription.close()
    return samples


async def latency_raw(url: str, count: int) -> list[int]:
    """The same with redis-py alone: ``publish`` → a ``PubSub.listen()`` reader."""
    loop = asyncio.get_running_loop()
    publisher = redis.asyncio.Redis.from_url(url)
    subscriber = redis.asyncio.Redis.from_url(url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("raw-latency")
    arrived: list[asyncio.Future[int]] = []

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                arrived[-1].set_result(time.perf_counter_ns())

    reader = loop.create_task(read())
    samples = []
    try:
        for n in range(count + count // 10):
            arrived.append(loop.create_future())
            start = time.perf_counter_ns()
            await publisher.publish("raw-latency", PAYLOAD)
            end = await arrived[-1]
            if n >= count // 10:
                samples.append(end - start)
    finally:
        reader.cancel()
        await pubsub.aclose()
        await publisher.aclose()
        await subscriber.aclose()
    return samples


def _per_delivery(count: int, started: float, cpu_started: float) -> dict[str, float]:
    return {
        "us_per_delivery": 1e6 * (time.perf_counter() - started) / count,
        "cpu_us_per_delivery": 1e6 * (time.process_time() - cpu_started) / count,
    }


async def burst_node(publisher: ClusterNode, receiver: ClusterNode, count: int) -> dict[str, float]:
    """`count` events back to back; time and CPU per delivery until all arrived."""
    done = asyncio.get_running_loop().create_future()
    received = 0

    def on_event(event: ClusterEvent) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set_result(None)

    subscription = receiver.subscribe("burst", on_event, on_missed=_no_gap)
    await subscription.ready()
    push = PreparedPush(1, PAYLOAD)
    started, cpu_started = time.perf_counter(), time.process_time()
    for n in range(count):
        publisher.publish("burst", push)
        if n % 1000 == 999:
            await asyncio.sleep(0)  # let the link write and read, as a server's loop would
    await asyncio.wait_for(done, 120)
    figures = _per_delivery(count, started, cpu_started)
    subscription.close()
    return figures


async def burst_raw(url: str, count: int, batch: int = 100) -> dict[str, float]:
    """redis-py alone: pipelines of `batch` PUBLISHes, a ``PubSub`` reader counting."""
    loop = asyncio.get_running_loop()
    publisher = redis.asyncio.Redis.from_url(url)
    subscriber = redis.asyncio.Redis.from_url(url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("raw-burst")
    done = loop.create_future()

    async def read() -> None:
        received = 0
        async for message in pubsub.listen():
            if message["type"] == "message":
                received += 1
                if received == count:
                    done.set_result(None)
                    return

    reader = loop.create_task(read())
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        for first in range(0, count, batch):
            pipe = publisher.pipeline(transaction=False)
            for _ in range(min(batch, count - first)):
                pipe.publish("raw-burst", PAYLOAD)
            await pipe.execute()
        await asyncio.wait_for(done, 120)
        return _per_delivery(count, started, cpu_started)
    finally:
        reader.cancel()
        await pubsub.aclose()
        await publisher.aclose()
        await subscriber.aclose()


async def main(latency_count: int, burst_count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisProcess(Path(directory))
        await server.start()
        try:
            return await measure(server.url, latency_count, burst_count)
        finally:
            server.kill()


async def measure(url: str, latency_count: int, burst_count: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    alone = ClusterNode()
    a, b = ClusterNode(RedisBroker(url)), ClusterNode(RedisBroker(url))
    for node in (alone, a, b):
        await node.start()
        await node.wait_up()
    try:
        results["latency_same_node_memory"] = latency_percentiles(
            await latency_node(alone, alone, latency_count, "latency-memory")
        )
        results["latency_same_node_redis"] = latency_percentiles(
            await latency_node(a, a, latency_count, "latency-same")
        )
        results["latency_other_node_redis"] = latency_percentiles(
            await latency_node(a, b, latency_count, "latency-other")
        )
        results["latency_raw_redis_py"] = latency_percentiles(await latency_raw(url, latency_count))
        results["burst_same_node"] = await burst_node(alone, alone, burst_count)
        results["burst_other_node_redis"] = await burst_node(a, b, burst_count)
        results["burst_raw_redis_py_pipeline"] = await burst_raw(url, burst_count)
        results["echoes_dropped_by_a"] = a.stats.echoes
    finally:
        for node in (alone, a, b):
            await node.close()
    return results


def report(results: dict[str, Any]) -> None:
    def line(name: str, figures: dict[str, float], keys: tuple[str, ...]) -> None:
        print(f"{name:32} " + "  ".join(f"{key} {figures[key]:8.1f}" for key in keys))

    latency_keys = ("p50_us", "p99_us")
    burst_keys = ("us_per_delivery", "cpu_us_per_delivery")
    for name in (
        "latency_same_node_memory",
        "latency_same_node_redis",
        "latency_other_node_redis",
        "latency_raw_redis_py",
    ):
        line(name, results[name], latency_keys)
    for name in ("burst_same_node", "burst_other_node_redis", "burst_raw_redis_py_pipeline"):
        line(name, results[name], burst_keys)
    ours, raw = results["latency_other_node_redis"], results["latency_raw_redis_py"]
    burst, raw_burst = results["burst_other_node_redis"], results["burst_raw_redis_py_pipeline"]
    ratios = {
        "latency_p50_other_node_vs_raw": ours["p50_us"] / raw["p50_us"],
        "latency_p99_other_node_vs_raw": ours["p99_us"] / raw["p99_us"],
        "burst_us_other_node_vs_raw": burst["us_per_delivery"] / raw_burst["us_per_delivery"],
        "burst_cpu_other_node_vs_raw": burst["cpu_us_per_delivery"]
        / raw_burst["cpu_us_per_delivery"],
    }
    hop = {
        "redis_hop_us_per_delivery": results["burst_other_node_redis"]["us_per_delivery"]
        - results["burst_same_node"]["us_per_delivery"],
        "redis_hop_cpu_us_per_delivery": results["burst_other_node_redis"]["cpu_us_per_delivery"]
        - results["burst_same_node"]["cpu_us_per_delivery"],
        "redis_hop_latency_p50_us": ours["p50_us"] - results["latency_same_node_redis"]["p50_us"],
    }
    for key, value in {**ratios, **hop}.items():
        print(f"{key:40} {value:8.2f}")
    print(json.dumps({**results, **ratios, **hop}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=50_000, help="events per burst")
    args = parser.parse_args()
    set_deadline(600)
    latency_count = 200 if args.quick else args.latency_samples
    burst_count = 5000 if args.quick else args.burst
    report(run_loop(main(latency_count, burst_count)))
