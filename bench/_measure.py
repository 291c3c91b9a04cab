"""Measuring helpers shared by the transport benchmarks (``bench/*_bench.py``).

Every transport benchmark has the same shape: an orchestrator process (the
client, pinned to CPU 1) starts a server as a child process (pinned to CPU 0),
reads a ``READY <port>...`` line from it, measures, and closes the child's
stdin, which makes the child exit. All traffic is on 127.0.0.1. Every process
arms a hard deadline (`set_deadline`), so a run always ends by itself.

What is measured, and how, is the same in every benchmark that uses this
module, so their figures can be put side by side:

* `measure_sequential`: one call at a time, round-trip latency percentiles
  (`latency_percentiles`), optionally with CPU per call;
* `measure_closed_loop`: `inflight` callers each keep one call outstanding on
  one connection for `duration` seconds after `warmup`; a `Window` holds what
  was counted (calls, seconds, server/client/machine CPU);
* `CpuWindow`: CPU per message of this process and the server over a phase;
  a `Probe` counts something else over the same phase (e.g. UDP datagrams);
* `medians`: per-figure medians of interleaved repetitions.

Functions return unrounded floats; a benchmark rounds for its own output.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import uvloop

LOOPBACK = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = 0, 1
ROOT = Path(__file__).resolve().parent.parent
"""The repository root: benchmark processes run ``python -m bench.x`` from here."""

Call = Callable[[int], Awaitable[object]]
"""One request: takes a request number (unique among calls in flight), awaits the reply."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- this process


def pin_cpu(cpu: int) -> None:
    """Pin this process to `cpu` when the machine has it (keeps client and server apart)."""
    if cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def set_deadline(seconds: float) -> None:
    """Kill this process (traceback on stderr) if it still runs after `seconds`."""
    faulthandler.dump_traceback_later(seconds, exit=True)


def raise_fd_limit() -> None:
    """Soft open-files limit up to the hard one (idle-connection phases open thousands)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a whole process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time used by every process on the machine (a noisy neighbour shows here)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _CLOCK_TICKS


def run_loop(main: Coroutine[Any, Any, Any], loop: str = "uvloop") -> Any:
    """Run `main` on a fresh event loop: ``"uvloop"`` or the stdlib ``"asyncio"``."""
    if loop == "uvloop":
        return uvloop.run(main)
    return asyncio.run(main)


# ---------------------------------------------------------------------------- server processes


def exit_when_stdin_closes() -> None:
    """Servers call this: when the orchestrator closes our stdin (or dies), exit at once."""

    def watch() -> None:
        try:
            sys.stdin.read()
        finally:
            os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class ServerProcess:
    """A benchmark server child process, ready once it printed ``READY <port>...``.

    `argv` is run as ``python <argv...>`` from the repository root (stdin and
    stdout are pipes). The child should exit when its stdin closes, which
    `close` does (and kills it after `close_timeout` seconds). `pin`, when
    given, pins the child to that CPU before it runs anything.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        pin: int | None = None,
        ready_timeout: float | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        preexec = None if pin is None else (lambda: pin_cpu(pin))
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,  # noqa: PLW1509 -- the child has no threads yet
        )
        self.close_timeout = close_timeout
        line = self._read_line(ready_timeout)
        if not line.startswith("READY "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"bench server {' '.join(argv)} did not start: {line!r}")
        self.ports = [int(port) for port in line.split()[1:]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        """The first port the server reported."""
        return self.ports[0]

    def _read_line(self, timeout: float | None) -> str:
        assert self.proc.stdout is not None
        if timeout is None:
            return self.proc.stdout.readline()
        # A reader thread, so a server that hangs before READY cannot hang us.
        lines: list[str] = []
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return lines[0] if lines else ""

    def request(self, line: str) -> str:
        """Send one command line to the server's stdin; return its one-line answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def close(self) -> None:
        """Close the server's stdin (it exits); kill it if it has not after the timeout."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(self.close_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------- measuring


def percentile(samples: list[int], p: float) -> float:
    """The `p`-th percentile of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000


def latency_percentiles(samples: list[int]) -> dict[str, float]:
    """``p50_us`` and ``p99_us`` of nanosecond samples."""
    return {"p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99)}


class CpuWindow:
    """CPU spent by this process and the server from construction to `finish`."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.client = time.process_time()
        self.server = cpu_seconds(server_pid)

    def finish(self, messages: int) -> dict[str, float]:
        """``client_us_per_msg`` and ``server_us_per_msg`` over `messages` (at least 1)."""
        messages = max(messages, 1)
        return {
            "client_us_per_msg": 1e6 * (time.process_time() - self.client) / messages,
            "server_us_per_msg": 1e6 * (cpu_seconds(self.server_pid) - self.server) / messages,
        }


class Probe(Protocol):
    """Something counted over a phase besides CPU (e.g. packets): started when made."""

    def finish(self, messages: int) -> dict[str, float]:
        """Figures per message (or per 100 messages) since the probe was made."""
        ...


ProbeFactory = Callable[[], Probe]


def _finish_probes(probes: Sequence[Probe], messages: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for probe in probes:
        figures.update(probe.finish(messages))
    return figures


async def measure_sequential(
    call: Call,
    n: int,
    *,
    warmup: int,
    server_pid: int | None = None,
    probes: Sequence[ProbeFactory] = (),
) -> dict[str, float]:
    """`warmup` calls, then `n` timed calls one at a time: ``p50_us``, ``p99_us``.

    With `server_pid`, also the CPU per call of both sides (`CpuWindow`); then
    the figures of each of `probes`, started with the timed calls.
    """
    for i in range(warmup):
        await call(i)
    samples: list[int] = []
    clock = time.perf_counter_ns
    cpu = CpuWindow(server_pid) if server_pid is not None else None
    started_probes = [probe() for probe in probes]
    for i in range(n):
        started = clock()
        await call(i)
        samples.append(clock() - started)
    result = latency_percentiles(samples)
    if cpu is not None:
        result.update(cpu.finish(n))
    result.update(_finish_probes(started_probes, n))
    return result


@dataclass(frozen=True, slots=True)
class Window:
    """What a measured phase counted: messages and the CPU seconds spent meanwhile."""

    messages: int
    seconds: float
    server_cpu: float
    client_cpu: float
    machine_cpu: float
    extra: dict[str, float] = field(default_factory=dict)
    """What the phase's probes counted (`Probe.finish`)."""

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    def per_message(self) -> dict[str, float]:
        """msgs/s, server and client CPU µs per message, other processes' % of a CPU, probes."""
        count = max(self.messages, 1)
        others = self.machine_cpu - self.server_cpu - self.client_cpu
        return {
            "msgs_per_s": self.msgs_per_s,
            "server_us_per_msg": 1e6 * self.server_cpu / count,
            "client_us_per_msg": 1e6 * self.client_cpu / count,
            "other_cpu_pct": max(0.0, 100 * others / self.seconds),
            **self.extra,
        }


class Meter:
    """Counts messages against the wall clock and CPU of both sides over one phase."""

    def __init__(self, server_pid: int, probes: Sequence[ProbeFactory] = ()) -> None:
        self.server_pid = server_pid
        self.started = time.perf_counter()
        self.server = cpu_seconds(server_pid)
        self.client = time.process_time()
        self.machine = machine_busy_seconds()
        self.probes = [probe() for probe in probes]

    def finish(self, messages: int) -> Window:
        return Window(
            messages=messages,
            seconds=time.perf_counter() - self.started,
            server_cpu=cpu_seconds(self.server_pid) - self.server,
            client_cpu=time.process_time() - self.client,
            machine_cpu=machine_busy_seconds() - self.machine,
            extra=_finish_probes(self.probes, messages),
        )


async def measure_closed_loop(
    call: Call,
    inflight: int,
    *,
    warmup: float,
    duration: float,
    server_pid: int,
    probes: Sequence[ProbeFactory] = (),
) -> Window:
    """`inflight` callers each keep one call outstanding; counts `duration` s after `warmup` s.

    Caller number ``k`` numbers its calls from ``k << 32`` so request numbers
    never collide. `probes` run over the counted window (`Window.extra`).
    """
    completed = 0
    stop = False

    async def caller(number: int) -> None:
        nonlocal completed
        i = number << 32
        while not stop:
            await call(i)
            i += 1
            completed += 1

    tasks = [asyncio.ensure_future(caller(n)) for n in range(inflight)]
    await asyncio.sleep(warmup)
    before = completed
    meter = Meter(server_pid, probes)
    await asyncio.sleep(duration)
    window = meter.finish(completed - before)
    stop = True
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return window


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-figure medians of repeated runs of the same (possibly nested) dict shape."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = medians([run[key] for run in runs])
        else:
            out[key] = float(statistics.median(run[key] for run in runs))
    return out


def rounded(figures: dict[str, Any], digits: int = 1) -> dict[str, Any]:
    """`figures` with every number rounded to `digits` (nested dicts too)."""
    return {
        key: rounded(value, digits) if isinstance(value, dict) else round(value, digits)
        for key, value in figures.items()
    }
