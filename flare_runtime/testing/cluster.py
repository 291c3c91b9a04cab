"""Test rigs for the cluster: nodes on one bus, and a ``redis-server`` a test may kill.

::

    rig = Cluster("redis")                  # or "memory"
    a, b = await rig.node(), await rig.node()
    ...
    await rig.close()

    server = RedisProcess(tmp_path)         # a Redis of this test's own
    await server.start(); server.kill(); await server.start()

`Cluster("redis")` uses ``FLARE_REDIS_URL`` (default 127.0.0.1:56379, the
instance `.ci/services.d/70-redis.sh` starts) with a channel namespace of its
own, so tests sharing that Redis never see each other's traffic. Needs the
``redis`` extra.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio

from flare_runtime.cluster import ClusterEvent, ClusterNode, MemoryBroker, MemoryBus, Subscription
from flare_runtime.cluster.redis_broker import RedisBroker
from flare_runtime.server_connection import PreparedPush
from flare_runtime.testing.service import PUSH_TYPES, StringValue

REDIS_URL = os.environ.get("FLARE_REDIS_URL", "redis://127.0.0.1:56379/0")
UNIT = 1.0
"""Seconds; timeouts are generous multiples of it."""


TEXT_PUSH_TYPE = PUSH_TYPES.types[0].type_id
"""The conformance service's `StringValue` push, which its clients decode."""


def text_push(text: str) -> PreparedPush:
    """A push of `StringValue(value=text)`, encoded once."""
    return PreparedPush(TEXT_PUSH_TYPE, StringValue(value=text).SerializeToString())


class Recorder:
    """An in-process subscriber that records what it is told (``on_event=recorder``)."""

    def __init__(self) -> None:
        self.events: list[ClusterEvent] = []
        self.missed: list[Subscription] = []

    def __call__(self, event: ClusterEvent) -> None:
        self.events.append(event)

    def on_missed(self, subscription: Subscription) -> None:
        self.missed.append(subscription)

    @property
    def texts(self) -> list[str]:
        """The events' payloads as `text_push` wrote them."""
        return [StringValue.FromString(event.push.payload).value for event in self.events]


async def eventually(predicate: Callable[[], bool], timeout: float = 10 * UNIT) -> None:
    """Wait until `predicate()` holds (polling); fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def redis_ping(url: str) -> str | None:
    """None when Redis answers at `url`, else why not."""
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        await client.aclose()
    return None


class Cluster:
    """Started nodes on one bus; `node()` adds one."""

    def __init__(self, backend: str, url: str = REDIS_URL) -> None:
        self.backend = backend
        self.url = url
        self.namespace = f"test-{secrets.token_hex(4)}"
        self.bus = MemoryBus()
        self.nodes: list[ClusterNode] = []
        self.admin = redis.asyncio.Redis.from_url(url) if backend == "redis" else None

    def broker(self, **options: Any) -> MemoryBroker | RedisBroker:
        if self.backend == "memory":
            return MemoryBroker(self.bus)
        options.setdefault("reconnect_delay", 0.02)
        options.setdefault("max_reconnect_delay", 0.2)
        return RedisBroker(self.url, **options)

    async def node(self, *, wait: bool = True, broker: Any = None, **options: Any) -> ClusterNode:
        options.setdefault("namespace", self.namespace)
        node = ClusterNode(broker if broker is not None else self.broker(), **options)
        self.nodes.append(node)
        await node.start()
        if wait:
            async with asyncio.timeout(10 * UNIT):
                await node.wait_up()
        return node

    async def bus_subscribers(self, channel: bytes) -> int:
        """How many nodes the bus itself routes `channel` to (Redis: PUBSUB NUMSUB)."""
        if self.admin is None:
            return self.bus.subscribers(channel)
        ((_, count),) = await self.admin.pubsub_numsub(channel)
        return int(count)

    async def wait_bus_subscribers(self, channel: bytes, expected: int) -> None:
        async with asyncio.timeout(10 * UNIT):
            while await self.bus_subscribers(channel) != expected:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()
        if self.admin is not None:
            await self.admin.aclose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisProcess:
    """A ``redis-server`` of one test's own, on a free port, that the test may kill."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers."""
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(10 * UNIT):
            while await redis_ping(self.url) is not None:
                assert self.process.poll() is None, "redis-server exited at start"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
