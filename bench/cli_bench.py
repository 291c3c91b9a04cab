"""One-shot ``flare call`` over ws://: wall and CPU time of the whole command.

A user types ``flare call ws://host:port /pkg.Service/Method '{...}'`` and waits:
interpreter start, imports, connecting, server reflection, the call, closing.
This benchmark runs that command N times, each a fresh process, interleaved with
the two floors it is built on, in the same run:

* ``python -c pass``: the interpreter alone;
* a raw ``websockets`` client script: import websockets, connect, send 100
  bytes, read the echo, close (against a raw websockets echo server);
* ``flare call`` of a unary echo route, schema by reflection (no generated code:
  the route is a table built by hand, described from its routes).

Both servers run in one child process (pinned to CPU 0). Printed per command:
the fastest run (the best estimate of an idle machine: load only adds), median
and p90 wall time, and median CPU time (user + system of the child); the ratios;
and ``-X importtime`` of one ``flare call`` by top-level package (each module's
own time), so regressions show where they come from.

    .venv/bin/python -m bench.cli_bench [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench._measure import (
    ROOT,
    SERVER_CPU,
    ServerProcess,
    exit_when_stdin_closes,
    pin_cpu,
    set_deadline,
)

FLARE = str(Path(sys.executable).with_name("flare"))
RAW_CLIENT = """\
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1]) as ws:
        await ws.send(bytes(100))
        await ws.recv()
asyncio.run(main())
"""


# ---------------------------------------------------------------------------- the server child


async def serve() -> None:
    """Serve the bench echo service (Flare) and a raw websockets echo; print READY ports."""
    from websockets.asyncio.server import serve as websockets_serve  # noqa: PLC0415

    from bench._service import SERVICE, BenchService  # noqa: PLC0415
    from flare_runtime.server import Server  # noqa: PLC0415

    async def echo(ws: object) -> None:
        async for message in ws:  # type: ignore[attr-defined]
            await ws.send(message)  # type: ignore[attr-defined]

    server = Server([(SERVICE, BenchService())])
    await server.start(websocket="127.0.0.1:0")
    async with websockets_serve(echo, "127.0.0.1", 0) as raw:
        port = raw.sockets[0].getsockname()[1]
        print(f"READY {server.port('websocket')} {port}", flush=True)
        exit_when_stdin_closes()
        await asyncio.Event().wait()


# ---------------------------------------------------------------------------- measuring


def _environment() -> dict[str, str]:
    """The commands' environment, as a user's shell has it: no PYTHONPATH, and bytecode
    caches written (an installed Flare has them: pip compiles what it installs; the
    warm-up run writes them for this checkout)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(command: list[str]) -> tuple[float, float]:
    """Run `command` once; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=_environment(), cwd="/"
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed: {result.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def import_breakdown(command: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """(total import ms, [(top-level package, ms)...]) of one run of `command`.

    Each module's own import time (not counting the modules it imports) is
    added to its top-level package, so the packages' times add up to the total.
    """
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        capture_output=True,
        text=True,
        check=True,
        env=_environment(),
        cwd="/",
    )
    by_root: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match is None:
            continue
        self_us, _, _, name = match.groups()
        total += int(self_us) / 1000
        by_root[name.split(".")[0]] += int(self_us) / 1000
    return total, sorted(by_root.items(), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs of each command")
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        pin_cpu(SERVER_CPU)
        asyncio.run(serve())
        return
    set_deadline(600)
    runs = 5 if args.quick else args.runs
    server = ServerProcess(["-m", "bench.cli_bench", "--serve"], ready_timeout=60)
    try:
        flare_port, raw_port = server.ports
        call = [
            FLARE,
            "call",
            f"ws://127.0.0.1:{flare_port}",
            "/flarebench.Bench/Echo",
            json.dumps("A" * 132),  # a BytesValue of 98 bytes: 100 on the wire
        ]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "raw websockets script": [
                sys.executable,
                "-c",
                RAW_CLIENT,
                f"ws://127.0.0.1:{raw_port}",
            ],
            "flare call (reflection)": call,
        }
        timed(call)  # warm the file cache and the server's reflection answers
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():  # interleaved: load hits all alike
                samples[name].append(timed(command))
        total, roots = import_breakdown(["-m", "flare_runtime.cli", *call[1:]])
    finally:
        server.close()

    results: dict[str, dict[str, float]] = {}
    print(f"one-shot commands, {runs} runs each, interleaved (ms):")
    print(f"  {'command':<26} {'wall min':>9} {'wall p50':>9} {'wall p90':>9} {'cpu p50':>8}")
    for name, pairs in samples.items():
        walls = sorted(wall * 1000 for wall, _ in pairs)
        cpus = [cpu * 1000 for _, cpu in pairs]
        p90 = walls[min(len(walls) - 1, int(0.9 * len(walls)))]
        figures = {
            "wall_min_ms": walls[0],
            "wall_p50_ms": statistics.median(walls),
            "wall_p90_ms": p90,
            "cpu_p50_ms": statistics.median(cpus),
        }
        results[name] = figures
        print(
            f"  {name:<26} {walls[0]:>9.1f} {figures['wall_p50_ms']:>9.1f} {p90:>9.1f}"
            f" {figures['cpu_p50_ms']:>8.1f}"
        )
    flare = results["flare call (reflection)"]
    raw = results["raw websockets script"]
    floor = results["python -c pass"]
    ratio = flare["wall_p50_ms"] / raw["wall_p50_ms"]
    print(
        f"flare call / raw websockets script: wall p50 {ratio:.2f}x,"
        f" min {flare['wall_min_ms'] / raw['wall_min_ms']:.2f}x,"
        f" cpu {flare['cpu_p50_ms'] / raw['cpu_p50_ms']:.2f}x;"
        f" above python -c pass (min): {flare['wall_min_ms'] - floor['wall_min_ms']:.1f} ms"
    )
    print(f"imports of one flare call (-X importtime): {total:.1f} ms in all; by package:")
    for root, milliseconds in roots[:15]:
        print(f"  {root:<24} {milliseconds:>7.1f}")
    print(
        json.dumps(
            {
                "bench": "cli",
                "runs": runs,
                "results": results,
                "import_ms": round(total, 1),
                "imports": {root: round(ms, 1) for root, ms in roots[:15]},
            }
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
