"""What the OpenTelemetry interceptors cost per call, off and on, over WebSocket.

One process, one uvloop event loop: a Flare server (the conformance service's
Echo, 100-byte requests) and a client over 127.0.0.1, so the CPU per call
counts both ends, which is what tracing adds to (a client span, a server span,
the ``traceparent`` in the call's metadata). Configurations, run interleaved
``--reps`` times, medians reported:

* ``off``        no interceptors (the baseline);
* ``pass``       a pass-through interceptor on each side (what any interceptor
                 costs, tracing or not);
* ``metadata``   a client interceptor adding a ``traceparent``-sized entry to
                 each call's metadata, no OpenTelemetry (what carrying the
                 context costs the transport, apart from OpenTelemetry's own work);
* ``no-sdk``     both interceptors, OpenTelemetry's API only (no SDK configured:
                 every span is the no-op span, the context is still propagated);
* ``unsampled``  SDK with the ALWAYS_OFF sampler (spans created, not recorded);
* ``sampled``    SDK, every span recorded and handed to a BatchSpanProcessor
                 whose exporter drops them (the cost of recording, not of export).

Per configuration: sequential p50 latency (one call at a time), and with 64
calls in flight calls/s and CPU µs per call (this process: client + server).

    .venv/bin/python -m bench.tracing_bench            # ~40 s
    .venv/bin/python -m bench.tracing_bench --quick
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from google.protobuf.message import Message  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402
from opentelemetry.trace import NoOpTracerProvider  # noqa: E402

from bench._measure import measure_sequential, medians, run_loop  # noqa: E402
from flare_runtime.client import connect  # noqa: E402
from flare_runtime.interceptors import (  # noqa: E402
    ClientCallInfo,
    ClientInterceptor,
    ClientUnaryCallNext,
    ServerInterceptor,
)
from flare_runtime.metadata import Metadata  # noqa: E402
from flare_runtime.server import Server  # noqa: E402
from flare_runtime.testing.service import (  # noqa: E402
    SERVICE,
    BytesValue,
    ConformanceService,
    Routes,
)
from flare_runtime.tracing import (  # noqa: E402
    TracingClientInterceptor,
    TracingServerInterceptor,
)

CONFIGS = ("off", "pass", "metadata", "no-sdk", "unsampled", "sampled")

_TRACEPARENT = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")


class _AddMetadata(ClientInterceptor):
    async def intercept_unary(
        self, request: Message, info: ClientCallInfo, call_next: ClientUnaryCallNext
    ) -> Message:
        info.metadata = Metadata([*info.metadata.entries(), _TRACEPARENT])
        return await call_next(request, info)


class _Dropping(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _provider(config: str) -> Any:
    if config == "no-sdk":
        return NoOpTracerProvider()
    if config == "unsampled":
        return TracerProvider(sampler=ALWAYS_OFF)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Dropping()))
    return provider


async def _measure(config: str, calls: int, seconds: float) -> dict[str, float]:
    server_side: list[ServerInterceptor] = []
    client_side: list[ClientInterceptor] = []
    provider = None
    if config == "pass":
        server_side, client_side = [ServerInterceptor()], [ClientInterceptor()]
    elif config == "metadata":
        server_side, client_side = [ServerInterceptor()], [_AddMetadata()]
    elif config != "off":
        provider = _provider(config)
        server_side = [TracingServerInterceptor(tracer_provider=provider)]
        client_side = [TracingClientInterceptor(tracer_provider=provider)]
    server = Server([(SERVICE, ConformanceService())], interceptors=server_side)
    await server.start(listen={"websocket": "127.0.0.1:0"})
    request = BytesValue(value=bytes(100))
    try:
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        async with await connect(url, interceptors=client_side) as channel:

            async def call(_: int) -> object:
                return await channel.unary_unary(Routes.ECHO, request)

            figures = await measure_sequential(call, calls, warmup=calls // 10)
            completed = 0
            stop = False

            async def caller() -> None:
                nonlocal completed
                while not stop:
                    await call(0)
                    completed += 1

            tasks = [asyncio.ensure_future(caller()) for _ in range(64)]
            await asyncio.sleep(seconds / 4)
            before, cpu, wall = completed, time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            count = completed - before
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            stop = True
            await asyncio.gather(*tasks)
    finally:
        await server.shutdown(grace=0)
        if isinstance(provider, TracerProvider):
            provider.shutdown()
    return {
        "p50_us": figures["p50_us"],
        "calls_per_s": count / wall,
        "cpu_us_per_call": 1e6 * cpu / max(count, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter windows")
    args = parser.parse_args(argv)
    calls, seconds = (1000, 1.0) if args.quick else (3000, 2.5)
    runs: dict[str, list[dict[str, float]]] = {config: [] for config in CONFIGS}
    for _ in range(args.reps):
        for config in CONFIGS:
            runs[config].append(run_loop(_measure(config, calls, seconds)))
    results = {config: medians(found) for config, found in runs.items()}
    base = results["off"]
    print(f"{'config':<10} {'p50 us':>8} {'calls/s':>9} {'CPU us/call':>12} {'CPU vs off':>11}")
    for config, figures in results.items():
        ratio = figures["cpu_us_per_call"] / base["cpu_us_per_call"]
        print(
            f"{config:<10} {figures['p50_us']:>8.1f} {figures['calls_per_s']:>9.0f} "
            f"{figures['cpu_us_per_call']:>12.1f} {ratio:>10.2f}x"
        )


if __name__ == "__main__":
    main()
