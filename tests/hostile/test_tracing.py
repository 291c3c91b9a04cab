"""Hostile trace context in call metadata, against `TracingServerInterceptor`.

A caller controls the ``traceparent`` / ``tracestate`` it sends. Whatever it
sends, the call is answered normally; a header that is not valid W3C trace
context is ignored (the server span starts a new trace), as the W3C spec says.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flare_runtime.client import connect
from flare_runtime.server import Server
from flare_runtime.testing.service import SERVICE, BytesValue, ConformanceService, Routes
from flare_runtime.testing.timing import UNIT
from flare_runtime.tracing import TracingServerInterceptor

VALID_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def memory() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def _server_span(
    memory: tuple[TracerProvider, InMemorySpanExporter], metadata: list[tuple[str, str | bytes]]
) -> ReadableSpan:
    """Call Echo over WebSocket with `metadata`; the call must succeed; return its span."""
    provider, exporter = memory
    server = Server(
        [(SERVICE, ConformanceService())],
        interceptors=[TracingServerInterceptor(tracer_provider=provider)],
    )
    await server.start(listen={"websocket": "127.0.0.1:0"})
    try:
        async with await connect(f"ws://127.0.0.1:{server.port('websocket')}") as channel:
            reply = await channel.unary_unary(
                Routes.ECHO, BytesValue(value=b"x"), metadata=metadata, timeout=10 * UNIT
            )
            assert reply.value == b"x"
    finally:
        await server.shutdown(grace=0)
    (span,) = exporter.get_finished_spans()
    return span


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-" + "a" * 10_000,
    ],
)
async def test_a_malformed_traceparent_starts_a_new_trace(
    memory: tuple[TracerProvider, InMemorySpanExporter], traceparent: str
) -> None:
    """``traceparent`` that is not W3C trace context → the call succeeds; its server span
    is the root of a new trace."""
    span = await _server_span(memory, [("traceparent", traceparent)])
    assert span.parent is None


async def test_an_oversized_tracestate_is_dropped_not_kept(
    memory: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A valid ``traceparent`` with a ``tracestate`` of 1,000 members (W3C allows 32) → the
    call succeeds, the parent is kept, the trace state is dropped."""
    members = ",".join(f"k{i}=v{i}" for i in range(1000))
    span = await _server_span(memory, [("traceparent", VALID_PARENT), ("tracestate", members)])
    assert span.parent is not None
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert span.context is not None
    assert len(span.context.trace_state) == 0


async def test_two_traceparents_and_a_binary_one_do_not_fail_the_call(
    memory: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Two ``traceparent`` entries and a ``traceparent-bin`` one → the call succeeds; the
    first text entry is used (as the W3C propagator does)."""
    other = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
    span = await _server_span(
        memory,
        [
            ("traceparent", VALID_PARENT),
            ("traceparent", other),
            ("traceparent-bin", b"\x00\xff"),
        ],
    )
    assert span.parent is not None
    assert span.parent.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
