"""Test rigs for the IM on a cluster: cores in one process, or node processes to kill.

::

    rig = ImNodes(dsn, "redis")                 # or "memory": one in-process bus
    a, b = await rig.core(), await rig.core()   # each its own ClusterNode, one schema
    ...
    await rig.close()                           # closes the cores, drops the schema

    rig = await ProcessRig.start(tmp_path, workers=2)   # a Redis and 3 nodes of 2 workers
    client = await rig.client("alice", "phone", rig.urls)   # an ImClient
    await rig.nodes[1].kill(); rig.nodes[2].kill_worker(0); rig.redis.kill()
    await rig.close()

Every core of a rig shares one fresh PostgreSQL schema (the IM's storage and
session registry) and one channel namespace, so tests sharing a database and
a Redis never see each other. Timings are short (`FAST`) so that grace
periods and timeouts pass in a test's time.

A node process is ``flare serve`` of `node_server`, configured by a
`NodeConfig` in the environment (what the multi-process tests and the
benchmarks start)::

    FLARE_IM_NODE='{"dsn": ..., "schema": ..., "key": HEX, "redis": ...}' \\
        flare serve flare_runtime.testing.im_cluster:node_server --ws 127.0.0.1:0 --workers 2

With ``--workers N`` every worker is a node of its own. Its auth is the
demo's (any name is a token: tests and benchmarks only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from flare.im.v1 import events_pb2

from flare_runtime.cluster import ClusterNode, MemoryBroker, MemoryBus
from flare_runtime.errors import ConfigurationError
from flare_runtime.im.client import ImClient
from flare_runtime.im.cluster import ClusterSettings
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.push import PushSettings
from flare_runtime.im.storage import KeyRing
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.reconnect import Backoff
from flare_runtime.server import Server, ServerOptions
from flare_runtime.testing.cluster import RedisProcess
from flare_runtime.testing.workers import ServedWorkers

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

    def node_config(self, redis_url: str, **options: Any) -> NodeConfig:
        """How node processes (`node_server`) join this rig's cluster: its schema, key,
        namespace and timing; `redis_url` "" for one process without a cluster."""
        config = NodeConfig(
            self.dsn, self.schema, self.key.hex(), redis_url, self.namespace, self.timing
        )
        return dataclasses.replace(config, **options)

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

NODE_TARGET = "flare_runtime.testing.im_cluster:node_server"
"""The ``flare serve`` target of an IM node (its configuration in `NODE_ENVIRONMENT`)."""

NODE_ENVIRONMENT = "FLARE_IM_NODE"
"""The environment variable holding a `NodeConfig` (JSON) for `node_server`."""

NODE_PRELOAD = (
    "flare_runtime.testing.im_cluster",
    "flare_runtime.im.service",
    "flare_runtime.im.demo",
    "flare_runtime.cluster.redis_broker",
)
"""What ``flare serve --workers N --preload`` imports once for every worker of a node."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What `node_server` serves, passed to ``flare serve`` in `NODE_ENVIRONMENT`."""

    dsn: str
    schema: str
    key: str
    """The 32-byte message key (id 1), hex."""
    redis: str = ""
    """The cluster's Redis; "" serves the IM without a cluster (one process on PostgreSQL:
    a benchmark's baseline; ``--workers`` above 1 is then refused)."""
    namespace: str = "flare"
    timing: Timing = FAST
    send_rate: float | None = None
    """Sends per second per user (None: `ImLimits`' default)."""
    keepalive: bool = True
    """False: no keepalive pings (a scale benchmark's idle connections send nothing)."""
    max_connections: int = 4
    """PostgreSQL connections per process."""

    def environment(self) -> dict[str, str]:
        """`NODE_ENVIRONMENT` for a node process."""
        fields = dataclasses.asdict(self)
        return {NODE_ENVIRONMENT: json.dumps(fields)}

    @classmethod
    def from_environment(cls) -> NodeConfig:
        text = os.environ.get(NODE_ENVIRONMENT)
        if not text:
            raise ConfigurationError(f"{NODE_TARGET} needs {NODE_ENVIRONMENT} (a NodeConfig)")
        fields = json.loads(text)
        fields["timing"] = Timing(**fields["timing"])
        return cls(**fields)


async def node_server() -> Server:
    """One IM node as `NodeConfig` (`NODE_ENVIRONMENT`) says: ``flare serve`` its target.

    Every process serving it, each worker of ``--workers N`` included, is a
    node of its own (its own `ClusterNode` id: ``host-pid-random``). Its
    auth is the demo's: any name is a token (tests and benchmarks only).
    """
    from flare_runtime.im.demo import DemoAuth  # noqa: PLC0415 - not for ImNodes
    from flare_runtime.im.service import ImService  # noqa: PLC0415 - not for ImNodes

    config = NodeConfig.from_environment()
    timing = config.timing
    broker = None
    if config.redis:
        from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: PLC0415 - extra

        broker = RedisBroker(config.redis, reconnect_delay=0.02, max_reconnect_delay=0.2)
    node = ClusterNode(
        broker,
        namespace=config.namespace,
        heartbeat_interval=timing.heartbeat_interval,
        node_timeout=timing.node_timeout,
    )
    rate = {}
    if config.send_rate is not None:
        rate = {
            "send_rate_per_second": config.send_rate,
            "send_burst": max(1, int(config.send_rate * 2)),
        }
    storage = PostgresStorage(
        config.dsn,
        KeyRing({1: bytes.fromhex(config.key)}, 1),
        schema=config.schema,
        max_connections=config.max_connections,
    )
    core = ImCore(
        storage,
        cluster=node if config.redis else None,  # without Redis: no cluster at all
        limits=timing.limits(**rate),
        cluster_settings=timing.settings(),
    )
    await core.start()
    if config.redis:
        await node.wait_up()
    options = ServerOptions()
    if not config.keepalive:
        options = ServerOptions(protocol=ProtocolConfig(keepalive_interval=None))

    async def leave(_: Server) -> None:  # after the listeners drained: the registry forgets it
        await core.close()
        await node.close()

    return Server(
        [ImService(core)],
        auth=DemoAuth(),
        options=options,
        push_tables=[ImService.PUSH_TYPES],
        on_shutdown=[leave],
    )


class NodeProcess:
    """One IM node: ``flare serve`` of `node_server` (``--workers N``), to SIGKILL.

    With one worker the node is one process; with N, a supervisor and N
    worker processes sharing the port, each a cluster node of its own.
    """

    def __init__(self, config: NodeConfig, *, workers: int = 1, log: Path | None = None) -> None:
        self.config = config
        self.workers = workers
        self.log = log
        self.served: ServedWorkers | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pids(self) -> dict[int, int]:
        """Worker index -> the pid of its process (empty with one worker: no supervisor)."""
        return dict(self.served.pids) if self.served is not None else {}

    @property
    def pid(self) -> int:
        """The pid of ``flare serve`` itself (the supervisor, with several workers)."""
        assert self.served is not None
        return self.served.process.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Start it (again: on the same port when it had one) and wait until it serves."""
        root = Path(__file__).resolve().parents[2]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(root / "generated"), str(root), environment.get("PYTHONPATH", "")]
        )
        environment.update(self.config.environment())
        arguments = ["--grace", "1"]
        if self.workers > 1:
            arguments += [argument for module in NODE_PRELOAD for argument in ("--preload", module)]
        self.served = await ServedWorkers.start(
            NODE_TARGET,
            {"websocket": f"127.0.0.1:{self.port}"},
            workers=self.workers,
            arguments=arguments,
            env=environment,
            cwd=root,
            timeout=timeout,
        )
        self.port = int(self.served.urls["websocket"].rpartition(":")[2])

    async def kill(self) -> None:
        """SIGKILL every process of the node: no goodbye to anyone."""
        if self.served is not None:
            await self.served.kill()
            self._keep_log()

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker `index` (its supervisor restarts it); its pid."""
        pid = self.pids[index]
        os.kill(pid, signal.SIGKILL)
        return pid

    async def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL after 30 s)."""
        served = self.served
        if served is None or served.process.returncode is not None:
            return
        with contextlib.suppress(TimeoutError):
            await served.stop()
        self._keep_log()

    def _keep_log(self) -> None:
        if self.log is not None and self.served is not None:
            with self.log.open("a") as log:
                log.write(self.served.stderr)


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
        workers: int = 1,
        send_rate: float | None = None,
    ) -> ProcessRig:
        """Start a Redis and `count` nodes of `workers` processes each (logs in `directory`;
        `send_rate`: Sends/s per user)."""
        redis_server = RedisProcess(directory)
        await redis_server.start()
        owner = ImNodes(dsn)
        config = owner.node_config(redis_server.url, send_rate=send_rate)
        nodes = [
            NodeProcess(config, workers=workers, log=directory / f"node{index}.log")
            for index in range(count)
        ]
        rig = cls(redis_server, owner, nodes)
        try:
            await asyncio.gather(*(node.start() for node in nodes))
        except BaseException:
            await rig.close()
            raise
        return rig

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

    async def process_of(self, client: ImClient) -> int:
        """The pid of the process (the worker) holding `client`'s session, by the registry.

        A node's id is ``host-pid-random`` (`ClusterNode`), and the registry
        names the node of every session.
        """
        async with asyncpg_connection(self.owner.dsn) as connection:
            node_id = await connection.fetchval(
                f"SELECT node_id FROM {self.owner.schema}.sessions WHERE session_id = $1",
                client.session_id,
            )
        if node_id is None:
            raise LookupError(f"no session {client.session_id!r} in the registry")
        return int(node_id.rsplit("-", 2)[1])

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.gather(*(node.stop() for node in self.nodes))
        self.redis.kill()
        await self.owner.close()


@contextlib.asynccontextmanager
async def asyncpg_connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One PostgreSQL connection, closed afterwards."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()
