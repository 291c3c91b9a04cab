"""The conformance service: routes built from well-known protobuf types.

No code generation is needed to serve or call it, so every transport can run
the conformance suite against it. Behaviour is steered by request metadata:

==================  =========================================================
``x-fail-code``     end the call with this status code (int), message
                    ``"failed on purpose"`` and one ``StringValue`` detail
``x-crash``         raise a plain exception (the client must see INTERNAL
                    without its text)
``x-sleep``         sleep this many seconds before answering (deadlines,
                    cancellation, graceful shutdown)
``x-echo-*``        copied to the response headers, and as ``x-trailer-*``
                    to the trailers
==================  =========================================================
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from google.protobuf import wrappers_pb2

from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.routing import (
    AuthRequirement,
    Cardinality,
    PushTable,
    PushType,
    Route,
    RouteOptions,
    ServiceRoutes,
)
from flare_runtime.status import StatusCode

BytesValue = wrappers_pb2.BytesValue
Int64Value = wrappers_pb2.Int64Value
StringValue = wrappers_pb2.StringValue

SERVICE_NAME: Final = "flare.testing.v1.ConformanceService"
SERVICE_ID: Final = 0x7F00
FAIL_MESSAGE: Final = "failed on purpose"
SECRET: Final = "do-not-leak-this-secret"


def _route(  # noqa: PLR0917 -- mirrors Route's own field order
    method: str,
    route_id: int,
    cardinality: Cardinality,
    request: type[BytesValue] | type[Int64Value] | type[StringValue],
    response: type[BytesValue] | type[Int64Value] | type[StringValue],
    handler: str,
    options: RouteOptions | None = None,
) -> Route:  # type: ignore[type-arg]
    return Route(
        path=f"/{SERVICE_NAME}/{method}",
        service_id=SERVICE_ID,
        route_id=route_id,
        cardinality=cardinality,
        request_type=request,
        response_type=response,
        handler_name=handler,
        options=options or RouteOptions(),
    )


class Routes:
    """The conformance routes (typed like generated ``*Routes`` constants)."""

    ECHO: Final[Route[BytesValue, BytesValue]] = _route(
        "Echo", 1, Cardinality.UNARY, BytesValue, BytesValue, "echo"
    )
    COUNT: Final[Route[Int64Value, Int64Value]] = _route(
        "Count", 2, Cardinality.SERVER_STREAM, Int64Value, Int64Value, "count"
    )
    SUM: Final[Route[Int64Value, Int64Value]] = _route(
        "Sum", 3, Cardinality.CLIENT_STREAM, Int64Value, Int64Value, "sum"
    )
    BIDI_ECHO: Final[Route[BytesValue, BytesValue]] = _route(
        "BidiEcho", 4, Cardinality.BIDI_STREAM, BytesValue, BytesValue, "bidi_echo"
    )
    WHO_AM_I: Final[Route[StringValue, StringValue]] = _route(
        "WhoAmI",
        5,
        Cardinality.UNARY,
        StringValue,
        StringValue,
        "who_am_i",
        RouteOptions(auth=AuthRequirement.AUTHENTICATED),
    )
    ADMIN: Final[Route[StringValue, StringValue]] = _route(
        "Admin",
        6,
        Cardinality.UNARY,
        StringValue,
        StringValue,
        "admin",
        RouteOptions(auth=AuthRequirement.AUTHENTICATED, scopes=("admin",)),
    )
    FLOOD: Final[Route[Int64Value, BytesValue]] = _route(
        "Flood", 7, Cardinality.SERVER_STREAM, Int64Value, BytesValue, "flood"
    )
    PUSH_ME: Final[Route[Int64Value, Int64Value]] = _route(
        "PushMe", 8, Cardinality.UNARY, Int64Value, Int64Value, "push_me"
    )


SERVICE: Final = ServiceRoutes(
    name=SERVICE_NAME,
    service_id=SERVICE_ID,
    routes=(
        Routes.ECHO,
        Routes.COUNT,
        Routes.SUM,
        Routes.BIDI_ECHO,
        Routes.WHO_AM_I,
        Routes.ADMIN,
        Routes.FLOOD,
        Routes.PUSH_ME,
    ),
)

PUSH_TYPES: Final = PushTable(types=(PushType(type_id=0x7F01, message_type=StringValue),))
"""Pushes sent by ``PushMe``: `StringValue` under push type id 0x7F01."""

FLOOD_CHUNK: Final = 64 * 1024


class ConformanceService:
    """The handlers. Counts what happened so tests can assert server-side effects."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.flood_sent = 0
        self.cancelled_event = asyncio.Event()

    async def _behave(self, context: CallContext) -> None:
        metadata = context.metadata
        headers = [(k, v) for k, v in metadata.entries() if k.startswith("x-echo-")]
        if headers:
            context.set_response_headers(headers)
            context.set_trailers([("x-trailer-" + k[len("x-echo-") :], v) for k, v in headers])
        sleep = metadata.get("x-sleep")
        if isinstance(sleep, str):
            await asyncio.sleep(float(sleep))
        code = metadata.get("x-fail-code")
        if isinstance(code, str):
            raise RpcError(
                StatusCode(int(code)), FAIL_MESSAGE, [StringValue(value=f"detail {code}")]
            )
        if "x-crash" in metadata:
            raise ValueError(SECRET)

    async def echo(self, request: BytesValue, context: CallContext) -> BytesValue:
        self.started += 1
        try:
            await self._behave(context)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.cancelled_event.set()
            raise
        self.finished += 1
        return request

    async def count(self, request: Int64Value, context: CallContext) -> AsyncIterator[Int64Value]:
        self.started += 1
        try:
            await self._behave(context)
            for i in range(request.value):
                yield Int64Value(value=i)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.cancelled_event.set()
            raise
        self.finished += 1

    async def sum(self, requests: AsyncIterator[Int64Value], context: CallContext) -> Int64Value:
        self.started += 1
        await self._behave(context)
        total = 0
        async for request in requests:
            total += request.value
        self.finished += 1
        return Int64Value(value=total)

    async def bidi_echo(
        self, requests: AsyncIterator[BytesValue], context: CallContext
    ) -> AsyncIterator[BytesValue]:
        self.started += 1
        try:
            await self._behave(context)
            async for request in requests:
                yield request
        except asyncio.CancelledError:
            self.cancelled += 1
            self.cancelled_event.set()
            raise
        self.finished += 1

    async def who_am_i(self, request: StringValue, context: CallContext) -> StringValue:
        principal = context.principal
        return StringValue(value=principal.subject if principal else "")

    async def admin(self, request: StringValue, context: CallContext) -> StringValue:
        return StringValue(value="admin ok")

    async def flood(self, request: Int64Value, context: CallContext) -> AsyncIterator[BytesValue]:
        """Stream `request.value` chunks of 64 KiB as fast as the client lets us."""
        chunk = BytesValue(value=bytes(FLOOD_CHUNK))
        for _ in range(request.value):
            yield chunk
            self.flood_sent += 1

    async def push_me(self, request: Int64Value, context: CallContext) -> Int64Value:
        """Push `request.value` StringValues to the caller's connection, then answer."""
        connection = context.connection
        if connection is None:
            raise RpcError(StatusCode.UNIMPLEMENTED, "this transport has no server push")
        for i in range(request.value):
            connection.push(StringValue(value=f"push {i}"))
        return request
