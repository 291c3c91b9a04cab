"""The cost of mounting Flare in an ASGI app: the native WebSocket listener vs uvicorn + Starlette.

Four servers, in one run:

* ``native``: the Flare service of `bench._service.BenchService` (a 100-byte
  unary echo and a server stream) on ``server.start(websocket=...)``, Flare's
  own WebSocket listener (built on `websockets`);
* ``asgi``: the same service through `flare_runtime.asgi.FlareASGI` at a
  ``WebSocketRoute`` of a Starlette app under uvicorn (its websockets-sansio
  implementation; permessage-deflate off, as docs/asgi.md recommends);
* ``raw-websockets``: the raw baseline of the native listener, `bench.ws_bench`'s
  `websockets` echo server (binary messages echoed, ``stream N`` answered with
  N 100-byte messages);
* ``raw-uvicorn``: the raw baseline of the mount, the same echo as a bare ASGI
  endpoint at a ``WebSocketRoute`` of the same Starlette app under the same uvicorn.

All on uvloop, server pinned to CPU 0 and client to CPU 1 (separate
processes). The Flare servers are measured with `bench.transports_bench`'s
client (``ws://``), the raw ones with `bench.ws_bench`'s raw client (an 8-byte
id per message, a reader task for the pipelined phase), over the same phases:
sequential p50/p99, 64 in flight on one connection (calls/s, CPU per call),
server streams for ``--duration`` s. The four are interleaved within each of
``--reps`` repetitions, a fresh server each time; medians reported, then the
ratios: what the mount costs Flare (asgi / native), what uvicorn + Starlette
cost a raw echo (raw-uvicorn / raw-websockets), and Flare over its raw
baseline on each side. Prints a markdown table and one JSON line.

    .venv/bin/python -m bench.asgi_bench             # 2-5 min on the shared 2-core machine
    .venv/bin/python -m bench.asgi_bench --quick     # ~30 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect as ws_connect

from bench._measure import (
    CLIENT_CPU,
    LOOPBACK,
    SERVER_CPU,
    Meter,
    ServerProcess,
    exit_when_stdin_closes,
    measure_closed_loop,
    measure_sequential,
    medians,
    pin_cpu,
    run_loop,
    set_deadline,
)
from bench._service import SERVICE, BenchService
from bench.transports_bench import (
    INFLIGHT,
    add_phase_options,
    relative_to,
    run_client,
    table_of,
)
from bench.ws_bench import PAYLOAD, RawClient
from bench.ws_bench import start_server as start_raw_websockets
from flare_runtime import Server
from flare_runtime.asgi import FlareASGI, Receive, Scope, Send
from flare_runtime.testing.asgi_harness import UvicornServer

KINDS = ("native", "asgi", "raw-websockets", "raw-uvicorn")
LABELS = {
    "native": "Flare, native listener",
    "asgi": "Flare, uvicorn + Starlette",
    "raw-websockets": "raw echo, websockets",
    "raw-uvicorn": "raw echo, uvicorn + Starlette",
}


# ---------------------------------------------------------------------------- servers


class RawEcho:
    """The raw baseline as an ASGI endpoint: `bench.ws_bench`'s echo protocol.

    A class, not a function: Starlette hands a function endpoint a ``WebSocket``
    object, an ASGI application the raw scope, receive and send (as `FlareASGI`).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            data = message.get("bytes")
            if data is not None:
                await send({"type": "websocket.send", "bytes": data})
                continue
            payload = bytes(PAYLOAD)  # "stream N": N 100-byte messages
            for _ in range(int(message["text"].split()[1])):
                await send({"type": "websocket.send", "bytes": payload})


async def serve(kind: str) -> None:
    if kind == "native":
        server = Server([(SERVICE, BenchService())])
        await server.start(websocket=f"{LOOPBACK}:0")
        port = server.port("websocket")
    elif kind == "asgi":
        flare = FlareASGI(Server([(SERVICE, BenchService())]), drain_on_signal=False)
        app = Starlette(routes=[WebSocketRoute("/", flare)], lifespan=flare.lifespan)
        port = await UvicornServer(app).start()
    else:
        port = await UvicornServer(Starlette(routes=[WebSocketRoute("/", RawEcho())])).start()
    print(f"READY {port}", flush=True)
    await asyncio.Event().wait()  # until stdin closes (exit_when_stdin_closes)


def server_main(args: argparse.Namespace) -> None:
    set_deadline(300)
    pin_cpu(SERVER_CPU)
    exit_when_stdin_closes()
    run_loop(serve(args.kind))


def start_server(kind: str) -> ServerProcess:
    if kind == "raw-websockets":
        return start_raw_websockets("raw")
    argv = ["-m", "bench.asgi_bench", "--role", "server", "--kind", kind]
    return ServerProcess(argv, ready_timeout=30, close_timeout=5)


# ---------------------------------------------------------------------------- raw client


async def run_raw_client(port: int, server_pid: int, args: argparse.Namespace) -> Any:
    """`run_client`'s phases and figures over a raw echo server."""
    result: dict[str, dict[str, float]] = {}
    async with ws_connect(f"ws://{LOOPBACK}:{port}/", compression=None) as ws:
        client = RawClient(ws)
        result["seq"] = await measure_sequential(
            client.sequential, args.seq_n, warmup=300, server_pid=server_pid
        )
        client.start_reader()
        window = await measure_closed_loop(
            client.pipelined,
            INFLIGHT,
            warmup=args.warmup,
            duration=args.duration,
            server_pid=server_pid,
        )
        result["unary_64"] = window.per_message()
        assert client.reader is not None
        client.reader.cancel()
        await asyncio.gather(client.reader, return_exceptions=True)
        meter = Meter(server_pid)
        deadline = time.perf_counter() + args.duration
        received = 0
        while time.perf_counter() < deadline:
            await ws.send(f"stream {args.stream_n}")
            for _ in range(args.stream_n):
                await ws.recv()
            received += args.stream_n
        stream = meter.finish(received).per_message()
        del stream["other_cpu_pct"]  # reported once, for the 64-in-flight phase
        result["stream"] = stream
    return result


# ---------------------------------------------------------------------------- report


def ratios(summary: dict[str, Any], kind: str, base: str) -> dict[str, float]:
    """`relative_to`'s ratios of `kind` over `base`, plus the sequential p50 ratio."""
    figures = relative_to({base: summary[base], kind: summary[kind]}, base)[kind]
    p50 = summary[kind]["seq"]["p50_us"] / summary[base]["seq"]["p50_us"]
    return {**figures, "seq_p50": round(p50, 3)}


COMPARISONS = (
    ("asgi", "native", "Flare mounted / Flare native"),
    ("raw-uvicorn", "raw-websockets", "raw uvicorn + Starlette / raw websockets"),
    ("native", "raw-websockets", "Flare native / raw websockets"),
    ("asgi", "raw-uvicorn", "Flare mounted / raw uvicorn + Starlette"),
)


def bench_main(args: argparse.Namespace) -> None:
    set_deadline(900)
    pin_cpu(CLIENT_CPU)
    started = time.perf_counter()
    args.tls = False  # what run_client reads: plain ws:// for Flare
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for _ in range(args.reps):  # interleaved, so a noisy neighbour hits all four
        for kind in KINDS:
            server = start_server(kind)
            try:
                if kind.startswith("raw"):
                    client = run_raw_client(server.port, server.pid, args)
                else:
                    client = run_client("websocket", server.port, server.pid, args)
                runs[kind].append(run_loop(client))
            finally:
                server.close()
    summary = {kind: medians(results) for kind, results in runs.items()}
    compared = {f"{kind}/{base}": ratios(summary, kind, base) for kind, base, _ in COMPARISONS}
    report = {
        "bench": "asgi_bench",
        "reps": args.reps,
        "payload_bytes": 100,
        "inflight": INFLIGHT,
        "stream_n": args.stream_n,
        "kinds": summary,
        "ratios": compared,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(
        "Flare's WebSocket endpoint, native listener vs mounted in Starlette under uvicorn, "
        "and the raw echo on each: 100-byte messages, uvloop, median of "
        f"{args.reps} interleaved reps\n"
    )
    print(table_of(summary, {LABELS[kind]: kind for kind in KINDS}))
    print()
    for kind, base, label in COMPARISONS:
        r = compared[f"{kind}/{base}"]
        print(
            f"{label}: {INFLIGHT}-in-flight calls/s {r['unary_64_throughput']:.2f}x, CPU per "
            f"call (both sides) {r['unary_64_cpu_per_call']:.2f}x; sequential p50 "
            f"{r['seq_p50']:.2f}x ({r['seq_p50_added_us']:+.0f} µs); stream msgs/s "
            f"{r['stream_throughput']:.2f}x, CPU per message {r['stream_cpu_per_msg']:.2f}x"
        )
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["bench", "server"], default="bench")
    parser.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    add_phase_options(parser)
    parser.add_argument("--quick", action="store_true", help="one short rep (smoke run)")
    args = parser.parse_args()
    if args.role == "server":
        server_main(args)
        return
    if args.quick:
        args.reps, args.seq_n, args.duration = 1, 500, 1.0
    bench_main(args)


if __name__ == "__main__":
    main()
