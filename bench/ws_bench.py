"""Flare over WebSocket vs raw `websockets`, in the same run.

Both sides use uvloop; server and client are separate processes pinned to
CPU 0 and 1 (127.0.0.1 only). The raw side is the baseline of
shared/baselines/ws_echo.py: a `websockets` server echoing binary messages,
permessage-deflate off, one client connection with a reader task matching
responses to requests by an 8-byte id.

Measured per side (runs interleaved, ``--reps`` times, medians reported):

* ``seq``      one 100-byte unary echo at a time: p50 / p99 latency
* ``inflight`` 64 echoes in flight on ONE connection: messages/s
* ``stream``   one server stream of 100-byte messages: messages/s
* ``idle``     server RSS per idle connection (Flare: authenticated with a JWT
               at connect), over ``--idle-conns`` connections

The Flare server is a real `flare_runtime.Server` with JWT auth configured;
the echo handler returns its request. With ``--metrics`` it also serves
Prometheus metrics (`flare_runtime.observability.metrics.serve_metrics`) and
is scraped once a second over HTTP by a task of its own (a Prometheus at a
1 s interval; the scrape's cost lands on the server's CPU, as it would).
Prints a table and the ratios the runtime issue sets targets for (>= 0.8x
throughput, <= +25 us p50, <= 16 KB idle per client).

    .venv/bin/python -m bench.ws_bench             # ~60 s
    .venv/bin/python -m bench.ws_bench --quick     # ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from google.protobuf import wrappers_pb2
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._measure import (  # noqa: E402
    CLIENT_CPU,
    LOOPBACK,
    SERVER_CPU,
    Call,
    ServerProcess,
    measure_closed_loop,
    measure_sequential,
    medians,
    pin_cpu,
    raise_fd_limit,
    rss,
    set_deadline,
)
from bench._service import ECHO, FLARE_PAYLOAD, SERVICE, STREAM, BenchService  # noqa: E402
from flare_runtime import JWTAuth, Server, connect  # noqa: E402
from flare_runtime.auth import issue_jwt  # noqa: E402
from flare_runtime.wire.client import WireChannel  # noqa: E402

PAYLOAD = 100
FILLER = bytes(range(92))
ID = struct.Struct(">Q")
JWT_KEY = "flare-bench-signing-key-0123456789abcdef-0123"
BytesValue = wrappers_pb2.BytesValue
Int64Value = wrappers_pb2.Int64Value

# ---------------------------------------------------------------------------- server side


async def _serve_commands(count: Callable[[], int]) -> None:
    """Answer STATS lines on stdin with 'STATS <connections> <rss>'; exit on EOF."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def reader() -> None:
        for line in sys.stdin:
            if line.strip() == "STATS":

                def report() -> None:
                    gc.collect()
                    print(f"STATS {count()} {rss()}", flush=True)

                loop.call_soon_threadsafe(report)
        loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=reader, daemon=True).start()
    await done


async def serve_flare(metrics: bool) -> None:
    server = Server([(SERVICE, BenchService())], auth=JWTAuth(JWT_KEY))
    scraping: asyncio.Task[None] | None = None
    if metrics:
        from flare_runtime.observability.metrics import serve_metrics  # noqa: PLC0415

        endpoint = serve_metrics(server, f"{LOOPBACK}:0")
    await server.start(websocket=f"{LOOPBACK}:0")
    if metrics:
        scraping = asyncio.ensure_future(_scrape_every_second(endpoint.port))
    print(f"READY {server.port('websocket')}", flush=True)
    await _serve_commands(lambda: len(server.connections))
    if scraping is not None:
        scraping.cancel()
    await server.shutdown(grace=0)


async def _scrape_every_second(port: int) -> None:
    while True:
        await asyncio.sleep(1.0)
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        body = await reader.read()
        writer.close()
        assert b"flare_server_calls_total" in body


async def serve_raw() -> None:
    open_connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal open_connections
        open_connections += 1
        try:
            async for message in ws:
                if isinstance(message, str):  # "stream N": N 100-byte messages
                    data = bytes(PAYLOAD)
                    for _ in range(int(message.split()[1])):
                        await ws.send(data)
                else:
                    await ws.send(message)
        finally:
            open_connections -= 1

    async with ws_serve(handler, LOOPBACK, 0, compression=None, backlog=4096) as server:
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await _serve_commands(lambda: open_connections)


def start_server(kind: str, metrics: bool = False) -> ServerProcess:
    flags = ["--metrics"] if metrics and kind == "flare" else []
    return ServerProcess(["-m", "bench.ws_bench", "--role", "server", "--kind", kind, *flags])


def server_stats(server: ServerProcess) -> tuple[int, int]:
    """(open connections, RSS bytes) of the server, asked over its stdin."""
    _, connections, memory = server.request("STATS").split()
    return int(connections), int(memory)


# ---------------------------------------------------------------------------- measuring


async def measure_seq(request: Call, n: int) -> dict[str, float]:
    return await measure_sequential(request, n, warmup=300)


async def measure_inflight(
    request: Call, inflight: int, duration: float, pid: int
) -> dict[str, float]:
    window = await measure_closed_loop(
        request, inflight, warmup=0.5, duration=duration, server_pid=pid
    )
    return window.per_message()


class RawClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def sequential(self, i: int) -> bytes:
        await self.ws.send(ID.pack(i) + FILLER)
        message = await self.ws.recv()
        assert isinstance(message, bytes)
        return message

    def start_reader(self) -> None:
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            assert isinstance(message, bytes)
            self.pending.pop(message[:8]).set_result(message)

    async def pipelined(self, i: int) -> bytes:
        message = ID.pack(i) + FILLER
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[message[:8]] = future
        await self.ws.send(message)
        return await future


async def run_raw(port: int, args: argparse.Namespace, pid: int) -> dict[str, float]:
    url = f"ws://{LOOPBACK}:{port}/"
    result: dict[str, float] = {}
    async with ws_connect(url, compression=None) as ws:
        client = RawClient(ws)
        result.update(await measure_seq(client.sequential, args.seq_n))
        await ws.send(f"stream {args.stream_n}")
        started = time.perf_counter()
        for _ in range(args.stream_n):
            await ws.recv()
        result["stream_msgs_per_s"] = args.stream_n / (time.perf_counter() - started)
        client.start_reader()
        inflight = await measure_inflight(client.pipelined, 64, args.duration, pid)
        result["inflight_msgs_per_s"] = inflight["msgs_per_s"]
        result["server_us_per_msg"] = inflight["server_us_per_msg"]
        result["client_us_per_msg"] = inflight["client_us_per_msg"]
        result["other_cpu_pct"] = inflight["other_cpu_pct"]
    return result


async def run_flare(port: int, args: argparse.Namespace, pid: int) -> dict[str, float]:
    url = f"ws://{LOOPBACK}:{port}"
    result: dict[str, float] = {}
    token = issue_jwt(JWT_KEY, "bench")
    async with connect(url, token=token) as channel:
        request = BytesValue(value=FLARE_PAYLOAD)

        async def call(_: int) -> BytesValue:
            return await channel.unary_unary(ECHO, request)

        result.update(await measure_seq(call, args.seq_n))
        started = time.perf_counter()
        received = 0
        async for _ in channel.unary_stream(STREAM, Int64Value(value=args.stream_n)):
            received += 1
        assert received == args.stream_n
        result["stream_msgs_per_s"] = args.stream_n / (time.perf_counter() - started)
        inflight = await measure_inflight(call, 64, args.duration, pid)
        result["inflight_msgs_per_s"] = inflight["msgs_per_s"]
        result["server_us_per_msg"] = inflight["server_us_per_msg"]
        result["client_us_per_msg"] = inflight["client_us_per_msg"]
        result["other_cpu_pct"] = inflight["other_cpu_pct"]
    return result


async def measure_idle(kind: str, server: ServerProcess, count: int) -> float:
    """Server RSS bytes per idle connection (authenticated, for Flare)."""
    url = f"ws://{LOOPBACK}:{server.port}"
    token = issue_jwt(JWT_KEY, "idle")
    # Warm up: open and close some connections so allocator pools exist.
    warm: list[Any] = []
    for _ in range(50):
        warm.append(await _open(kind, url, token))
    for connection in warm:
        await connection.close()
    await asyncio.sleep(0.3)
    _, before = server_stats(server)
    opened: list[Any] = []
    for start in range(0, count, 200):
        batch = await asyncio.gather(
            *(_open(kind, url, token) for _ in range(min(200, count - start)))
        )
        opened.extend(batch)
    await asyncio.sleep(0.5)
    connections, after = server_stats(server)
    assert connections == count, (connections, count)
    for connection in opened:
        await connection.close()
    return (after - before) / count


async def _open(kind: str, url: str, token: str) -> Any:
    if kind == "raw":
        return await ws_connect(url, compression=None)
    channel = await connect(url, token=token)
    assert isinstance(channel, WireChannel)
    # One call proves the connection is up and authenticated.
    await channel.unary_unary(ECHO, BytesValue(value=b"x"))
    return channel


async def client_run(kind: str, args: argparse.Namespace) -> dict[str, float]:
    server = start_server(kind, args.metrics)
    try:
        runner = run_raw if kind == "raw" else run_flare
        result = await runner(server.port, args, server.pid)
        if args.idle_conns:
            result["idle_bytes_per_conn"] = await measure_idle(kind, server, args.idle_conns)
        return result
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["bench", "server"], default="bench")
    parser.add_argument("--kind", choices=["raw", "flare"], default="flare")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seq-n", type=int, default=3000)
    parser.add_argument("--stream-n", type=int, default=50_000)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--idle-conns", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="1 rep, shorter phases")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    parser.add_argument(
        "--metrics", action="store_true", help="Flare serves /metrics, scraped every second"
    )
    args = parser.parse_args()
    raise_fd_limit()
    if args.role == "server":
        pin_cpu(SERVER_CPU)
        set_deadline(300)
        uvloop.run(serve_flare(args.metrics) if args.kind == "flare" else serve_raw())
        return
    if args.quick:
        args.reps, args.seq_n, args.stream_n, args.duration = 1, 1000, 20_000, 1.0
        args.idle_conns = min(args.idle_conns, 1000)
    set_deadline(600)
    pin_cpu(CLIENT_CPU)
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "flare": []}
    for _ in range(args.reps):
        for kind in ("raw", "flare"):
            runs[kind].append(uvloop.run(client_run(kind, args)))
    summary = {kind: medians(results) for kind, results in runs.items()}
    raw, flare = summary["raw"], summary["flare"]
    ratios = {
        "inflight_ratio": flare["inflight_msgs_per_s"] / raw["inflight_msgs_per_s"],
        "stream_ratio": flare["stream_msgs_per_s"] / raw["stream_msgs_per_s"],
        "seq_p50_added_us": flare["p50_us"] - raw["p50_us"],
    }
    if "idle_bytes_per_conn" in flare:
        ratios["idle_kb_per_conn"] = flare["idle_bytes_per_conn"] / 1000
    report = {
        "bench": "ws_bench",
        "metrics": args.metrics,
        "reps": args.reps,
        "raw": raw,
        "flare": flare,
        **ratios,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"Flare over WebSocket vs raw websockets (uvloop, 100-byte messages, median of {args.reps})"
    )
    print(f"{'measure':<28}{'raw':>12}{'flare':>12}{'ratio':>10}")
    rows = [
        ("seq p50 (us)", "p50_us"),
        ("seq p99 (us)", "p99_us"),
        ("64 in flight (msgs/s)", "inflight_msgs_per_s"),
        ("server CPU (us/msg)", "server_us_per_msg"),
        ("client CPU (us/msg)", "client_us_per_msg"),
        ("other processes (% CPU)", "other_cpu_pct"),
        ("server stream (msgs/s)", "stream_msgs_per_s"),
        ("idle RSS per conn (bytes)", "idle_bytes_per_conn"),
    ]
    for label, key in rows:
        if key in raw:
            ratio = f"{flare[key] / raw[key]:>10.2f}" if raw[key] else f"{'-':>10}"
            print(f"{label:<28}{raw[key]:>12.1f}{flare[key]:>12.1f}{ratio}")
    print(
        f"\ntargets: 64-in-flight >= 0.8x raw: {ratios['inflight_ratio']:.2f}x; "
        f"seq p50 added <= 25 us: {ratios['seq_p50_added_us']:+.1f} us; "
        f"idle per authenticated client <= 16 KB: "
        f"{ratios.get('idle_kb_per_conn', float('nan')):.1f} KB"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
