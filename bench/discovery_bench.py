"""Service discovery benchmark: the balancing channel's overhead, and how fast it follows the set.

    python -m bench.discovery_bench             # 3 interleaved repetitions, 5 join/kill rounds
    python -m bench.discovery_bench --quick

Phases, all in the same run:

1. **overhead**: one server process (WebSocket, pinned to CPU 0; this client
   on CPU 1) and, on it, a direct channel (``ws://…``), a balancing
   channel over a one-endpoint static list (``static:ws://…``) and one over
   two endpoints that are both this server (``127.0.0.1`` and ``localhost``:
   p2c draws two each call): the same idempotent unary call, sequential
   p50/p99 and 32 in flight (calls/s, client CPU per call), the channels
   interleaved; medians of the repetitions, and of each repetition's ratio to
   the direct channel. The ratios are what the balancer costs per call
   (picking, bookkeeping, the retry budget).
2. **join and death**, on an etcd of the bench's own (Debian's ``etcd`` on
   free ports; skipped with a note when it is not installed): two servers
   announced in etcd (TTL 2 s), a balancing channel on
   ``etcd://…/service`` with 16 callers alternating an idempotent and a
   non-idempotent call. Each round starts a third server and measures
   *registration → first call received* (the server stamps both with
   CLOCK_MONOTONIC, shared by every process of the machine), then SIGKILLs
   it and measures *death → last failed call* (the client's stamp of each
   failure), the failed calls and their kinds, and *death → left the set*
   (the lease's expiry reaching the client through the watch).

Prints one line per figure, the ratios, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "generated"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from bench._measure import (  # noqa: E402
    ServerProcess,
    exit_when_stdin_closes,
    measure_closed_loop,
    measure_sequential,
    medians,
    pin_cpu,
    rounded,
    run_loop,
    set_deadline,
)
from flare_runtime.client import Channel, connect  # noqa: E402
from flare_runtime.context import CallContext  # noqa: E402
from flare_runtime.discovery.channel import BalancingChannel  # noqa: E402
from flare_runtime.errors import RpcError  # noqa: E402
from flare_runtime.server import Server  # noqa: E402
from flare_runtime.testing.discovery import (  # noqa: E402
    READ,
    SERVICE,
    SERVICE_NAME,
    WORK,
    CountingService,
    EtcdProcess,
    StringValue,
)

TTL = 2


# ---------------------------------------------------------------------------- server side


class _StampingService(CountingService):
    """`CountingService` that prints ``FIRST <monotonic ns>`` when it gets its first call."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._first = True

    def _stamp(self) -> None:
        if self._first:
            self._first = False
            print("FIRST", time.monotonic_ns(), flush=True)

    async def read(self, request: StringValue, context: CallContext) -> StringValue:
        self._stamp()
        return await super().read(request, context)

    async def work(self, request: StringValue, context: CallContext) -> StringValue:
        self._stamp()
        return await super().work(request, context)


async def _serve(name: str, etcd: str, prefix: str) -> None:
    exit_when_stdin_closes()
    server = Server([(SERVICE, _StampingService(name))])
    await server.start(websocket="127.0.0.1:0")
    registered = 0
    if etcd:
        from flare_runtime.discovery.announce import announce  # noqa: PLC0415 -- etcd phase only
        from flare_runtime.discovery.etcd import EtcdRegistry  # noqa: PLC0415 -- etcd phase only

        registry = EtcdRegistry(etcd, prefix=prefix, timeout=2.0)
        await announce(server, registry, host="127.0.0.1", ttl=TTL)
        registered = time.monotonic_ns()
    print("READY", server.port("websocket"), flush=True)
    print("REGISTERED", registered, flush=True)
    await server.serve_started()


def _server(
    name: str, *, etcd: str = "", prefix: str = "", pin: int | None = None
) -> ServerProcess:
    argv = ["-m", "bench.discovery_bench", "--serve", name, "--etcd", etcd, "--prefix", prefix]
    return ServerProcess(argv, pin=pin, ready_timeout=60.0, close_timeout=5.0)


async def _line(process: ServerProcess, word: str) -> int:
    """The number after `word` on the server's next line (read off the event loop)."""
    stdout = process.proc.stdout
    assert stdout is not None
    line = await asyncio.to_thread(stdout.readline)
    words = line.split()
    if len(words) != 2 or words[0] != word:
        raise RuntimeError(f"expected {word} from the server, got {line!r}")
    return int(words[1])


# ---------------------------------------------------------------------------- phase 1


async def overhead(reps: int, sequential: int, duration: float) -> dict[str, Any]:
    pin_cpu(1)
    server = await asyncio.to_thread(_server, "s0", pin=0)
    try:
        url = f"ws://127.0.0.1:{server.port}"
        channels: dict[str, Channel] = {
            "direct": await connect(url),
            "balancing": await connect(f"static:{url}"),
            # Two endpoints (two connections to the same server): p2c draws two each call.
            "balancing_2": await connect(f"static:{url},ws://localhost:{server.port}"),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in channels}
        request = StringValue(value="x")
        for rep in range(reps):
            order = list(channels)[rep % 3 :] + list(channels)[: rep % 3]
            for name in order:
                channel = channels[name]

                async def call(_: int, channel: Channel = channel) -> None:
                    await channel.unary_unary(READ, request)

                latency = await measure_sequential(call, sequential, warmup=200)
                window = await measure_closed_loop(
                    call, 32, warmup=0.5, duration=duration, server_pid=server.pid
                )
                runs[name].append({**latency, **window.per_message()})
                figures = rounded(runs[name][-1])
                print(f"  rep {rep + 1} {name:11}: {figures}", flush=True)
        for channel in channels.values():
            await channel.close()
    finally:
        server.close()
    result = {name: medians(samples) for name, samples in runs.items()}
    # Per-repetition comparisons (the channels of one repetition ran back to back, under
    # the same load from other processes), then their medians.
    for name in ("balancing", "balancing_2"):
        result[f"{name}_vs_direct"] = medians(
            [
                {
                    "calls_per_s_ratio": mine["msgs_per_s"] / direct["msgs_per_s"],
                    "p50_added_us": mine["p50_us"] - direct["p50_us"],
                    "client_us_added_per_call": (
                        mine["client_us_per_msg"] - direct["client_us_per_msg"]
                    ),
                }
                for mine, direct in zip(runs[name], runs["direct"], strict=True)
            ]
        )
    return result


# ---------------------------------------------------------------------------- phase 2


class _Load:
    """16 callers alternating READ (idempotent) and WORK (not) on a channel; failures stamped."""

    def __init__(self, channel: Channel, callers: int = 16) -> None:
        self.channel = channel
        self.calls = 0
        self.failures: list[tuple[int, str, str]] = []
        """(monotonic ns, route, status) of every failed call."""
        self._stop = False
        self._tasks = [asyncio.ensure_future(self._caller(n)) for n in range(callers)]

    async def _caller(self, number: int) -> None:
        i = 0
        while not self._stop:
            route = READ if (number + i) % 2 == 0 else WORK
            i += 1
            try:
                await self.channel.unary_unary(
                    route, StringValue(value=f"{number}.{i}"), timeout=5.0
                )
            except RpcError as error:
                self.failures.append((time.monotonic_ns(), route.handler_name, error.code.name))
            self.calls += 1

    async def stop(self) -> None:
        self._stop = True
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)


async def _left_the_set(channel: BalancingChannel, instance: str, timeout: float) -> int | None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while instance in channel.subchannels:
        if loop.time() > end:
            return None
        await asyncio.sleep(0.005)
    return time.monotonic_ns()


async def join_and_death(rounds: int) -> dict[str, Any] | None:
    if EtcdProcess.binary() is None:
        print("  etcd is not installed (bash .ci/services.d/80-etcd.sh): phase skipped")
        return None
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # phase 1 pinned this process
    etcd = EtcdProcess()
    await etcd.start()
    prefix = f"/flare-bench/{uuid.uuid4().hex}/"
    servers = [
        await asyncio.to_thread(_server, f"s{n}", etcd=etcd.address, prefix=prefix) for n in (1, 2)
    ]
    for server in servers:
        await _line(server, "REGISTERED")
    samples: dict[str, list[float]] = {
        "registration_to_first_call_ms": [],
        "death_to_last_failed_call_ms": [],
        "death_to_left_the_set_ms": [],
        "failed_calls": [],
    }
    kinds: dict[str, int] = {}
    channel = await connect(f"etcd://{etcd.address}/{SERVICE_NAME}?prefix={prefix}")
    assert isinstance(channel, BalancingChannel)
    load = _Load(channel)
    try:
        await asyncio.sleep(1.0)
        for number in range(rounds):
            joining = await asyncio.to_thread(
                _server, f"j{number}", etcd=etcd.address, prefix=prefix
            )
            registered = await _line(joining, "REGISTERED")
            first = await asyncio.wait_for(_line(joining, "FIRST"), 30)
            samples["registration_to_first_call_ms"].append((first - registered) / 1e6)
            await asyncio.sleep(1.0)
            failed_before = len(load.failures)
            killed = time.monotonic_ns()
            os.kill(joining.pid, signal.SIGKILL)
            left = await _left_the_set(channel, f"127.0.0.1:{joining.port}", 5 * TTL)
            await asyncio.sleep(0.5)
            failures = load.failures[failed_before:]
            samples["failed_calls"].append(len(failures))
            for _, route, code in failures:
                kinds[f"{route} {code}"] = kinds.get(f"{route} {code}", 0) + 1
            if failures:
                last = max(stamp for stamp, _, _ in failures)
                samples["death_to_last_failed_call_ms"].append((last - killed) / 1e6)
            if left is not None:
                samples["death_to_left_the_set_ms"].append((left - killed) / 1e6)
            await asyncio.to_thread(joining.proc.wait)
            joining.close()
            print(
                f"  round {number + 1}: registration→first call "
                f"{samples['registration_to_first_call_ms'][-1]:.1f} ms, "
                f"{len(failures)} failed, death→left the set "
                f"{'—' if left is None else f'{(left - killed) / 1e6:.0f} ms'}",
                flush=True,
            )
    finally:
        await load.stop()
        await channel.close()
        for server in servers:
            server.close()
        await etcd.close()
    result: dict[str, Any] = {}
    for key, values in samples.items():
        if values:
            result[key] = {"median": statistics.median(values), "max": max(values)}
    result["failures_by_kind"] = kinds
    result["calls"] = load.calls
    return result


# ---------------------------------------------------------------------------- main


async def main(arguments: argparse.Namespace) -> None:
    quick = arguments.quick
    reps = 1 if quick else arguments.reps
    print("overhead: direct vs balancing channel on the same server (32 in flight)")
    over = await overhead(reps, 500 if quick else 3000, 1.0 if quick else 3.0)
    for name in ("direct", "balancing", "balancing_2"):
        figures = over[name]
        print(
            f"  {name:11}: {figures['msgs_per_s']:8.0f} calls/s  p50 {figures['p50_us']:6.1f} µs"
            f"  p99 {figures['p99_us']:6.1f} µs  client {figures['client_us_per_msg']:5.1f} µs/call"
        )
    for name in ("balancing", "balancing_2"):
        versus = over[f"{name}_vs_direct"]
        print(
            f"  {name}/direct calls/s {versus['calls_per_s_ratio']:.2f}, "
            f"p50 added {versus['p50_added_us']:.1f} µs, "
            f"client CPU added {versus['client_us_added_per_call']:.1f} µs/call"
        )
    print("join and death (etcd, TTL 2 s, 16 callers alternating idempotent/non-idempotent)")
    follow = await join_and_death(2 if quick else arguments.rounds)
    if follow is not None:
        for key, value in follow.items():
            print(f"  {key}: {value}")
    out: dict[str, Any] = {"bench": "discovery", "overhead": rounded(over, 2)}
    if follow is not None:
        out["follow"] = rounded(follow, 1)
    print(json.dumps(out))


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--etcd", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        set_deadline(900)
        run_loop(_serve(arguments.serve, arguments.etcd, arguments.prefix))
        return
    set_deadline(600)
    run_loop(main(arguments))


if __name__ == "__main__":
    run()
