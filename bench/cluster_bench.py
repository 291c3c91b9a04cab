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
4. **IM send→deliver** (needs PostgreSQL: ``FLARE_IM_POSTGRES_DSN``, default
   the CI service on 127.0.0.1:55432; skipped with a note without it): two IM
   node processes (`flare_runtime.testing.im_cluster`, WebSocket, one
   PostgreSQL schema, this run's Redis) and, as the baseline in the same run,
   one IM process on the same PostgreSQL without a cluster. A sender's device
   and a recipient's device on node A, another recipient's device on node B;
   one ``Send`` at a time; p50/p99 from the call to the ``MessageReceived``
   push on each recipient (the clients run in this process, so one clock).

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

import asyncpg
import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "generated"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from flare.im.v1 import content_pb2, events_pb2, im_pb2  # noqa: E402
from flare.im.v1.im_flare import ImServiceClient  # noqa: E402

from bench._measure import latency_percentiles, run_loop, set_deadline  # noqa: E402
from flare_runtime.client import Channel, connect  # noqa: E402
from flare_runtime.cluster import ClusterEvent, ClusterNode, Subscription  # noqa: E402
from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: E402
from flare_runtime.im.service import ImService  # noqa: E402
from flare_runtime.server_connection import PreparedPush  # noqa: E402
from flare_runtime.testing.cluster import RedisProcess  # noqa: E402
from flare_runtime.testing.im_cluster import (  # noqa: E402
    POSTGRES_DSN,
    ImNodes,
    NodeProcess,
    Timing,
)

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


class _Device:
    """One logged-in IM device: a WebSocket channel whose message pushes stamp a future.

    It reads `pushes()` (a channel buffers what no iterator takes, then stops
    reading its socket: the sender's own pushes would stall its replies).
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.im = ImServiceClient(channel)
        self.waiting: dict[str, asyncio.Future[int]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for push in self.channel.pushes():
            if isinstance(push, events_pb2.MessageReceived):
                waiter = self.waiting.pop(push.message.client_message_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(time.perf_counter_ns())

    @classmethod
    async def open(cls, url: str, user: str) -> _Device:
        channel = await connect(url, token=user, push_tables=[ImService.PUSH_TYPES])
        device = cls(channel)
        await device.im.login(im_pb2.LoginRequest(device_id="bench"), timeout=30)
        return device

    async def close(self) -> None:
        await self.channel.close()
        self.reader.cancel()


async def im_latency(
    sender: _Device, recipients: dict[str, _Device], count: int
) -> dict[str, list[int]]:
    """One Send at a time; ns from the call to each recipient's push."""
    room = await sender.im.create_room(
        im_pb2.CreateRoomRequest(title="bench", member_user_ids=["same", "other"]), timeout=30
    )
    await asyncio.sleep(1.0)  # every node follows the room
    content = content_pb2.Content(text=content_pb2.TextContent(text="x" * 100))
    loop = asyncio.get_running_loop()
    samples: dict[str, list[int]] = {name: [] for name in recipients}
    samples["reply"] = []
    for n in range(count + count // 10):
        client_id = f"m{n}"
        arrived = {name: loop.create_future() for name in recipients}
        for name, device in recipients.items():
            device.waiting[client_id] = arrived[name]
        start = time.perf_counter_ns()
        await sender.im.send(
            im_pb2.SendRequest(
                conversation_id=room.conversation_id, client_message_id=client_id, content=content
            ),
            timeout=30,
        )
        replied = time.perf_counter_ns()
        ends = {name: await asyncio.wait_for(future, 30) for name, future in arrived.items()}
        if n >= count // 10:  # warm-up first
            samples["reply"].append(replied - start)
            for name, end in ends.items():
                samples[name].append(end - start)
    return samples


async def measure_im(redis_url: str, directory: Path, count: int) -> dict[str, Any]:
    """Single process vs same node vs other node, in one run (see the module docstring)."""
    owner = ImNodes(POSTGRES_DSN)
    timing = Timing(heartbeat_interval=1.0, node_timeout=5.0, lease_interval=1.0, gap_timeout=0.5)

    def process(single: bool = False) -> NodeProcess:
        return NodeProcess(
            POSTGRES_DSN,
            owner.schema,
            owner.key,
            redis_url,
            owner.namespace,
            timing=timing,
            single=single,
            send_rate=100_000,  # one sender, one Send at a time: the rate limit is not measured
            log=directory / "im-node.log",
        )

    a, b, single = process(), process(), process(single=True)
    devices: list[_Device] = []
    try:
        await asyncio.gather(a.start(), b.start(), single.start())
        results: dict[str, Any] = {}
        for label, sender_url, same_url, other_url in (
            ("single", single.url, single.url, None),
            ("cluster", a.url, a.url, b.url),
        ):
            sender = await _Device.open(sender_url, "sender")
            recipients = {"same": await _Device.open(same_url, "same")}
            if other_url is not None:
                recipients["other"] = await _Device.open(other_url, "other")
            devices += [sender, *recipients.values()]
            samples = await im_latency(sender, recipients, count)
            results[f"im_{label}_reply"] = latency_percentiles(samples["reply"])
            results[f"im_{label}_same_node"] = latency_percentiles(samples["same"])
            if "other" in samples:
                results[f"im_{label}_other_node"] = latency_percentiles(samples["other"])
        return results
    finally:
        for device in devices:
            await device.close()
        await asyncio.gather(a.stop(), b.stop(), single.stop())
        await owner.close()


async def main(latency_count: int, burst_count: int, im_count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisProcess(Path(directory))
        await server.start()
        try:
            results = await measure(server.url, latency_count, burst_count)
            if im_count:
                try:
                    probe = await asyncpg.connect(POSTGRES_DSN, timeout=5)
                except (OSError, asyncpg.PostgresError) as error:
                    print(
                        f"IM rows skipped: PostgreSQL is not reachable at {POSTGRES_DSN} ({error})"
                    )
                else:
                    await probe.close()
                    results.update(await measure_im(server.url, Path(directory), im_count))
            return results
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
    im_rows = (
        "im_single_reply",
        "im_single_same_node",
        "im_cluster_reply",
        "im_cluster_same_node",
        "im_cluster_other_node",
    )
    for name in im_rows:
        if name in results:
            line(name, results[name], latency_keys)
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
    if "im_cluster_other_node" in results:
        other, same = results["im_cluster_other_node"], results["im_cluster_same_node"]
        alone = results["im_single_same_node"]
        ratios["im_p50_other_vs_same_node"] = other["p50_us"] / same["p50_us"]
        ratios["im_p99_other_vs_same_node"] = other["p99_us"] / same["p99_us"]
        ratios["im_p50_same_node_vs_single_process"] = same["p50_us"] / alone["p50_us"]
    for key, value in {**ratios, **hop}.items():
        print(f"{key:40} {value:8.2f}")
    print(json.dumps({**results, **ratios, **hop}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=50_000, help="events per burst")
    parser.add_argument("--im-samples", type=int, default=1000, help="IM sends (0: skip)")
    args = parser.parse_args()
    set_deadline(600)
    latency_count = 200 if args.quick else args.latency_samples
    burst_count = 5000 if args.quick else args.burst
    im_count = min(args.im_samples, 100) if args.quick else args.im_samples
    report(run_loop(main(latency_count, burst_count, im_count)))
