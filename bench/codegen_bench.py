"""protoc-gen-flare vs mypy-protobuf on the same large input, in the same run.

Two inputs:

* every ``.proto`` shipped by googleapis-common-protos and grpcio-tools
  (the well-known types), as installed in this environment;
* a synthetic schema of ``--files`` files (default 600), each with an enum,
  nested messages, a push message and a Flare service of 6 methods covering
  all four cardinalities.

For each input, measured interleaved ``--reps`` times (medians shown):

* end to end: ``python -m grpc_tools.protoc --flare_out`` alone vs
  ``--mypy_out`` alone (plugins as installed console scripts, as users run
  them), and protoc alone (``--descriptor_set_out``) to show its share;
* in process: Flare's ``generate(request)`` vs mypy-protobuf's
  ``generate_mypy_stubs`` on the same parsed CodeGeneratorRequest, which
  leaves out interpreter start-up and protoc.

Then the import time of the synthetic output: every ``_pb2`` module, then
every ``_flare`` module on top (what Flare adds), in a fresh interpreter.

    .venv/bin/python -m bench.codegen_bench            # ~1 min
    .venv/bin/python -m bench.codegen_bench --quick    # ~15 s
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.compiler import plugin_pb2
from mypy_protobuf.main import (  # type: ignore[import-untyped]  # ships no type information
    Descriptors,
    generate_mypy_stubs,
)

from flare_codegen.compiler import compile_protos, flare_include_dir, wellknown_include_dir
from flare_codegen.generate import generate as flare_gen
from flare_codegen.plugin import generate as flare_generate

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Input:
    name: str
    include_dirs: tuple[Path, ...]
    files: tuple[str, ...]


def shipped_protos() -> Input:
    """googleapis-common-protos' and grpcio-tools' .proto files."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    wellknown = wellknown_include_dir()
    files = sorted(
        path.relative_to(purelib).as_posix() for path in (purelib / "google").rglob("*.proto")
    )
    files += sorted(path.relative_to(wellknown).as_posix() for path in wellknown.rglob("*.proto"))
    return Input("googleapis-common-protos + grpcio-tools", (purelib, wellknown), tuple(files))


SYNTHETIC_FILE = """syntax = "proto3";

package synth.p{n}.v1;

import "flare/options/v1/options.proto";
import "google/protobuf/timestamp.proto";
import "synth/common/v1/common.proto";

// State of item {n}.
enum State{n} {{
  STATE{n}_UNSPECIFIED = 0;
  STATE{n}_ACTIVE = 1;
  STATE{n}_ARCHIVED = 2;
}}

// An item of file {n}.
message Item{n} {{
  string id = 1;
  string name = 2;
  State{n} state = 3;
  repeated string tags = 4;
  map<string, string> labels = 5;
  optional int64 version = 6;
  google.protobuf.Timestamp updated_at = 7;
  synth.common.v1.Page page = 8;
  oneof payload {{
    string text = 9;
    bytes blob = 10;
  }}

  message Part {{
    uint32 index = 1;
    bytes data = 2;
  }}

  repeated Part parts = 11;
}}

message GetRequest{n} {{
  string id = 1;
}}

message ListRequest{n} {{
  synth.common.v1.Page page = 1;
  string filter = 2;
}}

message ListReply{n} {{
  repeated Item{n} items = 1;
  string next_page_token = 2;
}}

// Pushed when an item changes.
message ItemChanged{n} {{
  option (flare.options.v1.message) = {{push_type_id: {n}}};

  Item{n} item = 1;
}}

// Service {n}.
service ItemService{n} {{
  option (flare.options.v1.service) = {{
    service_id: {n}
    default_auth: AUTH_REQUIREMENT_AUTHENTICATED
  }};

  // Get one item.
  rpc Get(GetRequest{n}) returns (Item{n}) {{
    option (flare.options.v1.method) = {{route_id: 1, idempotent: true, default_timeout_ms: 2000}};
  }}

  // List items.
  rpc List(ListRequest{n}) returns (ListReply{n}) {{
    option (flare.options.v1.method) = {{route_id: 2, idempotent: true}};
  }}

  // Watch items.
  rpc Watch(ListRequest{n}) returns (stream ItemChanged{n}) {{
    option (flare.options.v1.method) = {{route_id: 3}};
  }}

  // Upload parts.
  rpc Upload(stream Item{n}.Part) returns (Item{n}) {{
    option (flare.options.v1.method) = {{route_id: 4, max_message_bytes: 1048576}};
  }}

  // Sync both ways.
  rpc Sync(stream Item{n}) returns (stream ItemChanged{n}) {{
    option (flare.options.v1.method) = {{route_id: 5, transports: [TRANSPORT_WEBSOCKET]}};
  }}

  // Delete an item.
  rpc Delete(GetRequest{n}) returns (Item{n}) {{
    option deprecated = true;
    option (flare.options.v1.method) = {{route_id: 6, scopes: "items.delete"}};
  }}
}}
"""

COMMON_FILE = """syntax = "proto3";

package synth.common.v1;

message Page {
  uint32 size = 1;
  string token = 2;
}
"""


def synthetic_protos(root: Path, count: int) -> Input:
    """Write `count` synthetic files (plus one common file) under `root`."""
    files = ["synth/common/v1/common.proto"]
    (root / "synth/common/v1").mkdir(parents=True)
    (root / files[0]).write_text(COMMON_FILE)
    for n in range(1, count + 1):
        relative = f"synth/p{n}/v1/items{n}.proto"
        (root / relative).parent.mkdir(parents=True)
        (root / relative).write_text(SYNTHETIC_FILE.format(n=n))
        files.append(relative)
    return Input(f"synthetic, {count} files with services", (root,), tuple(files))


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    """User + system seconds of protoc and its plugin (children are waited for)."""


def protoc_run(source: Input, output_flag: str, out: Path) -> Run:
    """Wall and CPU time of one protoc run with one output flag."""
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *(f"-I{path}" for path in source.include_dirs),
        f"-I{flare_include_dir()}",
        f"-I{wellknown_include_dir()}",
        output_flag.format(out=out),
        *source.files,
    ]
    # As users run it: bytecode caching on (this environment may turn it off),
    # so neither plugin recompiles itself on every run.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({output_flag}): {result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall=elapsed, cpu=cpu)


def _median_runs(reps: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():  # interleaved, so drift hits every side alike
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def end_to_end(source: Input, reps: int, scratch: Path) -> dict[str, Run]:
    """Median wall and CPU times of protoc alone, with --flare_out, and with --mypy_out."""
    flags = {
        "protoc alone": "--descriptor_set_out={out}/set.binpb",
        "--flare_out": "--flare_out={out}",
        "--mypy_out": "--mypy_out=quiet:{out}",
    }
    samples: dict[str, list[Run]] = {name: [] for name in flags}
    for rep in range(reps + 1):
        for name, flag in flags.items():  # interleaved, so drift hits every side alike
            run = protoc_run(source, flag, Path(tempfile.mkdtemp(prefix="e2e-", dir=scratch)))
            if rep:  # the first round warms caches (and writes bytecode)
                samples[name].append(run)
    return {
        name: Run(
            wall=statistics.median(run.wall for run in runs),
            cpu=statistics.median(run.cpu for run in runs),
        )
        for name, runs in samples.items()
    }


def in_process(source: Input, reps: int) -> tuple[dict[str, float], int, int]:
    """Median seconds of each generator on the same parsed request, and output counts."""
    compiled = compile_protos(list(source.include_dirs), list(source.files))
    data = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=source.files, proto_file=compiled.files.file, parameter=""
    ).SerializeToString()

    def flare() -> float:
        start = time.perf_counter()
        response = flare_generate(plugin_pb2.CodeGeneratorRequest.FromString(data))
        elapsed = time.perf_counter() - start
        assert not response.error, response.error
        return elapsed

    def mypy() -> float:
        start = time.perf_counter()
        request = plugin_pb2.CodeGeneratorRequest.FromString(data)
        response = plugin_pb2.CodeGeneratorResponse()
        generate_mypy_stubs(Descriptors(request), response, True, False, False, False, False)
        return time.perf_counter() - start

    request = plugin_pb2.CodeGeneratorRequest.FromString(data)
    flare_files = len(flare_generate(request).file)
    mypy_response = plugin_pb2.CodeGeneratorResponse()
    generate_mypy_stubs(Descriptors(request), mypy_response, True, False, False, False, False)
    timings = _median_runs(reps, {"flare": flare, "mypy": mypy})
    return timings, flare_files, len(mypy_response.file)


IMPORT_SCRIPT = """
import importlib, sys, time
modules = sys.argv[1].split(",")
start = time.perf_counter()
import flare_runtime.client, flare_runtime.context, flare_runtime.routing, typing_extensions
runtime = time.perf_counter() - start
start = time.perf_counter()
for name in modules:
    importlib.import_module(name.replace("_flare", "_pb2"))
pb2 = time.perf_counter() - start
start = time.perf_counter()
for name in modules:
    importlib.import_module(name)
flare = time.perf_counter() - start
print(runtime, pb2, flare)
"""


@dataclass(frozen=True)
class ImportTimes:
    runtime: float
    """Importing what every _flare module imports (flare_runtime), once per process."""
    pb2: float
    flare: float
    flare_cold: float
    """The first run, which also compiles the sources to bytecode."""
    modules: int


def import_times(source: Input, scratch: Path, reps: int) -> ImportTimes:
    """Median seconds to import every _pb2 module, then every _flare module on top.

    Bytecode caching is on (as for users), so the first run compiles and
    later runs load ``__pycache__``; both are reported.
    """
    out = scratch / "import-out"
    flare_gen(source.include_dirs[0], out, files=source.files)
    modules = sorted(
        path.relative_to(out).with_suffix("").as_posix().replace("/", ".")
        for path in out.rglob("*_flare.py")
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(out)
    runs: list[tuple[float, float, float]] = []
    for _ in range(reps + 1):
        result = subprocess.run(
            [sys.executable, "-c", IMPORT_SCRIPT, ",".join(modules)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runtime, pb2, flare = (float(value) for value in result.stdout.split())
        runs.append((runtime, pb2, flare))
    cold, warm = runs[0], runs[1:]
    return ImportTimes(
        runtime=statistics.median(run[0] for run in warm),
        pb2=statistics.median(run[1] for run in warm),
        flare=statistics.median(run[2] for run in warm),
        flare_cold=cold[2],
        modules=len(modules),
    )


def report(source: Input, reps: int, scratch: Path) -> None:
    print(f"\n== {source.name}: {len(source.files)} .proto files ==")
    e2e = end_to_end(source, reps, scratch)
    print(f"  {'':<14} {'wall':>8}    {'CPU':>8}")
    for name, run in e2e.items():
        print(f"  {name:<14} {run.wall * 1000:8.0f} ms {run.cpu * 1000:8.0f} ms")
    flare, mypy, base = e2e["--flare_out"], e2e["--mypy_out"], e2e["protoc alone"]
    print(
        f"  ratio flare/mypy, end to end: wall {flare.wall / mypy.wall:.2f}, "
        f"CPU {flare.cpu / mypy.cpu:.2f}; plugin CPU only (minus protoc alone): "
        f"{(flare.cpu - base.cpu) / (mypy.cpu - base.cpu):.2f}"
    )
    timings, flare_files, mypy_files = in_process(source, reps)
    print(
        f"  in process: flare {timings['flare'] * 1000:.0f} ms ({flare_files} files), "
        f"mypy-protobuf {timings['mypy'] * 1000:.0f} ms ({mypy_files} files), "
        f"ratio {timings['flare'] / timings['mypy']:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=600, help="synthetic files (default 600)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument("--quick", action="store_true", help="200 files, 3 repetitions")
    args = parser.parse_args(argv)
    files, reps = (200, 3) if args.quick else (args.files, args.reps)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {reps} runs")
    with tempfile.TemporaryDirectory(prefix="flare-codegen-bench-") as tmp:
        scratch = Path(tmp)
        report(shipped_protos(), reps, scratch)
        synthetic = synthetic_protos(scratch / "synthetic", files)
        report(synthetic, reps, scratch)
        times = import_times(synthetic, scratch, reps)
        count = times.modules
        print(
            f"\n== import time of the synthetic output ({count} modules of each kind) ==\n"
            f"  flare_runtime (once per process): {times.runtime * 1000:.0f} ms\n"
            f"  all _pb2 modules: {times.pb2 * 1000:.0f} ms ({times.pb2 / count * 1e6:.0f} us each)"
            f"\n  all _flare modules on top: {times.flare * 1000:.0f} ms "
            f"({times.flare / count * 1e6:.0f} us each, {times.flare / times.pb2:.2f}x the _pb2 "
            f"import); first run, compiling: {times.flare_cold * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
