"""Test rigs for the IM on a cluster: cores in one process, or node processes to kill.

::

    rig = ImNodes(dsn, "redis")                 # or "memory": one in-process bus
    a, b = await rig.core(), await rig.core()   # each its own ClusterNode, one schema
    ...
    await rig.close()                           # closes the cores, drops the schema

    rig = await ProcessRig.start(tmp_path)      # a Redis and 3 node processes
    client = await rig.client("alice", "phone", rig.urls)   # an ImClient
    rig.nodes[1].kill(); rig.redis.kill(); await rig.redis.start()
    await rig.close()

Every core of a rig shares one fresh PostgreSQL schema (the IM's storage and
session registry) and one channel namespace, so tests sharing a database and
a Redis never see each other. Timings are short (`FAST`) so that grace
periods and timeouts pass in a test's time.

Run as a program, this module serves one IM node over WebSocket (what the
multi-process tests and `bench/cluster_bench.py` start)::

    python -m flare_runtime.testing.im_cluster --dsn ... --schema ... --key HEX \\
        --redis redis://127.0.0.1:56379/0 --namespace ns [--port 0]

It prints ``flare-im-node: serving <node id> on port <port>`` once it serves,
and serves until SIGTERM/SIGINT. Its auth is the demo's (any name is a token:
tests only). ``--single`` serves the same IM without a cluster (one process on
PostgreSQL: the benchmark's baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare.im.v1 import events_pb2

from flare_runtime.cluster import ClusterNode, MemoryBroker, MemoryBus
from flare_runtime.im.client import ImClient
from flare_runtime.im.cluster import ClusterSettings
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.push import PushSettings
from flare_runtime.im.storage import KeyRing
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.reconnect import Backoff
from flare_runtime.testing.cluster import RedisProcess

POSTGRES_DSN = os.environ.get(
    "FLARE_IM_POSTGRES_DSN", "postgresql://flare:flare@127.0.0.1:55432/flare_test"
)


@dataclass(frozen=True, slots=True)
class Timing:
    """Short timings for tests: heartbeats, leases, grace, gap wait (seconds)."""

    heartbeat_interval: float = 0.1
    node_timeout: float = 1.0
    lease_interval: float = 0.2
    presence_grace: float = 0.6
    gap_timeout: float = 0.2

    def settings(self) -> ClusterSettings:
        return ClusterSettings(
            gap_timeout=self.gap_timeout,
            lease_interval=self.lease_interval,
            node_timeout=self.node_timeout,
        )

    def limits(self, **overrides: Any) -> ImLimits:
        return ImLimits(presence_grace_seconds=self.presence_grace, **overrides)


FAST = Timing()

CLIENT_BACKOFF = Backoff(initial_delay=0.05, max_delay=0.5)
"""How the rigs' clients retry: fast, so a test's reconnects take little time."""


class ImNodes:
    """IM cores of one cluster in this process, on one bus (memory or Redis)."""

    def __init__(
        self,
        dsn: str = POSTGRES_DSN,
        backend: str = "memory",
        redis_url: str = "",
        *,
        timing: Timing = FAST,
    ) -> None:
        self.dsn = dsn
        self.backend = backend
        self.redis_url = redis_url
        self.timing = timing
        self.schema = f"im_cluster_{secrets.token_hex(5)}"
        self.namespace = f"test-{secrets.token_hex(4)}"
        self.key = os.urandom(32)
        """The message key (id 1) of every core, and of node processes (`NodeProcess`)."""
        self.keyring = KeyRing({1: self.key}, 1)
        self.bus = MemoryBus()
        self.cores: list[ImCore] = []
        self.nodes: list[ClusterNode] = []

    def storage(self) -> PostgresStorage:
        return PostgresStorage(self.dsn, self.keyring, schema=self.schema, max_connections=4)

    def cluster_node(self, **options: Any) -> ClusterNode:
        if self.backend == "memory":
            broker: Any = MemoryBroker(self.bus)
        else:
            from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: PLC0415 - extra

            broker = RedisBroker(
                self.redis_url,
                reconnect_delay=0.02,
                max_reconnect_delay=0.2,
                **options.pop("broker_options", {}),
            )
        options.setdefault("heartbeat_interval", self.timing.heartbeat_interval)
        options.setdefault("node_timeout", self.timing.node_timeout)
        options.setdefault("namespace", self.namespace)
        node = ClusterNode(broker, **options)
        self.nodes.append(node)
        return node

    async def core(
        self,
        *,
        limits: ImLimits | None = None,
        push: PushSettings | None = None,
        **node_options: Any,
    ) -> ImCore:
        """A started core on a node of its own (with offline `push`, when given)."""
        node = self.cluster_node(**node_options)
        core = ImCore(
            self.storage(),
            cluster=node,
            limits=limits or self.timing.limits(),
            cluster_settings=self.timing.settings(),
            push=push,
        )
        await core.start()
        async with asyncio.timeout(10):
            await node.wait_up()
        self.cores.append(core)
        return core

    async def close(self) -> None:
        for core in self.cores:
            with contextlib.suppress(Exception):
                await core.close()
        for node in self.nodes:
            await node.close()
        storage = self.storage()
        await storage.open()
        await storage.drop_schema()
        await storage.close()


# ------------------------------------------------------------------------- processes


class NodeProcess:
    """One IM node in a process of its own (this module run as a program), to SIGKILL."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        keyring_key: bytes,
        redis_url: str,
        namespace: str,
        *,
        timing: Timing = FAST,
        log: Path | None = None,
        single: bool = False,
        send_rate: float | None = None,
    ) -> None:
        self.arguments = ["--single"] if single else []
        if send_rate is not None:
            self.arguments += ["--send-rate", str(send_rate)]
        self.arguments += [
            "--dsn", dsn,
            "--schema", schema,
            "--key", keyring_key.hex(),
            "--redis", redis_url,
            "--namespace", namespace,
            "--heartbeat", str(timing.heartbeat_interval),
            "--node-timeout", str(timing.node_timeout),
            "--lease", str(timing.lease_interval),
            "--grace", str(timing.presence_grace),
            "--gap", str(timing.gap_timeout),
        ]  # fmt: skip
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.node_id = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        """Start it (again: on the same port when it had one) and wait until it serves."""
        root = Path(__file__).resolve().parents[2]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(root / "generated"), str(root), environment.get("PYTHONPATH", "")]
        )
        stderr: Any = subprocess.DEVNULL
        if self.log is not None:
            stderr = self.log.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flare_runtime.testing.im_cluster",
            *self.arguments,
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=environment,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            line = (await self.process.stdout.readline()).decode()
        found = re.match(r"flare-im-node: serving (\S+) on port (\d+)", line)
        if found is None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log is not None else ""
            raise RuntimeError(f"the IM node did not start: {line!r}\n{tail}")
        self.node_id, self.port = found.group(1), int(found.group(2))

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL after 10 s)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def wait(self) -> None:
        if self.process is not None:
            await self.process.wait()


@dataclass
class ProcessRig:
    """Node processes on one Redis of their own and one schema, and the clients of a test."""

    redis: RedisProcess
    owner: ImNodes
    """Holds the schema, key and namespace (its `close` drops the schema)."""
    nodes: list[NodeProcess]
    clients: list[ImClient] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        directory: Path,
        dsn: str = POSTGRES_DSN,
        count: int = 3,
        *,
        send_rate: float | None = None,
    ) -> ProcessRig:
        """Start a Redis and `count` nodes (logs in `directory`; `send_rate`: Sends/s per user)."""
        redis_server = RedisProcess(directory)
        await redis_server.start()
        owner = ImNodes(dsn)
        nodes = [
            NodeProcess(
                dsn,
                owner.schema,
                owner.key,
                redis_server.url,
                owner.namespace,
                timing=owner.timing,
                log=directory / f"node{index}.log",
                send_rate=send_rate,
            )
            for index in range(count)
        ]
        await asyncio.gather(*(node.start() for node in nodes))
        return cls(redis_server, owner, nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    async def client(
        self,
        user: str,
        device: str,
        urls: Sequence[str],
        *,
        record: dict[str, list[int]] | None = None,
        events: list[events_pb2.Event] | None = None,
        backoff: Backoff = CLIENT_BACKOFF,
    ) -> ImClient:
        """A started client of `user` (the demo auth: the token is the user) trying `urls` in
        order; `record` gets each conversation's seqs as delivered, `events` the other pushes."""

        def on_message(message: events_pb2.Message) -> None:
            if record is not None:
                record.setdefault(message.conversation_id, []).append(message.seq)

        client = ImClient(
            list(urls),
            token=user,
            device_id=device,
            backoff=backoff,
            shuffle=False,
            on_message=on_message,
            on_event=events.append if events is not None else None,
        )
        self.clients.append(client)
        await client.start()
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.gather(*(node.stop() for node in self.nodes))
        self.redis.kill()
        await self.owner.close()


async def _serve(arguments: argparse.Namespace) -> None:
    from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: PLC0415 - extra
    from flare_runtime.im.demo import DemoAuth  # noqa: PLC0415
    from flare_runtime.im.service import ImService  # noqa: PLC0415
    from flare_runtime.server import Server  # noqa: PLC0415

    node = ClusterNode(
        RedisBroker(arguments.redis, reconnect_delay=0.02, max_reconnect_delay=0.2)
        if not arguments.single
        else None,  # not given to the core then: no cluster at all
        namespace=arguments.namespace,
        heartbeat_interval=arguments.heartbeat,
        node_timeout=arguments.node_timeout,
    )
    core = ImCore(
        PostgresStorage(
            arguments.dsn, KeyRing({1: bytes.fromhex(arguments.key)}, 1), schema=arguments.schema
        ),
        cluster=None if arguments.single else node,
        limits=ImLimits(
            presence_grace_seconds=arguments.grace,
            send_rate_per_second=arguments.send_rate,
            send_burst=max(1, int(arguments.send_rate * 2)),
        ),
        cluster_settings=ClusterSettings(
            gap_timeout=arguments.gap,
            lease_interval=arguments.lease,
            node_timeout=arguments.node_timeout,
        ),
    )
    await core.start()
    if not arguments.single:
        await node.wait_up()
    service = ImService(core)
    server = Server([service], auth=DemoAuth(), push_tables=[ImService.PUSH_TYPES])
    await server.start(websocket=f"127.0.0.1:{arguments.port}")
    print(f"flare-im-node: serving {node.node_id} on port {server.port('websocket')}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(grace=1.0)
    await core.close()
    await node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="serve one IM cluster node (tests, benches)")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--key", required=True, help="the 32-byte message key, hex")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--heartbeat", type=float, default=FAST.heartbeat_interval)
    parser.add_argument("--node-timeout", type=float, default=FAST.node_timeout)
    parser.add_argument("--lease", type=float, default=FAST.lease_interval)
    parser.add_argument("--grace", type=float, default=FAST.presence_grace)
    parser.add_argument("--gap", type=float, default=FAST.gap_timeout)
    parser.add_argument("--single", action="store_true", help="one process, no cluster")
    parser.add_argument(
        "--send-rate", type=float, default=ImLimits().send_rate_per_second, help="Sends/s per user"
    )
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
