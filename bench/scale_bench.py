"""Many idle Flare WebSocket connections on one host: server memory per connection, handshake rate.

::

    .venv/bin/python -m bench.scale_bench --connections 100000      # this machine
    .venv/bin/python -m bench.scale_bench --connections 1000000 --uvloop --clients 60  # 16 cores
    .venv/bin/python -m bench.scale_bench --connections 20000 --im --workers 1   # IM logins

The server is ``flare serve bench._scale_app:server --ws 0.0.0.0:0 --workers
W`` -- the real supervisor and workers -- with W = connections / 16,000
rounded up (a process holds at most ~19,990 sockets: the hard fd limit here is
20,000). Client processes (each at most 18,000 connections) open Flare
connections (WebSocket upgrade + Flare HELLO both ways) through
`flare_runtime.connect`, spread over the loopback addresses 127.0.0.1-.N so
that more than one address's 28,000 ephemeral ports are available, then hold
them idle. Measured:

* **handshake rate**: connections opened per second, all clients together,
  from the first connect to the last HELLO;
* **server memory per connection, worker base included**: the summed RSS
  (and PSS, which splits pages the forked workers share) of the supervisor
  and every worker with all connections open, divided by the connections;
  and the marginal cost: (memory with connections - memory before) / connections;
* **kernel memory**: the growth of the kernel's slab memory (/proc/meminfo,
  socket structures of both ends of every loopback connection, and whatever
  else the machine did meanwhile), outside every process's RSS.

``--im``: the server is the IM on a cluster
(`flare_runtime.testing.im_cluster.node_server`: `ImService` on
`PostgresStorage` in a fresh schema of ``FLARE_IM_POSTGRES_DSN``, every worker
a node on a ``redis-server`` of this run's own, production timings, no
keepalive), and every connection also logs in (``Login`` with its own user and
device): the figures are then per *session*, and the handshake rate counts
connect + login. Measured besides: what the sessions cost outside the server
processes -- Redis's memory and RSS (one subscribed channel per user, on the
worker's subscriber connection) and the registry's rows in PostgreSQL
(``sessions``, ``presence``: table + index sizes). ``--im single`` serves the
IM without a cluster (one worker at most: the supervisor refuses more), to
see what the cluster adds per session.

What bounds a run: the fd limit (per process), the 2 cores (handshake rate;
the clients run on the same machine), memory (client connections cost more
than server ones), and for more than ~28,000 x N connections the number of
loopback addresses (``--addresses``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PER_WORKER = 16_000
"""Connections planned per worker (the kernel's spread varies by a few hundred)."""
PER_CLIENT = 18_000
"""Most connections one client process opens."""
SERVING = re.compile(r"^flare: serving websocket on port (\d+) ")
WORKER_READY = re.compile(r"^flare: worker (\d+) ready \(pid (\d+)\)$")


def raise_fd_limit() -> int:
    """Raise this process's soft fd limit to the hard one; the limit now."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of `pid` in KiB (/proc/PID/smaps_rollup)."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name == "Rss":
                rss = int(rest.split()[0])
            elif name == "Pss":
                pss = int(rest.split()[0])
    return rss, pss


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def kernel_slab_kb() -> int:
    """The kernel's slab memory in KiB (/proc/meminfo): socket structures live there."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- client process


async def client_main(args: argparse.Namespace) -> None:
    """Open `args.count` Flare connections, report, hold them until stdin closes."""
    import flare_runtime as flare  # noqa: PLC0415
    from flare_runtime.protocol.config import ProtocolConfig  # noqa: PLC0415

    raise_fd_limit()
    idle = ProtocolConfig(keepalive_interval=None)  # as the server (bench._scale_app.IDLE)
    loop = asyncio.get_running_loop()
    unretrieved: list[str] = []

    def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A failed handshake can leave a future nobody awaits (counted, not printed
        # thousands of times).
        unretrieved.append(str(context.get("exception") or context.get("message")))

    loop.set_exception_handler(quiet)
    hosts = [f"127.0.0.{1 + i}" for i in range(args.addresses)]
    channels: list[Any] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(args.concurrency)
    login = None
    if args.im:
        from flare.im.v1 import im_pb2  # noqa: PLC0415
        from flare.im.v1.im_flare import ImServiceClient  # noqa: PLC0415

        def login(channel: Any) -> Any:
            return ImServiceClient(channel).login(
                im_pb2.LoginRequest(device_id="bench"), timeout=60
            )

    async def one(number: int) -> None:
        async with gate:
            url = f"ws://{hosts[number % len(hosts)]}:{args.port}"
            try:
                token = f"u{args.first + number}" if args.im else None
                channel = await flare.connect(url, token=token, open_timeout=60, protocol=idle)
                if login is not None:
                    await login(channel)
                channels.append(channel)
            except Exception as error:  # counted, the first one reported
                failures.append(f"{type(error).__name__}: {error}")

    started = time.monotonic()
    await asyncio.gather(*(one(number) for number in range(args.count)))
    seconds = time.monotonic() - started
    rss, _ = memory_kb(os.getpid())
    report = {
        "opened": len(channels),
        "failed": len(failures),
        "seconds": seconds,
        "rss_kb": rss,
        "error": failures[0] if failures else "",
        "unretrieved": len(unretrieved),
    }
    print(json.dumps(report), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    # Exit without closing each connection: the kernel closes the sockets.
    sys.stdout.flush()
    os._exit(0)


# ---------------------------------------------------------------------------- orchestrator


class ImBackends:
    """``--im``: a fresh schema in PostgreSQL and (on a cluster) a redis-server of this run's
    own; what the sessions cost in each."""

    def __init__(self, directory: Path, cluster: bool) -> None:
        from flare_runtime.testing.cluster import RedisProcess  # noqa: PLC0415
        from flare_runtime.testing.im_cluster import POSTGRES_DSN, ImNodes, Timing  # noqa: PLC0415

        self.owner = ImNodes(POSTGRES_DSN)
        self.redis = RedisProcess(directory) if cluster else None
        production = Timing(
            heartbeat_interval=1.0,
            node_timeout=5.0,
            lease_interval=1.0,
            presence_grace=5.0,
            gap_timeout=0.5,
        )
        self.config = self.owner.node_config(
            self.redis.url if self.redis is not None else "", timing=production, keepalive=False
        )

    def start(self) -> None:
        if self.redis is not None:
            asyncio.run(self.redis.start())

    def redis_memory(self) -> dict[str, int]:
        """Redis's used memory and RSS (bytes), and its pub/sub channels."""
        if self.redis is None or self.redis.process is None:
            return {}
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url(self.redis.url)
        try:
            info = client.info("memory")
            channels = len(client.pubsub_channels())
        finally:
            client.close()
        return {
            "used_memory": int(info["used_memory"]),
            "rss": memory_kb(self.redis.process.pid)[0] * 1024,
            "channels": channels,
        }

    def registry_sizes(self) -> dict[str, int]:
        """Rows and bytes (table + indexes) of the registry's tables."""

        async def measure() -> dict[str, int]:
            from flare_runtime.testing.im_cluster import asyncpg_connection  # noqa: PLC0415

            sizes: dict[str, int] = {}
            async with asyncpg_connection(self.owner.dsn) as connection:
                for table in ("sessions", "presence", "nodes"):
                    name = f"{self.owner.schema}.{table}"
                    if await connection.fetchval("SELECT to_regclass($1)", name) is None:
                        continue
                    sizes[f"{table}_rows"] = await connection.fetchval(
                        f"SELECT count(*) FROM {name}"
                    )
                    sizes[f"{table}_bytes"] = await connection.fetchval(
                        "SELECT pg_total_relation_size($1::regclass)", name
                    )
            return sizes

        return asyncio.run(measure())

    def close(self) -> None:
        if self.redis is not None:
            self.redis.kill()
        asyncio.run(self.owner.close())  # drops the schema


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    workers = args.workers or max(1, math.ceil(args.connections / PER_WORKER))
    clients = args.clients or max(1, math.ceil(args.connections / PER_CLIENT))
    if args.connections / clients > PER_CLIENT + 1000:
        raise SystemExit(f"{clients} clients cannot open {args.connections} (fd limit)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    target = "bench._scale_app:server"
    preload: tuple[str, ...] = ()
    with contextlib.ExitStack() as stack:
        backends = None
        if args.im:
            from flare_runtime.testing.im_cluster import (  # noqa: PLC0415
                NODE_PRELOAD,
                NODE_TARGET,
            )

            directory = stack.enter_context(tempfile.TemporaryDirectory())
            backends = ImBackends(Path(directory), cluster=args.im == "cluster")
            stack.callback(backends.close)
            backends.start()
            env.update(backends.config.environment())
            target, preload = NODE_TARGET, NODE_PRELOAD
        return _run(args, workers, clients, env, target, preload, backends)


def _run(  # noqa: PLR0917 - the parts of one run
    args: argparse.Namespace,
    workers: int,
    clients: int,
    env: dict[str, str],
    target: str,
    preload: tuple[str, ...],
    backends: ImBackends | None,
) -> dict[str, Any]:
    command = [sys.executable, "-m", "flare_runtime.cli", "serve", target]
    command += ["--ws", "0.0.0.0:0", "--workers", str(workers), "--grace", "1"]
    command += ["--uvloop"] if args.uvloop else []
    # The IM's libraries once in the supervisor, shared by every worker.
    command += [arg for module in preload for arg in ("--preload", module)]
    print(f"server: {workers} workers; clients: {clients} processes", file=sys.stderr)
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    client_processes: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        port = 0
        while not port:
            line = server.stdout.readline()
            if not line:
                raise SystemExit(f"flare serve exited ({server.wait()})")
            ready = WORKER_READY.match(line.strip())
            if ready:
                pids.append(int(ready.group(2)))
            serving = SERVING.match(line)
            if serving:
                port = int(serving.group(1))
        time.sleep(1.0)
        pids = pids or [server.pid]  # --workers 1: the server is its only worker
        everyone = sorted({server.pid, *pids})
        base = [memory_kb(pid) for pid in everyone]
        worker_base = [memory_kb(pid) for pid in pids]
        base_fds = {pid: open_fds(pid) for pid in pids}
        kernel_before = kernel_slab_kb()
        redis_before = backends.redis_memory() if backends is not None else {}

        share, extra = divmod(args.connections, clients)
        first = 0
        started = time.monotonic()
        for index in range(clients):
            count = share + (1 if index < extra else 0)
            client_command = [sys.executable, "-m", "bench.scale_bench", "--client"]
            client_command += ["--port", str(port), "--count", str(count)]
            client_command += ["--first", str(first), "--addresses", str(args.addresses)]
            client_command += ["--concurrency", str(args.concurrency)]
            client_command += ["--im"] if args.im else []
            first += count
            client_processes.append(
                subprocess.Popen(
                    client_command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        reports = []
        for process in client_processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise SystemExit(f"a client exited ({process.wait()})")
            reports.append(json.loads(line))
        handshake_seconds = time.monotonic() - started
        time.sleep(args.settle)
        loaded = [memory_kb(pid) for pid in everyone]
        per_worker = [open_fds(pid) - base_fds[pid] for pid in pids]
        kernel_after = kernel_slab_kb()
        redis_after = backends.redis_memory() if backends is not None else {}
        registry = backends.registry_sizes() if backends is not None else {}
        opened = sum(per_worker)  # what the server holds now (the clients' count below)
        client_opened = sum(report["opened"] for report in reports)
        failed = sum(report["failed"] for report in reports)
        errors = sorted({report["error"] for report in reports if report["error"]})
        rss_base = sum(rss for rss, _ in base)
        pss_base = sum(pss for _, pss in base)
        rss = sum(rss for rss, _ in loaded)
        pss = sum(pss for _, pss in loaded)
        client_rss = sum(report["rss_kb"] for report in reports)
        result = {
            "connections": opened,
            "client_opened": client_opened,
            "failed": failed,
            "errors": errors[:3],
            "im_sessions": args.im,
            "workers": workers,
            "clients": clients,
            "uvloop": args.uvloop,
            "connections_per_worker": per_worker,
            "handshakes_per_s": client_opened / handshake_seconds,
            "handshake_seconds": handshake_seconds,
            "server_base_rss_mb": rss_base / 1024,
            "server_base_pss_mb": pss_base / 1024,
            "worker_base_rss_mb": [round(memory[0] / 1024, 1) for memory in worker_base],
            "worker_base_pss_mb": [round(memory[1] / 1024, 1) for memory in worker_base],
            "server_rss_mb": rss / 1024,
            "server_pss_mb": pss / 1024,
            "rss_per_connection_kb": rss * 1024 / max(opened, 1) / 1000,
            "pss_per_connection_kb": pss * 1024 / max(opened, 1) / 1000,
            "marginal_rss_per_connection_kb": (rss - rss_base) * 1024 / max(opened, 1) / 1000,
            "marginal_pss_per_connection_kb": (pss - pss_base) * 1024 / max(opened, 1) / 1000,
            "kernel_slab_mb_both_ends": (kernel_after - kernel_before) / 1024,
            "client_rss_per_connection_kb": client_rss * 1024 / max(client_opened, 1) / 1000,
            "load_average": os.getloadavg(),
        }
        if redis_after:
            result["redis_channels"] = redis_after["channels"]
            for key in ("used_memory", "rss"):
                grown = redis_after[key] - redis_before[key]
                result[f"redis_{key}_per_session_bytes"] = grown / max(opened, 1)
        for table in ("sessions", "presence"):
            if f"{table}_bytes" in registry:
                result[f"registry_{table}_rows"] = registry[f"{table}_rows"]
                result[f"registry_{table}_bytes_per_session"] = registry[f"{table}_bytes"] / max(
                    opened, 1
                )
        return result
    finally:
        for process in client_processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in client_processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def print_table(result: dict[str, Any]) -> None:
    what = f"IM sessions ({result['im_sessions']})" if result["im_sessions"] else "connections"
    print(
        f"{result['connections']:,} idle Flare WebSocket {what} held by the server "
        f"({result['client_opened']:,} opened, {result['failed']} failed) on "
        f"{result['workers']} workers, {result['clients']} client processes, "
        f"uvloop={result['uvloop']}, load average {result['load_average'][0]:.1f}"
    )
    print(f"  per worker: {result['connections_per_worker']}")
    print(
        f"  handshakes: {result['handshakes_per_s']:,.0f}/s "
        f"({result['handshake_seconds']:.1f} s for all)"
    )
    print(
        f"  server base: RSS {result['server_base_rss_mb']:.0f} MB, "
        f"PSS {result['server_base_pss_mb']:.0f} MB "
        f"(workers RSS {result['worker_base_rss_mb']} MB, PSS {result['worker_base_pss_mb']} MB)"
    )
    print(
        f"  server loaded: RSS {result['server_rss_mb']:.0f} MB, "
        f"PSS {result['server_pss_mb']:.0f} MB"
    )
    print(
        f"  per connection, worker base included: RSS {result['rss_per_connection_kb']:.1f} KB, "
        f"PSS {result['pss_per_connection_kb']:.1f} KB"
    )
    print(
        f"  per connection, marginal: RSS {result['marginal_rss_per_connection_kb']:.1f} KB, "
        f"PSS {result['marginal_pss_per_connection_kb']:.1f} KB"
    )
    print(
        f"  kernel slab growth (both ends, outside RSS): "
        f"{result['kernel_slab_mb_both_ends']:.0f} MB; "
        f"client RSS per connection {result['client_rss_per_connection_kb']:.1f} KB"
    )
    if "redis_channels" in result:
        print(
            f"  Redis: {result['redis_channels']:,} channels; per session "
            f"{result['redis_used_memory_per_session_bytes']:.0f} B used memory, "
            f"{result['redis_rss_per_session_bytes']:.0f} B RSS"
        )
    if "registry_sessions_rows" in result:
        print(
            f"  registry (PostgreSQL): {result['registry_sessions_rows']:,} session rows, "
            f"{result['registry_presence_rows']:,} presence rows; per session "
            f"{result['registry_sessions_bytes_per_session']:.0f} + "
            f"{result['registry_presence_bytes_per_session']:.0f} B (tables and indexes)"
        )
    if result["errors"]:
        print(f"  errors: {result['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=0, help="default: connections / 16,000")
    parser.add_argument("--clients", type=int, default=0, help="default: connections / 18,000")
    parser.add_argument("--addresses", type=int, default=8, help="loopback addresses to use")
    parser.add_argument("--concurrency", type=int, default=16, help="handshakes per client")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--uvloop", action="store_true", help="workers run on uvloop")
    parser.add_argument(
        "--im",
        nargs="?",
        const="cluster",
        choices=("cluster", "single"),
        help="every connection logs in to the IM (on a cluster, or one process without one)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line too")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop  # noqa: PLC0415

        uvloop.run(client_main(args))
        return
    result = run(args)
    print_table(result)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
