"""OpenTelemetry tracing interceptors: client → server → client parentage over every transport.

A front server's handlers each make a nested call to a back server, both
traced; the test client calls the front inside a span of its own. The SDK's
in-memory exporter then holds, for every cardinality and every transport (the
TCP plugin included), the chain test span → client span → front server span
→ nested client span → back server span, in one trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode as OtelStatus

from flare_runtime.client import Channel, connect
from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.server import Server
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import get_harness
from flare_runtime.testing.service import (
    SERVICE,
    SERVICE_NAME,
    BytesValue,
    ConformanceService,
    Int64Value,
    Routes,
)
from flare_runtime.testing.timing import UNIT
from flare_runtime.tracing import TracingClientInterceptor, TracingServerInterceptor

TRANSPORTS = ["websocket", "quic", "grpc", "tcp"]
TIMEOUT = 20 * UNIT


class Front(ConformanceService):
    """Each handler calls the back server's Echo once, from inside the call."""

    def __init__(self) -> None:
        super().__init__()
        self.back: Channel | None = None

    async def _nested(self, value: bytes) -> BytesValue:
        assert self.back is not None
        return await self.back.unary_unary(Routes.ECHO, BytesValue(value=value), timeout=TIMEOUT)

    async def echo(self, request: BytesValue, context: CallContext) -> BytesValue:
        return await self._nested(request.value)

    async def count(self, request: Int64Value, context: CallContext) -> AsyncIterator[Int64Value]:
        for i in range(request.value):
            if i == 1:
                await self._nested(b"count")
            yield Int64Value(value=i)

    async def sum(self, requests: AsyncIterator[Int64Value], context: CallContext) -> Int64Value:
        total = 0
        async for request in requests:
            total += request.value
        await self._nested(b"sum")
        return Int64Value(value=total)

    async def bidi_echo(
        self, requests: AsyncIterator[BytesValue], context: CallContext
    ) -> AsyncIterator[BytesValue]:
        first = True
        async for request in requests:
            if first:
                await self._nested(request.value)
                first = False
            yield request


class Traced:
    """A front and a back server on one transport, traced into one in-memory exporter."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.front = Front()
        self.servers: list[Server] = []
        self.channels: list[Channel] = []

    def server_interceptor(self) -> TracingServerInterceptor:
        return TracingServerInterceptor(tracer_provider=self.provider)

    def client_interceptor(self) -> TracingClientInterceptor:
        return TracingClientInterceptor(tracer_provider=self.provider)

    async def start(self, transport: str) -> Channel:
        harness = get_harness(transport)
        back = Server([(SERVICE, ConformanceService())], interceptors=[self.server_interceptor()])
        front = Server([(SERVICE, self.front)], interceptors=[self.server_interceptor()])
        self.servers += [back, front]
        back_url = await harness.start(back)
        front_url = await harness.start(front)
        options: dict[str, Any] = {**harness.connect_options}
        self.front.back = await connect(
            back_url, interceptors=[self.client_interceptor()], **options
        )
        client = await connect(front_url, interceptors=[self.client_interceptor()], **options)
        self.channels += [self.front.back, client]
        return client

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for server in self.servers:
            await server.shutdown(grace=0)


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def _spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished spans, once there are `count` (a server span may end just after the
    client has its answer)."""
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        await asyncio.sleep(TIMEOUT / 100)
    return list(exporter.get_finished_spans())


def _child(spans: list[ReadableSpan], parent: ReadableSpan, kind: SpanKind) -> ReadableSpan:
    assert parent.context is not None
    children = [
        span
        for span in spans
        if span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.kind is kind
    ]
    assert len(children) == 1, (parent.name, kind, [s.name for s in spans])
    return children[0]


def _check_chain(
    spans: list[ReadableSpan], root: ReadableSpan, method: str, transport: str
) -> None:
    """root → CLIENT(method) → SERVER(method) → CLIENT(Echo) → SERVER(Echo), one trace."""
    client = _child(spans, root, SpanKind.CLIENT)
    server = _child(spans, client, SpanKind.SERVER)
    nested_client = _child(spans, server, SpanKind.CLIENT)
    nested_server = _child(spans, nested_client, SpanKind.SERVER)
    assert root.context is not None
    for span in (client, server, nested_client, nested_server):
        assert span.context is not None
        assert span.context.trace_id == root.context.trace_id
        assert span.attributes is not None
        assert span.attributes["rpc.service"] == SERVICE_NAME
        assert span.attributes["rpc.grpc.status_code"] == 0
        assert span.status.status_code is OtelStatus.UNSET
    assert (client.name, server.name) == (f"{SERVICE_NAME}/{method}",) * 2
    assert (nested_client.name, nested_server.name) == (f"{SERVICE_NAME}/Echo",) * 2
    assert server.attributes is not None
    assert client.attributes is not None
    assert server.attributes["rpc.method"] == method
    assert server.attributes["rpc.system"] == ("grpc" if transport == "grpc" else "flare")
    assert client.attributes["rpc.system"] == "flare"
    expected = transport if transport in {"websocket", "quic", "grpc"} else None
    if expected is not None:
        assert server.attributes["flare.transport"] == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_trace_spans_client_server_and_a_nested_call_for_every_cardinality(
    transport: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, memory = exporter
    traced = Traced(provider)
    tracer = provider.get_tracer("test")
    try:
        client = await traced.start(transport)

        async def chunks() -> AsyncIterator[Int64Value]:
            for value in (1, 2, 3):
                yield Int64Value(value=value)

        calls: dict[str, Any] = {}
        with tracer.start_as_current_span("Echo") as span:
            reply = await client.unary_unary(Routes.ECHO, BytesValue(value=b"hi"), timeout=TIMEOUT)
            assert reply.value == b"hi"
        calls["Echo"] = span
        with tracer.start_as_current_span("Count") as span:
            call = client.unary_stream(Routes.COUNT, Int64Value(value=3), timeout=TIMEOUT)
            assert [r.value async for r in call] == [0, 1, 2]
        calls["Count"] = span
        with tracer.start_as_current_span("Sum") as span:
            total = await client.stream_unary(Routes.SUM, chunks(), timeout=TIMEOUT)
            assert total.value == 6
        calls["Sum"] = span
        with tracer.start_as_current_span("BidiEcho") as span:
            bidi = client.stream_stream(Routes.BIDI_ECHO, timeout=TIMEOUT)
            await bidi.send(BytesValue(value=b"a"))
            assert (await anext(aiter(bidi))).value == b"a"
            await bidi.done_writing()
            assert [r.value async for r in bidi] == []
        calls["BidiEcho"] = span
        # Per call: the test span, 2 client spans, 2 server spans.
        spans = await _spans(memory, 5 * len(calls))
        for method, root in calls.items():
            _check_chain(spans, root, method, transport)
    finally:
        await traced.close()


@pytest.mark.parametrize("transport", ["websocket", "grpc"])
async def test_status_codes_and_error_status_follow_the_rpc_conventions(
    transport: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A server error code (INTERNAL) marks both spans ERROR; a client error code
    (NOT_FOUND) only the client span; both record the code."""
    provider, memory = exporter
    traced = Traced(provider)
    try:
        await traced.start(transport)
        back = traced.front.back
        assert back is not None
        for code in (StatusCode.INTERNAL, StatusCode.NOT_FOUND):
            with pytest.raises(RpcError) as raised:
                await back.unary_unary(
                    Routes.ECHO,
                    BytesValue(),
                    metadata={"x-fail-code": str(int(code))},
                    timeout=TIMEOUT,
                )
            assert raised.value.code is code
        spans = await _spans(memory, 4)
        by_kind_and_code = {
            (span.kind, span.attributes["rpc.grpc.status_code"]): span.status
            for span in spans
            if span.attributes is not None
        }
        internal, not_found = int(StatusCode.INTERNAL), int(StatusCode.NOT_FOUND)
        assert by_kind_and_code[(SpanKind.SERVER, internal)].status_code is OtelStatus.ERROR
        assert by_kind_and_code[(SpanKind.SERVER, internal)].description == "failed on purpose"
        assert by_kind_and_code[(SpanKind.CLIENT, internal)].status_code is OtelStatus.ERROR
        assert by_kind_and_code[(SpanKind.SERVER, not_found)].status_code is OtelStatus.UNSET
        assert by_kind_and_code[(SpanKind.CLIENT, not_found)].status_code is OtelStatus.ERROR
    finally:
        await traced.close()


async def test_a_cancelled_stream_ends_both_spans_cancelled(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A server stream the client cancels: the client span ends CANCELLED at once, the
    server span when the server sees the cancellation."""
    provider, memory = exporter
    traced = Traced(provider)
    try:
        await traced.start("websocket")
        back = traced.front.back
        assert back is not None
        call = back.unary_stream(Routes.FLOOD, Int64Value(value=10_000), timeout=TIMEOUT)
        await anext(aiter(call))
        call.cancel()
        spans = await _spans(memory, 2)
        codes = {span.kind: span.attributes["rpc.grpc.status_code"] for span in spans}  # type: ignore[index]
        assert codes == {
            SpanKind.CLIENT: StatusCode.CANCELLED,
            SpanKind.SERVER: StatusCode.CANCELLED,
        }
    finally:
        await traced.close()


def test_the_client_interceptor_replaces_trace_headers_the_caller_set() -> None:
    """One ``traceparent`` leaves with a call, the interceptor's, whatever the caller put."""
    from flare_runtime.interceptors import ClientCallInfo
    from flare_runtime.metadata import Metadata

    provider = TracerProvider()
    interceptor = TracingClientInterceptor(tracer_provider=provider)
    info = ClientCallInfo(
        Routes.ECHO, Metadata([("traceparent", "00-stale"), ("x-keep", "1")]), None
    )
    span = interceptor._start(info)
    span.end()
    assert len(info.metadata.get_all("traceparent")) == 1
    assert info.metadata["traceparent"] != "00-stale"
    assert info.metadata["x-keep"] == "1"
