"""The TypeScript client (`@flare/client` on Node) vs the Python client, same server, same run.

One Flare WebSocket server (bench.ws_bench's: the echo service, JWT auth, uvloop)
pinned to CPU 0; each client in turn pinned to CPU 1, interleaved ``--reps``
times, medians reported:

* ``p50_us`` / ``p99_us``  one 100-byte unary echo at a time (after 300 warm-up calls)
* ``inflight_msgs_per_s``  64 echoes in flight on ONE connection
* ``client_us_per_msg``    client CPU per echo at 64 in flight

The Node side is clients/typescript/bench/echo_bench.mjs over its dist/
(built here with tsc when missing); Node's packages come from
``bash .ci/services.d/55-typescript.sh``.

    .venv/bin/python -m bench.ts_client_bench            # ~40 s
    .venv/bin/python -m bench.ts_client_bench --quick    # ~15 s
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from google.protobuf.wrappers_pb2 import BytesValue  # noqa: E402

from bench._measure import (  # noqa: E402
    CLIENT_CPU,
    LOOPBACK,
    SERVER_CPU,
    ServerProcess,
    measure_closed_loop,
    measure_sequential,
    medians,
    pin_cpu,
    rounded,
    run_loop,
    set_deadline,
)
from bench._service import ECHO, FLARE_PAYLOAD  # noqa: E402
from bench.ws_bench import JWT_KEY  # noqa: E402
from flare_runtime import connect  # noqa: E402
from flare_runtime.auth import issue_jwt  # noqa: E402

PACKAGE = ROOT / "clients" / "typescript"


def build_runtime() -> None:
    """Compile clients/typescript to dist/ when it is missing or older than its sources."""
    dist = PACKAGE / "dist" / "index.js"
    newest = max(path.stat().st_mtime for path in (PACKAGE / "src").rglob("*.ts"))
    if dist.is_file() and dist.stat().st_mtime >= newest:
        return
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        sys.exit("clients/typescript/node_modules missing: bash .ci/services.d/55-typescript.sh")
    subprocess.run(["node", str(tsc), "-p", str(PACKAGE / "tsconfig.json")], check=True)


async def python_client(port: int, args: argparse.Namespace, pid: int) -> dict[str, float]:
    token = issue_jwt(JWT_KEY, "bench")
    async with connect(f"ws://{LOOPBACK}:{port}", token=token) as channel:
        request = BytesValue(value=FLARE_PAYLOAD)

        async def call(_: int) -> BytesValue:
            return await channel.unary_unary(ECHO, request)

        seq = await measure_sequential(call, args.seq_n, warmup=300)
        window = await measure_closed_loop(
            call, 64, warmup=0.5, duration=args.duration, server_pid=pid
        )
    figures = window.per_message()
    return {
        "p50_us": seq["p50_us"],
        "p99_us": seq["p99_us"],
        "inflight_msgs_per_s": figures["msgs_per_s"],
        "client_us_per_msg": figures["client_us_per_msg"],
    }


def node_client(port: int, args: argparse.Namespace) -> dict[str, float]:
    token = issue_jwt(JWT_KEY, "bench")
    result = subprocess.run(
        [
            "node",
            str(PACKAGE / "bench" / "echo_bench.mjs"),
            f"ws://{LOOPBACK}:{port}",
            token,
            str(args.seq_n),
            str(args.duration),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--seq-n", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1 rep, 1.5 s windows")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.duration, args.seq_n = 1, 1.5, 1000
    set_deadline(600)
    build_runtime()
    pin_cpu(CLIENT_CPU)  # the Node client inherits this affinity
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        server = ServerProcess(
            ["-m", "bench.ws_bench", "--role", "server", "--kind", "flare"],
            pin=SERVER_CPU,
            ready_timeout=30,
        )
        try:
            order = ["python", "node"] if rep % 2 == 0 else ["node", "python"]
            run: dict[str, Any] = {}
            for side in order:
                if side == "python":
                    run[side] = run_loop(python_client(server.port, args, server.pid))
                else:
                    run[side] = node_client(server.port, args)
            runs.append(run)
        finally:
            server.close()
    result = medians(runs)
    print(f"{'measure':<24}{'Python client':>16}{'Node client':>16}{'Node/Python':>14}")
    for key in ("p50_us", "p99_us", "inflight_msgs_per_s", "client_us_per_msg"):
        python, node = result["python"][key], result["node"][key]
        print(f"{key:<24}{python:>16.1f}{node:>16.1f}{node / python:>14.2f}")
    print(json.dumps({"bench": "ts_client", "reps": args.reps, **rounded(result)}))


if __name__ == "__main__":
    main()
