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
5. **room fan-out** (needs PostgreSQL too; ``--fanout-members 0`` skips it):
   one room of ``--fanout-members`` users, one device each, and 10 of them
   sending ``--fanout-messages`` 100-byte messages (8 Sends in flight
   each); deliveries/s from the first Send until every device has every
   ``MessageReceived`` push, the server processes' CPU and this process's
   (the devices') CPU per delivery, and any ``SyncRequired`` push (a device
   told to fetch with ``Sync`` what it did not get live; the run then waits
   in vain, and says so).
   Served by one IM process without a cluster (the baseline), then by one
   node of ``flare serve --workers 2`` (each worker a cluster node on this
   run's Redis; the kernel spreads the devices over both), then, as the raw
   floor, a `websockets` server in a process of its own that rebroadcasts
   every message it receives to every connection (``websockets.broadcast``:
   no storage, no protobuf). The devices run in this process (uvloop), on
   the same 2 cores as the servers: the ratio 2 workers / 1 process is what
   a second worker buys on this machine, not on an idle one.

Prints one line per figure, the ratios, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

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
        # One sender, one Send at a time: the rate limit is not measured.
        config = owner.node_config("" if single else redis_url, timing=timing, send_rate=100_000)
        return NodeProcess(config, log=directory / "im-node.log")

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


# ---------------------------------------------------------------------------- room fan-out

FANOUT_SENDERS = 10
FANOUT_IN_FLIGHT = 8
"""Sends in flight per sender: a sender's next Send does not wait for the last one's fan-out."""


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/PID/stat``)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


class _Counter:
    """Counts deliveries across devices; `reached` is set at `target`."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.sync_required = 0
        """``SyncRequired`` pushes: what a device was told to fetch with ``Sync``, not live."""

    def add(self) -> None:
        self.count += 1
        if self.target and self.count >= self.target:
            self.reached.set()

    async def wait_for(self, target: int, timeout: float = 120.0) -> None:
        self.target = target
        self.reached.clear()
        if self.count >= target:
            return
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.count} of {target} deliveries after {timeout} s "
                f"({self.sync_required} SyncRequired pushes)"
            ) from None


async def _count_pushes(channel: Channel, counter: _Counter) -> None:
    async for push in channel.pushes():
        if isinstance(push, events_pb2.MessageReceived):
            counter.add()
        elif isinstance(push, events_pb2.SyncRequired):
            counter.sync_required += 1


def _fanout_figures(
    deliveries: int, messages: int, seconds: float, cpu: float, client_cpu: float
) -> dict[str, float]:
    return {
        "messages": messages,
        "deliveries": deliveries,
        "seconds": seconds,
        "deliveries_per_s": deliveries / seconds,
        "server_cpu_us_per_delivery": cpu * 1e6 / deliveries,
        "client_cpu_us_per_delivery": client_cpu * 1e6 / deliveries,
    }


async def fanout_im(url: str, pids: list[int], members: int, messages: int) -> dict[str, float]:
    """Room fan-out through the IM at `url` (served by `pids`); see the module docstring."""
    counter = _Counter()
    users = [f"fan{n}" for n in range(members)]
    channels: list[Channel] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for user in users:
            channel = await connect(url, token=user, push_tables=[ImService.PUSH_TYPES])
            await ImServiceClient(channel).login(im_pb2.LoginRequest(device_id="d"), timeout=30)
            channels.append(channel)
            readers.append(asyncio.ensure_future(_count_pushes(channel, counter)))
        room = await ImServiceClient(channels[0]).create_room(
            im_pb2.CreateRoomRequest(title="fan-out", member_user_ids=users[1:]), timeout=30
        )
        await asyncio.sleep(1.0)  # every node follows the room
        content = content_pb2.Content(text=content_pb2.TextContent(text="x" * 100))
        senders = [ImServiceClient(channel) for channel in channels[:FANOUT_SENDERS]]

        async def send(im: ImServiceClient, name: str, count: int) -> None:
            gate = asyncio.Semaphore(FANOUT_IN_FLIGHT)

            async def one(n: int) -> None:
                async with gate:
                    await im.send(
                        im_pb2.SendRequest(
                            conversation_id=room.conversation_id,
                            client_message_id=f"{name}-{n}",
                            content=content,
                        ),
                        timeout=60,
                    )

            await asyncio.gather(*(one(n) for n in range(count)))

        # Warm-up: 2 messages per sender, and what one message costs in deliveries.
        await asyncio.gather(*(send(im, f"w{i}", 2) for i, im in enumerate(senders)))
        warm = 2 * len(senders)
        with contextlib.suppress(TimeoutError):
            await counter.wait_for(warm * members, timeout=10)
        await asyncio.sleep(0.5)
        per_message, rest = divmod(counter.count, warm)
        if rest or per_message not in {members, members - 1}:  # the sender's device or not
            raise RuntimeError(f"{counter.count} deliveries for {warm} messages to {members}")
        share = messages // len(senders)
        total = share * len(senders)
        before = counter.count
        cpu, client_cpu = _cpu_seconds(pids), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(send(im, f"s{i}", share) for i, im in enumerate(senders)))
        await counter.wait_for(before + total * per_message)
        seconds = time.perf_counter() - started
        figures = _fanout_figures(
            total * per_message,
            total,
            seconds,
            _cpu_seconds(pids) - cpu,
            time.process_time() - client_cpu,
        )
        figures["sync_required"] = counter.sync_required
        return figures
    finally:
        for channel in channels:
            await channel.close()
        for reader in readers:
            reader.cancel()


async def raw_fanout_server() -> None:
    """``--raw-fanout-server``: every message received is broadcast to every connection."""
    connections: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        connections.add(connection)
        try:
            async for message in connection:
                websockets.broadcast(connections, message)
        finally:
            connections.discard(connection)

    async with ws_serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def fanout_raw(members: int, messages: int) -> dict[str, float]:
    """The raw floor: the same traffic through `raw_fanout_server` in a process of its own."""
    command = [sys.executable, "-m", "bench.cluster_bench", "--raw-fanout-server"]
    server = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdin is not None
    counter = _Counter()
    clients: list[Any] = []
    readers: list[asyncio.Task[None]] = []

    async def read(client: Any) -> None:
        async for _ in client:
            counter.add()

    try:
        port = int(await asyncio.to_thread(server.stdout.readline))
        for _ in range(members):
            client = await ws_connect(f"ws://127.0.0.1:{port}", compression=None)
            clients.append(client)
            readers.append(asyncio.ensure_future(read(client)))
        payload = b"x" * 100
        senders = clients[:FANOUT_SENDERS]
        for client in senders:  # warm-up
            await client.send(payload)
        await counter.wait_for(len(senders) * members)
        share = messages // len(senders)
        total = share * len(senders)
        before = counter.count
        cpu, client_cpu = _cpu_seconds([server.pid]), time.process_time()
        started = time.perf_counter()

        async def send(client: Any) -> None:
            for _ in range(share):
                await client.send(payload)

        await asyncio.gather(*(send(client) for client in senders))
        await counter.wait_for(before + total * members)
        seconds = time.perf_counter() - started
        return _fanout_figures(
            total * members,
            total,
            seconds,
            _cpu_seconds([server.pid]) - cpu,
            time.process_time() - client_cpu,
        )
    finally:
        for client in clients:
            await client.close()
        for reader in readers:
            reader.cancel()
        server.stdin.close()
        server.wait(10)


async def measure_fanout(
    redis_url: str, directory: Path, members: int, messages: int
) -> dict[str, Any]:
    """One IM process vs one node of 2 workers vs raw `websockets`, in one run."""
    owner = ImNodes(POSTGRES_DSN)
    timing = Timing(heartbeat_interval=1.0, node_timeout=5.0, lease_interval=1.0, gap_timeout=0.5)
    # The senders' Sends are not rate-limited: the bench measures fan-out, not the limit.
    single = NodeProcess(
        owner.node_config("", timing=timing, send_rate=100_000, keepalive=False),
        log=directory / "fanout-single.log",
    )
    workers = NodeProcess(
        owner.node_config(redis_url, timing=timing, send_rate=100_000, keepalive=False),
        workers=2,
        log=directory / "fanout-workers.log",
    )
    results: dict[str, Any] = {}
    try:
        await single.start()
        results["fanout_one_process"] = await fanout_im(single.url, [single.pid], members, messages)
        await single.stop()
        await workers.start()
        pids = [workers.pid, *workers.pids.values()]
        results["fanout_two_workers"] = await fanout_im(workers.url, pids, members, messages)
        await workers.stop()
        results["fanout_raw_websockets"] = await fanout_raw(members, messages)
        return results
    finally:
        await asyncio.gather(single.stop(), workers.stop())
        await owner.close()


async def main(
    latency_count: int, burst_count: int, im_count: int, fanout: tuple[int, int]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisProcess(Path(directory))
        await server.start()
        try:
            results = await measure(server.url, latency_count, burst_count) if burst_count else {}
            if im_count or fanout[0]:
                try:
                    probe = await asyncpg.connect(POSTGRES_DSN, timeout=5)
                except (OSError, asyncpg.PostgresError) as error:
                    print(
                        f"IM rows skipped: PostgreSQL is not reachable at {POSTGRES_DSN} ({error})"
                    )
                else:
                    await probe.close()
                    if im_count:
                        results.update(await measure_im(server.url, Path(directory), im_count))
                    if fanout[0]:
                        results.update(await measure_fanout(server.url, Path(directory), *fanout))
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
    ratios: dict[str, float] = {}
    hop: dict[str, float] = {}
    if "latency_raw_redis_py" in results:
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
        same_burst = results["burst_same_node"]
        ratios = {
            "latency_p50_other_node_vs_raw": ours["p50_us"] / raw["p50_us"],
            "latency_p99_other_node_vs_raw": ours["p99_us"] / raw["p99_us"],
            "burst_us_other_node_vs_raw": burst["us_per_delivery"] / raw_burst["us_per_delivery"],
            "burst_cpu_other_node_vs_raw": burst["cpu_us_per_delivery"]
            / raw_burst["cpu_us_per_delivery"],
        }
        hop = {
            "redis_hop_us_per_delivery": burst["us_per_delivery"] - same_burst["us_per_delivery"],
            "redis_hop_cpu_us_per_delivery": burst["cpu_us_per_delivery"]
            - same_burst["cpu_us_per_delivery"],
            "redis_hop_latency_p50_us": ours["p50_us"]
            - results["latency_same_node_redis"]["p50_us"],
        }
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
    if "im_cluster_other_node" in results:
        other, same = results["im_cluster_other_node"], results["im_cluster_same_node"]
        alone = results["im_single_same_node"]
        ratios["im_p50_other_vs_same_node"] = other["p50_us"] / same["p50_us"]
        ratios["im_p99_other_vs_same_node"] = other["p99_us"] / same["p99_us"]
        ratios["im_p50_same_node_vs_single_process"] = same["p50_us"] / alone["p50_us"]
    fanout_keys = (
        "deliveries_per_s",
        "server_cpu_us_per_delivery",
        "client_cpu_us_per_delivery",
        "seconds",
    )
    for name in ("fanout_one_process", "fanout_two_workers", "fanout_raw_websockets"):
        if name in results:
            line(name, results[name], fanout_keys)
    if "fanout_two_workers" in results:
        one, two = results["fanout_one_process"], results["fanout_two_workers"]
        raw_fanout = results["fanout_raw_websockets"]
        ratios["fanout_rate_two_workers_vs_one_process"] = (
            two["deliveries_per_s"] / one["deliveries_per_s"]
        )
        ratios["fanout_cpu_two_workers_vs_one_process"] = (
            two["server_cpu_us_per_delivery"] / one["server_cpu_us_per_delivery"]
        )
        ratios["fanout_rate_one_process_vs_raw"] = (
            one["deliveries_per_s"] / raw_fanout["deliveries_per_s"]
        )
        ratios["fanout_cpu_one_process_vs_raw"] = (
            one["server_cpu_us_per_delivery"] / raw_fanout["server_cpu_us_per_delivery"]
        )
    for key, value in {**ratios, **hop}.items():
        print(f"{key:40} {value:8.2f}")
    print(json.dumps({**results, **ratios, **hop}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=50_000, help="events per burst")
    parser.add_argument("--im-samples", type=int, default=1000, help="IM sends (0: skip)")
    parser.add_argument("--fanout-members", type=int, default=100, help="room size (0: skip)")
    parser.add_argument("--fanout-messages", type=int, default=1000, help="fan-out messages")
    parser.add_argument("--only-fanout", action="store_true", help="phase 5 alone")
    parser.add_argument("--raw-fanout-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_fanout_server:
        run_loop(raw_fanout_server())
        raise SystemExit(0)
    set_deadline(900)
    latency_count = 200 if args.quick else args.latency_samples
    burst_count = 5000 if args.quick else args.burst
    im_count = min(args.im_samples, 100) if args.quick else args.im_samples
    fanout = (args.fanout_members, 200 if args.quick else args.fanout_messages)
    if args.only_fanout:
        latency_count = burst_count = im_count = 0
    report(run_loop(main(latency_count, burst_count, im_count, fanout)))
