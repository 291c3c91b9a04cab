"""Wall time and peak memory of ``flare schema check`` vs ``buf breaking``, same run.

Two inputs, each checked against a copy of itself with one breaking change
(a field deleted from one message):

- ``real``: every ``.proto`` shipped by the installed PyPI packages
  (googleapis-common-protos and friends; the well-known types stay imports);
- ``synthetic``: ``--files`` generated files (default 2,000) with messages,
  enums, nested types, maps, oneofs, cross-file imports and services.

Each tool runs once unmeasured first (page cache, Python bytecode), then
``--repeat`` times, interleaved. Peak memory is the largest sum of RSS over
the whole process tree (flare runs protoc as a child), sampled every 5 ms from
/proc, and also the kernel's ``ru_maxrss`` of the tree. buf is the ``buf``
binary from the ``buf-bin`` PyPI package (``pip install -e '.[bench]'``).

    .venv/bin/python -m bench.schema_check_bench [--files 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    wall_s: float
    peak_tree_mib: float
    maxrss_mib: float
    exit_code: int
    findings: int


def _tree_rss(root: int) -> int:
    """Sum of RSS (bytes) of `root` and all its descendants."""
    total = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(command: list[str], cwd: Path) -> Sample:
    """Run `command`, sampling its process tree's memory until it exits."""
    # An installed package has its bytecode compiled; this workplace sets
    # PYTHONDONTWRITEBYTECODE, which would make every run recompile Flare.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    findings = sum(1 for line in output.splitlines() if line.strip())
    return Sample(wall, peak / 2**20, usage.ru_maxrss / 1024, proc.returncode, findings)


def real_input(root: Path) -> int:
    """Copy every .proto of the installed packages (but the well-known types) under `root`."""
    site = Path(sysconfig.get_paths()["purelib"])
    count = 0
    for proto in site.rglob("*.proto"):
        relative = proto.relative_to(site)
        parts = relative.parts
        if parts[0] == "grpc_tools":  # bundled well-known types: imports, not inputs
            continue
        if parts[:2] == ("google", "protobuf"):
            continue
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto, target)
        count += 1
    return count


SYNTHETIC_FILE = """\
syntax = "proto3";

package synth.p{i};

{imports}
import "google/protobuf/timestamp.proto";

option go_package = "example.com/synth/p{i}";
option java_package = "com.example.synth.p{i}";

// Kind of thing number {i}.
enum Kind{i} {{
  KIND{i}_UNSPECIFIED = 0;
  KIND{i}_A = 1;
  KIND{i}_B = 2;
  reserved 5 to 9;
}}

// Record number {i}.
message Record{i} {{
  string id = 1;
  int64 version = 2;
  Kind{i} kind = 3;
  repeated string tags = 4;
  map<string, int64> counters = 5;
  google.protobuf.Timestamp created = 6;
  oneof payload {{
    string text = 7;
    bytes blob = 8;
  }}
  optional double score = 9;
  Nested nested = 10;
  {extra_field}
  reserved 20 to 25;
  reserved "old";

  message Nested {{
    uint32 a = 1;
    sint64 b = 2;
    fixed32 c = 3;
  }}
}}

message Get{i}Request {{
  string id = 1;
}}

message Get{i}Response {{
  Record{i} record = 1;
}}

service Service{i} {{
  rpc Get(Get{i}Request) returns (Get{i}Response);
  rpc Watch(Get{i}Request) returns (stream Get{i}Response);
}}
"""


def synthetic_input(root: Path, files: int) -> int:
    for i in range(files):
        imports = f'import "synth/p{i - 1}.proto";' if i else ""
        extra = f"synth.p{i - 1}.Record{i - 1} previous = 11;" if i else ""
        path = root / "synth" / f"p{i}.proto"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SYNTHETIC_FILE.format(i=i, imports=imports, extra_field=extra))
    return files


def break_one(root: Path) -> str:
    """Delete one field from one message: FIELD_NO_DELETE for both tools."""
    for proto in sorted(root.rglob("*.proto")):
        text = proto.read_text()
        lines = text.splitlines(keepends=True)
        for index, line in enumerate(lines):
            stripped = line.strip()
            if (
                stripped.endswith(";")
                and "=" in stripped
                and stripped.split()[0] in ("string", "int32", "int64", "bool")
                and " = 1;" not in stripped
            ):
                del lines[index]
                proto.write_text("".join(lines))
                return f"{proto.relative_to(root)}: deleted {stripped!r}"
    raise SystemExit("no field to delete")


def run_input(name: str, previous: Path, repeat: int) -> None:
    current = previous.parent / "current"
    shutil.copytree(previous, current)
    change = break_one(current)
    flare_bin = Path(sys.executable).with_name("flare")
    buf_bin = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    count = sum(1 for _ in previous.rglob("*.proto"))
    print(f"\n== {name}: {count} files; change: {change}")
    commands = {
        "flare": [str(flare_bin), "schema", "check", str(current), "--against", str(previous),
                  "--format", "json"],
    }  # fmt: skip
    if buf_bin:
        commands["buf"] = [buf_bin, "breaking", str(current), "--against", str(previous),
                           "--error-format", "json"]  # fmt: skip
    else:
        print("buf not found: pip install -e '.[bench]' (buf-bin) for the comparison")
    results: dict[str, list[Sample]] = {tool: [] for tool in commands}
    for command in commands.values():  # warm-up: page cache, bytecode
        measure(command, current)
    for _ in range(repeat):
        for tool, command in commands.items():  # interleaved, so both see the same machine
            results[tool].append(measure(command, current))
    for tool, samples in results.items():
        wall = statistics.median(s.wall_s for s in samples)
        peak = max(s.peak_tree_mib for s in samples)
        maxrss = max(s.maxrss_mib for s in samples)
        print(
            f"{tool:6s} wall median {wall:7.3f} s  peak tree RSS {peak:8.1f} MiB  "
            f"ru_maxrss {maxrss:8.1f} MiB  exit {samples[0].exit_code}  "
            f"findings {samples[0].findings}"
        )
    if "buf" in results:
        flare_wall = statistics.median(s.wall_s for s in results["flare"])
        buf_wall = statistics.median(s.wall_s for s in results["buf"])
        flare_peak = max(s.peak_tree_mib for s in results["flare"])
        buf_peak = max(s.peak_tree_mib for s in results["buf"])
        print(
            f"ratio flare/buf: wall {flare_wall / buf_wall:.2f}x (target <= 1.00), "
            f"peak memory {flare_peak / buf_peak:.2f}x (target <= 0.25)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="synthetic files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("real", "synthetic"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flare-schema-bench-") as tmp:
        if args.only in (None, "real"):
            previous = Path(tmp) / "real" / "previous"
            real_input(previous)
            run_input("real (PyPI-shipped .proto files)", previous, args.repeat)
        if args.only in (None, "synthetic"):
            previous = Path(tmp) / "synthetic" / "previous"
            synthetic_input(previous, args.files)
            run_input(f"synthetic ({args.files} files)", previous, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
