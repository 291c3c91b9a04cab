"""Run every Flare benchmark, one after another (``make bench``).

Each ``bench/*_bench.py`` module runs in its own process (they pin their own
server/client processes to the two cores, so running them in parallel would
only measure contention), with a time limit; their output is printed as it
comes, and a summary says which ones ran, how long they took and which failed.

    .venv/bin/python -m bench.run_all                  # every benchmark, full runs
    .venv/bin/python -m bench.run_all --quick          # those with --quick run it
    .venv/bin/python -m bench.run_all ws grpc          # names containing these words
    .venv/bin/python -m bench.run_all transports       # the cross-transport table only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def discover(filters: list[str]) -> list[str]:
    """Module names (``bench.x_bench``) of every benchmark, filtered by substrings."""
    names = sorted(path.stem for path in BENCH_DIR.glob("*_bench.py"))
    if filters:
        names = [name for name in names if any(word in name for word in filters)]
    return [f"bench.{name}" for name in names]


def supports_quick(module: str) -> bool:
    source = (BENCH_DIR / f"{module.rsplit('.', maxsplit=1)[-1]}.py").read_text(encoding="utf-8")
    return '"--quick"' in source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("filters", nargs="*", help="run only benchmarks whose name contains one")
    parser.add_argument("--quick", action="store_true", help="pass --quick where supported")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per benchmark")
    args = parser.parse_args(argv)
    modules = discover(args.filters)
    if not modules:
        print("no benchmark matches", file=sys.stderr)
        return 2
    summary: list[tuple[str, str, float]] = []
    for module in modules:
        command = [sys.executable, "-m", module]
        if args.quick and supports_quick(module):
            command.append("--quick")
        print(f"\n=== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=ROOT, timeout=args.limit, check=False)
            status = "ok" if result.returncode == 0 else f"exit {result.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {args.limit:.0f} s"
        summary.append((module, status, time.perf_counter() - started))
    print("\n=== summary")
    for module, status, elapsed in summary:
        print(f"{module:<32}{status:<24}{elapsed:>8.1f} s")
    return 0 if all(status == "ok" for _, status, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
