"""The Flare service the transport benchmarks serve: a unary echo and a server stream.

Hand-declared routes (what generated code would declare for a two-method
service) over the well-known wrapper types, so no schema compilation is
needed. The echo route is idempotent, so a QUIC client may send it in 0-RTT
early data; no other transport looks at that option.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf.wrappers_pb2 import BytesValue, Int64Value

from flare_runtime.context import CallContext
from flare_runtime.routing import Cardinality, Route, RouteOptions, ServiceRoutes

ECHO: Route[BytesValue, BytesValue] = Route(
    path="/flarebench.Bench/Echo",
    service_id=0x7E00,
    route_id=1,
    cardinality=Cardinality.UNARY,
    request_type=BytesValue,
    response_type=BytesValue,
    handler_name="echo",
    options=RouteOptions(idempotent=True),
)
STREAM: Route[Int64Value, BytesValue] = Route(
    path="/flarebench.Bench/Stream",
    service_id=0x7E00,
    route_id=2,
    cardinality=Cardinality.SERVER_STREAM,
    request_type=Int64Value,
    response_type=BytesValue,
    handler_name="stream",
)
SERVICE = ServiceRoutes(name="flarebench.Bench", service_id=0x7E00, routes=(ECHO, STREAM))
# BytesValue(value=98 bytes) serializes to exactly 100 bytes, as the raw baselines' payload.
FLARE_PAYLOAD = bytes(98)


class BenchService:
    """`echo` returns its request; `stream` sends `request.value` 100-byte messages."""

    async def echo(self, request: BytesValue, context: CallContext) -> BytesValue:
        return request

    async def stream(self, request: Int64Value, context: CallContext) -> AsyncIterator[BytesValue]:
        message = BytesValue(value=FLARE_PAYLOAD)
        for _ in range(request.value):
            yield message
