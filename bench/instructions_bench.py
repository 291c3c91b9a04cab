"""CPU instructions per call, counted by valgrind's callgrind: a measure load cannot move.

The transport benches swing by up to 2x on the shared development machine; an
instruction count does not. This bench runs client and server in one process
over the in-memory transport (``flare_runtime.testing.memory.memory_pair``), the
echo and server stream of ``bench/_service.py``, and counts the instructions of
a run with N calls minus a run with a small N, divided by the difference: the
cost of one call (or one streamed message), client and server together, with
start-up, imports and teardown cancelled out.

With ``--against DIR`` it runs the same workload in another checkout (its own
``.venv``; e.g. a ``git worktree`` of an older commit) in the same sitting and
prints the ratio: the "no speed lost" check of a change to the hot path.

    .venv/bin/python -m bench.instructions_bench [--against DIR] [--quick]

Needs ``valgrind`` (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside the checkout under test (its cwd), so it uses only what every
# Flare tree since the first version has: Server, JWTAuth, memory_pair and the
# bench service.
_UNARY = """
import asyncio, sys
sys.path.insert(0, ".")
from flare_runtime import JWTAuth, Server
from flare_runtime.auth import issue_jwt
from flare_runtime.testing.memory import memory_pair
from bench._service import SERVICE, BenchService, ECHO, FLARE_PAYLOAD
from google.protobuf.wrappers_pb2 import BytesValue
KEY = "flare-bench-signing-key-0123456789abcdef-0123"
async def go(n):
    server = Server([(SERVICE, BenchService())], auth=JWTAuth(KEY))
    token = issue_jwt(KEY, "bench")
    channel, _, _ = memory_pair(server, metadata={"authorization": f"Bearer {token}"})
    request = BytesValue(value=FLARE_PAYLOAD)
    async def worker(k):
        for _ in range(k):
            await channel.unary_unary(ECHO, request)
    await asyncio.gather(*(worker(n // 64) for _ in range(64)))
    await channel.close()
asyncio.run(go(int(sys.argv[1])))
"""

_STREAM = """
import asyncio, sys
sys.path.insert(0, ".")
from flare_runtime import Server
from flare_runtime.testing.memory import memory_pair
from bench._service import SERVICE, BenchService, STREAM
from google.protobuf.wrappers_pb2 import Int64Value
async def go(n):
    server = Server([(SERVICE, BenchService())])
    channel, _, _ = memory_pair(server)
    async for _ in channel.unary_stream(STREAM, Int64Value(value=n)):
        pass
    await channel.close()
asyncio.run(go(int(sys.argv[1])))
"""

_COLLECTED = re.compile(r"Collected : (\d+)")


def _instructions(tree: Path, code: str, n: int) -> int:
    python = tree / ".venv" / "bin" / "python"
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            str(python),
            "-c",
            code,
            str(n),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"{tree}: the workload failed: {' | '.join(tail)}")
    return int(found.group(1))


def _per_call(tree: Path, code: str, small: int, large: int) -> float:
    return (_instructions(tree, code, large) - _instructions(tree, code, small)) / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout with its own .venv")
    parser.add_argument("--quick", action="store_true", help="smaller runs (less exact)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    scale = 4 if args.quick else 1
    cases = [
        ("unary echo, JWT auth, 64 in flight", _UNARY, 640, 6400 // scale),
        ("server stream, per message", _STREAM, 640, 20000 // scale),
    ]
    trees = [("this tree", ROOT)]
    if args.against is not None:
        trees.insert(0, ("against", args.against.resolve()))
    report: dict[str, dict[str, float]] = {}
    for label, code, small, large in cases:
        report[label] = {name: _per_call(tree, code, small, large) for name, tree in trees}
    print(f"{'instructions per call (client + server)':<44}", end="")
    print("".join(f"{name:>14}" for name, _ in trees) + ("     ratio" if len(trees) == 2 else ""))
    for label, row in report.items():
        line = f"{label:<44}" + "".join(f"{row[name]:>14,.0f}" for name, _ in trees)
        if len(trees) == 2:
            line += f"{row['this tree'] / row['against']:>10.3f}"
        print(line)
    print(json.dumps({"bench": "instructions", "per_call": report}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
