"""The same Flare benchmark over WebSocket, QUIC and gRPC, in one run.

One handler set (`bench._service.BenchService`, as `bench.ws_bench` serves: a
100-byte unary echo and a server stream of 100-byte messages) is served by a
real `flare_runtime.Server` on one transport per server process, and called by
the same client code through `flare_runtime.connect` with a ``ws://``,
``quic://`` or ``grpc://`` URL; only the URL and its connect options differ.
Server and client are separate processes pinned to CPU 0 and 1, 127.0.0.1
only; every process has a hard deadline and the server exits when its stdin closes.

Event loops: WebSocket and gRPC run on uvloop (as their own benchmarks),
QUIC on the stdlib asyncio loop (docs/transports/quic.md: aioquic's timers
are erratic on uvloop). ``--asyncio`` runs all three on asyncio instead, for a
same-loop comparison. QUIC is always TLS 1.3; WebSocket and gRPC are
plaintext unless ``--tls`` (then ``wss://`` and ``grpcs://`` with the same dev
certificate).

Measured per transport (transports interleaved within each of ``--reps``
repetitions, a fresh server each time; medians reported):

* ``seq``      one unary echo at a time: p50 / p99 latency, CPU per call;
* ``unary_64`` 64 unary echoes in flight on ONE connection: calls/s, CPU per call;
* ``stream``   server streams of ``--stream-n`` messages, one after another for
               ``--duration`` s: msgs/s, CPU per message.

CPU per message is server (the server process) and client (this process),
from /proc; "other" is the rest of the machine during the 64-in-flight phase
(a noisy neighbour shows there). Prints a markdown table and one JSON line.

    .venv/bin/python -m bench.transports_bench             # ~1 min
    .venv/bin/python -m bench.transports_bench --quick     # ~20 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import tempfile
import time
from typing import Any

from google.protobuf.wrappers_pb2 import BytesValue, Int64Value

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
from bench._service import ECHO, FLARE_PAYLOAD, SERVICE, STREAM, BenchService
from flare_runtime import Server, connect
from flare_runtime.server import TLSFiles
from flare_runtime.transports.quic_certs import write_dev_certificate

TRANSPORTS = ("websocket", "quic", "grpc")
LABELS = {"websocket": "WebSocket", "quic": "QUIC", "grpc": "gRPC"}
INFLIGHT = 64


def loop_of(transport: str, args: argparse.Namespace) -> str:
    return "asyncio" if args.asyncio or transport == "quic" else "uvloop"


def uses_tls(transport: str, args: argparse.Namespace) -> bool:
    return bool(args.tls) or transport == "quic"


# ---------------------------------------------------------------------------- server


async def serve(args: argparse.Namespace) -> None:
    server = Server([(SERVICE, BenchService())])
    tls = TLSFiles(args.cert, args.key) if uses_tls(args.transport, args) else None
    await server.start(listen={args.transport: f"{LOOPBACK}:0"}, tls=tls)
    print(f"READY {server.port(args.transport)}", flush=True)
    await asyncio.Event().wait()  # until stdin closes (exit_when_stdin_closes)


def server_main(args: argparse.Namespace) -> None:
    set_deadline(300)
    pin_cpu(SERVER_CPU)
    exit_when_stdin_closes()
    run_loop(serve(args), loop_of(args.transport, args))


def start_server(transport: str, args: argparse.Namespace) -> ServerProcess:
    argv = ["-m", "bench.transports_bench", "--role", "server", "--transport", transport]
    argv += ["--cert", args.cert, "--key", args.key]
    argv += ["--tls"] * bool(args.tls) + ["--asyncio"] * bool(args.asyncio)
    return ServerProcess(argv, ready_timeout=30, close_timeout=5)


# ---------------------------------------------------------------------------- client


def target(transport: str, port: int, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The URL and connect options for `transport`; the only per-transport client code."""
    if transport == "quic":
        return f"quic://localhost:{port}", {"ca_file": args.cert, "tickets": None}
    scheme = {"websocket": "ws", "grpc": "grpc"}[transport]
    if args.tls:
        context = ssl.create_default_context(cafile=args.cert)
        return f"{scheme}s://localhost:{port}", {"ssl_context": context}
    return f"{scheme}://{LOOPBACK}:{port}", {}


async def run_client(transport: str, port: int, server_pid: int, args: argparse.Namespace) -> Any:
    url, options = target(transport, port, args)
    result: dict[str, dict[str, float]] = {}
    async with connect(url, **options) as channel:
        request = BytesValue(value=FLARE_PAYLOAD)

        async def call(_: int) -> BytesValue:
            return await channel.unary_unary(ECHO, request)

        result["seq"] = await measure_sequential(
            call, args.seq_n, warmup=300, server_pid=server_pid
        )
        window = await measure_closed_loop(
            call, INFLIGHT, warmup=args.warmup, duration=args.duration, server_pid=server_pid
        )
        result["unary_64"] = window.per_message()
        # Streams of --stream-n messages back to back for --duration s: every
        # transport is measured over about the same time, long enough for the
        # /proc CPU clock (10 ms ticks) even at WebSocket's rate.
        stream_request = Int64Value(value=args.stream_n)
        meter = Meter(server_pid)
        deadline = time.perf_counter() + args.duration
        received = 0
        while time.perf_counter() < deadline:
            async for _ in channel.unary_stream(STREAM, stream_request):
                received += 1
        assert received % args.stream_n == 0, (received, args.stream_n)
        stream = meter.finish(received).per_message()
        del stream["other_cpu_pct"]  # reported once, for the 64-in-flight phase
        result["stream"] = stream
    return result


# ---------------------------------------------------------------------------- report

ROWS = (
    ("sequential unary p50 (µs)", "seq", "p50_us", 1),
    ("sequential unary p99 (µs)", "seq", "p99_us", 1),
    ("sequential: server CPU µs/call", "seq", "server_us_per_msg", 1),
    ("sequential: client CPU µs/call", "seq", "client_us_per_msg", 1),
    (f"{INFLIGHT} in flight, one connection (calls/s)", "unary_64", "msgs_per_s", 0),
    (f"{INFLIGHT} in flight: server CPU µs/call", "unary_64", "server_us_per_msg", 1),
    (f"{INFLIGHT} in flight: client CPU µs/call", "unary_64", "client_us_per_msg", 1),
    ("server stream (msgs/s)", "stream", "msgs_per_s", 0),
    ("server stream: server CPU µs/msg", "stream", "server_us_per_msg", 1),
    ("server stream: client CPU µs/msg", "stream", "client_us_per_msg", 1),
    (f"other processes during {INFLIGHT} in flight (% CPU)", "unary_64", "other_cpu_pct", 0),
)


def markdown_table(summary: dict[str, Any], args: argparse.Namespace) -> str:
    columns = {
        f"{LABELS[t]} ({loop_of(t, args)}{', TLS' if uses_tls(t, args) else ''})": t
        for t in summary
    }
    return table_of(summary, columns)


def table_of(summary: dict[str, Any], columns: dict[str, str]) -> str:
    """`ROWS` of `summary` as a markdown table, a column per header (`columns`: header → key)."""
    lines = [
        "| measure | " + " | ".join(columns) + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for label, phase, key, digits in ROWS:
        cells = [f"{summary[kind][phase][key]:,.{digits}f}" for kind in columns.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relative_to(summary: dict[str, Any], base: str) -> dict[str, dict[str, float]]:
    """Each other transport's throughput and CPU per message as a multiple of `base`'s."""

    def cpu(figures: dict[str, float]) -> float:
        return figures["server_us_per_msg"] + figures["client_us_per_msg"]

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    reference = summary[base]
    return {
        transport: {
            "unary_64_throughput": ratio(
                figures["unary_64"]["msgs_per_s"], reference["unary_64"]["msgs_per_s"]
            ),
            "unary_64_cpu_per_call": ratio(cpu(figures["unary_64"]), cpu(reference["unary_64"])),
            "stream_throughput": ratio(
                figures["stream"]["msgs_per_s"], reference["stream"]["msgs_per_s"]
            ),
            "stream_cpu_per_msg": ratio(cpu(figures["stream"]), cpu(reference["stream"])),
            "seq_p50_added_us": round(figures["seq"]["p50_us"] - reference["seq"]["p50_us"], 1),
        }
        for transport, figures in summary.items()
        if transport != base
    }


def bench_main(args: argparse.Namespace) -> None:
    set_deadline(900)
    pin_cpu(CLIENT_CPU)
    started = time.perf_counter()
    transports = [t for t in TRANSPORTS if t in args.transports]
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    with tempfile.TemporaryDirectory(prefix="flare-transports-bench-") as directory:
        files = write_dev_certificate(directory)
        args.cert, args.key = str(files.certificate), str(files.private_key)
        for _ in range(args.reps):  # interleaved, so a noisy neighbour hits every transport
            for transport in transports:
                server = start_server(transport, args)
                try:
                    coroutine = run_client(transport, server.port, server.pid, args)
                    runs[transport].append(run_loop(coroutine, loop_of(transport, args)))
                finally:
                    server.close()
    summary = {t: medians(results) for t, results in runs.items()}
    relative = relative_to(summary, transports[0])
    report = {
        "bench": "transports_bench",
        "reps": args.reps,
        "payload_bytes": 100,
        "inflight": INFLIGHT,
        "stream_n": args.stream_n,
        "loops": {t: loop_of(t, args) for t in transports},
        "tls": {t: uses_tls(t, args) for t in transports},
        "transports": summary,
        f"relative_to_{transports[0]}": relative,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(
        f"Flare over each transport: 100-byte unary echo and server stream, server and "
        f"client pinned to one core each, median of {args.reps} interleaved reps\n"
    )
    print(markdown_table(summary, args))
    print()
    base = LABELS[transports[0]]
    for transport, ratios in relative.items():
        print(
            f"{LABELS[transport]} / {base}: {INFLIGHT}-in-flight calls/s "
            f"{ratios['unary_64_throughput']:.2f}x, CPU per call (both sides) "
            f"{ratios['unary_64_cpu_per_call']:.2f}x; stream msgs/s "
            f"{ratios['stream_throughput']:.2f}x, CPU per message "
            f"{ratios['stream_cpu_per_msg']:.2f}x; sequential p50 "
            f"{ratios['seq_p50_added_us']:+.0f} µs"
        )
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["bench", "server"], default="bench")
    parser.add_argument("--transport", choices=TRANSPORTS, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument(
        "--transports",
        nargs="+",
        choices=TRANSPORTS,
        default=list(TRANSPORTS),
        help="which transports to run (default: all three)",
    )
    parser.add_argument("--tls", action="store_true", help="wss:// and grpcs:// (QUIC always is)")
    parser.add_argument("--asyncio", action="store_true", help="every transport on asyncio")
    add_phase_options(parser)
    parser.add_argument("--quick", action="store_true", help="one short rep (smoke run)")
    args = parser.parse_args()
    if args.role == "server":
        server_main(args)
        return
    if args.quick:
        args.reps, args.seq_n, args.duration = 1, 500, 1.0
    bench_main(args)


def add_phase_options(parser: argparse.ArgumentParser) -> None:
    """``--reps`` and the options `run_client` reads (phase sizes). A bench adds its own
    ``--quick`` (`bench.run_all` looks for it in the source)."""
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seq-n", type=int, default=3000)
    parser.add_argument("--stream-n", type=int, default=10_000, help="messages per stream")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)


if __name__ == "__main__":
    main()
