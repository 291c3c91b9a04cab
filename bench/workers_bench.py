"""Per-worker base memory of ``flare serve --workers N``: forked workers vs spawned processes.

::

    .venv/bin/python -m bench.workers_bench [--workers 4]

For each server (`bench._scale_app`: the echo service over WebSocket; the
same over WebSocket, QUIC and gRPC; the echo service in a process that also
imported the IM and the Redis cluster broker), with no connection open:

* **fork** (what ``--workers`` does): ``flare serve APP ... --workers N``; the
  supervisor imports the served transports, freezes the garbage collector's
  view of them and forks, so the workers share those pages;
* **spawn**: N separate ``flare serve APP ...`` processes (what a
  spawn-started worker costs: every process imports everything itself);
* for the IM server, fork again with ``--preload`` of the IM and Redis
  modules, which the supervisor then imports once for all workers.

Per worker: RSS (every page it maps, shared ones included), PSS (shared
pages split between the processes sharing them: what N workers really cost
together is the sum of PSS) and USS (its private pages). The goal is a base
RSS of at most 40 MB per worker; the figure that decides how many workers a
host can afford is PSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._scale_app import IM_IMPORTS

ROOT = Path(__file__).resolve().parent.parent
WORKER_READY = re.compile(r"^flare: worker (\d+) ready \(pid (\d+)\)$")
SERVING = re.compile(r"^flare: serving (\S+) on port (\d+) ")

PRELOAD_IM = tuple(arg for module in IM_IMPORTS for arg in ("--preload", module))
SERVERS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "echo, WebSocket": ("bench._scale_app:server", ("websocket",), ()),
    "echo, WebSocket+QUIC+gRPC": ("bench._scale_app:server", ("websocket", "quic", "grpc"), ()),
    "echo, WebSocket, IM+cluster imported": (
        "bench._scale_app:server_with_im_imports",
        ("websocket",),
        (),
    ),
    "  the same, IM+cluster --preload": (
        "bench._scale_app:server_with_im_imports",
        ("websocket",),
        PRELOAD_IM,
    ),
}
"""Name -> (target, transports, extra ``flare serve --workers`` arguments)."""
OPTIONS = {"websocket": "--ws", "quic": "--quic", "grpc": "--grpc"}


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS of `pid` in KiB (/proc/PID/smaps_rollup)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                fields[name] = int(rest.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def _command(target: str, transports: tuple[str, ...], cert: tuple[str, str]) -> list[str]:
    command = [sys.executable, "-m", "flare_runtime.cli", "serve", target]
    for name in transports:
        command += [OPTIONS[name], "127.0.0.1:0"]
    if "quic" in transports:
        command += ["--tls-cert", cert[0], "--tls-key", cert[1]]
    return command


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    return env


def _wait_serving(process: subprocess.Popen[str], transports: int) -> list[int]:
    """Read `process`'s stdout until it serves; the worker pids it printed."""
    assert process.stdout is not None
    pids: list[int] = []
    serving = 0
    while serving < transports:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"flare serve exited ({process.wait()})")
        ready = WORKER_READY.match(line.strip())
        if ready:
            pids.append(int(ready.group(2)))
        if SERVING.match(line):
            serving += 1
    return pids


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def measure_fork(
    command: list[str], workers: int, transports: int, extra: tuple[str, ...]
) -> dict[str, Any]:
    process = subprocess.Popen(
        [*command, "--workers", str(workers), *extra],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = _wait_serving(process, transports)
        time.sleep(1.0)
        return {
            "supervisor": memory_kb(process.pid),
            "workers": [memory_kb(pid) for pid in pids],
        }
    finally:
        _stop(process)


def measure_spawn(command: list[str], workers: int, transports: int) -> dict[str, Any]:
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    try:
        for process in processes:
            _wait_serving(process, transports)
        time.sleep(1.0)
        return {"workers": [memory_kb(process.pid) for process in processes]}
    finally:
        for process in processes:
            _stop(process)


def _mean(values: list[dict[str, int]], key: str) -> float:
    return sum(value[key] for value in values) / len(values) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from flare_runtime.transports.quic_certs import write_dev_certificate  # noqa: PLC0415

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        files = write_dev_certificate(Path(directory))
        cert = (str(files.certificate), str(files.private_key))
        for name, (target, transports, extra) in SERVERS.items():
            command = _command(target, transports, cert)
            fork = measure_fork(command, args.workers, len(transports), extra)
            results[name] = {"fork": fork}
            if not extra:  # --preload means nothing without a supervisor
                results[name]["spawn"] = measure_spawn(command, args.workers, len(transports))
    print(f"per worker, {args.workers} workers, no connections (MB; mean of the workers)")
    print(f"{'server':40} {'start':6} {'RSS':>6} {'PSS':>6} {'USS':>6}   supervisor RSS/PSS")
    for name, result in results.items():
        for start in ("fork", "spawn"):
            if start not in result:
                continue
            workers = result[start]["workers"]
            line = (
                f"{name:40} {start:6} {_mean(workers, 'rss'):6.1f} {_mean(workers, 'pss'):6.1f} "
                f"{_mean(workers, 'uss'):6.1f}"
            )
            supervisor = result[start].get("supervisor")
            if supervisor:
                line += f"   {supervisor['rss'] / 1024:.1f}/{supervisor['pss'] / 1024:.1f}"
            print(line)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
