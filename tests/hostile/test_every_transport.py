"""Hostile input that every port must answer the same way (WebSocket, QUIC and gRPC).

Each test is one row of the hostile-input catalogue, run once per transport:
its docstring states the input and the promised outcome (docs/security/wire.md
links here). Real servers on 127.0.0.1, real clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import BytesValue, StringValue

from flare_runtime import RpcError, Server, StatusCode, connect
from flare_runtime.context import CallContext
from flare_runtime.routing import Cardinality, Route, ServiceRoutes
from flare_runtime.testing.harness import Rig, get_harness, start_rig
from flare_runtime.testing.service import Routes

TIMEOUT = 10.0


@pytest.fixture(params=["websocket", "quic", "grpc"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    started = await start_rig(request.param)
    yield started
    await started.server.shutdown(grace=0)


@pytest.mark.parametrize("valid_first", [False, True], ids=["bad-then-valid", "valid-then-bad"])
async def test_two_credentials_in_call_metadata_are_refused(rig: Rig, valid_first: bool) -> None:
    """Input: a call to an authenticated route whose metadata holds two ``authorization``
    entries, a bad token and a valid one (either order). Outcome: UNAUTHENTICATED
    "ambiguous credentials" on every transport; neither entry is picked."""
    entries = [("authorization", "Bearer not-a-token"), ("authorization", f"Bearer {rig.token()}")]
    if valid_first:
        entries.reverse()
    async with rig.connect() as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(
                Routes.WHO_AM_I, StringValue(), metadata=entries, timeout=TIMEOUT
            )
    assert caught.value.code is StatusCode.UNAUTHENTICATED
    assert "ambiguous credentials" in caught.value.message


async def test_one_credential_in_call_metadata_still_works(rig: Rig) -> None:
    """Input: the same call with one valid ``authorization`` entry. Outcome: OK, the token's
    subject (the refusal above is about ambiguity, not per-call credentials)."""
    async with rig.connect() as channel:
        reply = await channel.unary_unary(
            Routes.WHO_AM_I,
            StringValue(),
            metadata=[("authorization", f"Bearer {rig.token('bob')}")],
            timeout=TIMEOUT,
        )
    assert reply.value == "bob"


def _wrong_route(method: str, route_id: int, cardinality: Cardinality) -> Route[Any, Any]:
    return Route(
        path=f"/hostile.v1.Wrong/{method}",
        service_id=0x7E00,
        route_id=route_id,
        cardinality=cardinality,
        request_type=BytesValue,
        response_type=BytesValue,
        handler_name=method.lower(),
    )


WRONG_ROUTES = {
    cardinality: _wrong_route(cardinality.name.title().replace("_", ""), number, cardinality)
    for number, cardinality in enumerate(Cardinality, start=1)
}
WRONG_SERVICE = ServiceRoutes(
    name="hostile.v1.Wrong", service_id=0x7E00, routes=tuple(WRONG_ROUTES.values())
)
WRONG_ANSWER = StringValue(value="not the response type")


class WrongTypes:
    """Handlers that answer StringValue where the routes promise BytesValue."""

    async def unary(self, request: BytesValue, context: CallContext) -> Any:
        return WRONG_ANSWER

    async def serverstream(self, request: BytesValue, context: CallContext) -> Any:
        yield WRONG_ANSWER

    async def clientstream(self, requests: AsyncIterator[BytesValue], context: CallContext) -> Any:
        async for _ in requests:
            pass
        return WRONG_ANSWER

    async def bidistream(self, requests: AsyncIterator[BytesValue], context: CallContext) -> Any:
        async for _ in requests:
            yield WRONG_ANSWER


@pytest.mark.parametrize("transport", ["websocket", "quic", "grpc"])
@pytest.mark.parametrize("cardinality", list(Cardinality), ids=lambda c: c.name.lower())
async def test_a_handler_returning_the_wrong_message_type_fails_internal(
    transport: str, cardinality: Cardinality, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: a call to a route whose handler returns a `StringValue` where the route's
    response type is `BytesValue` (unary, server-stream, client-stream and bidi). Outcome:
    INTERNAL "internal error" on every transport, and one server log line naming the route
    and both types; the wrong message's bytes never reach the client (on gRPC neither: no
    OK with them)."""
    harness = get_harness(transport)
    server = Server([(WRONG_SERVICE, WrongTypes())])
    url = await harness.start(server)
    route = WRONG_ROUTES[cardinality]
    request = BytesValue(value=b"x")
    try:
        async with connect(url, **harness.connect_options) as channel:
            with pytest.raises(RpcError) as caught:
                if cardinality is Cardinality.UNARY:
                    await channel.unary_unary(route, request, timeout=TIMEOUT)
                elif cardinality is Cardinality.SERVER_STREAM:
                    async for _ in channel.unary_stream(route, request, timeout=TIMEOUT):
                        pass
                elif cardinality is Cardinality.CLIENT_STREAM:
                    await channel.stream_unary(route, [request], timeout=TIMEOUT)
                else:
                    async for _ in channel.stream_stream(route, [request], timeout=TIMEOUT):
                        pass
    finally:
        await server.shutdown(grace=0)
    assert caught.value.code is StatusCode.INTERNAL
    assert caught.value.message == "internal error"
    assert any(
        f"handler for {route.path} returned StringValue, expected BytesValue" in record.getMessage()
        for record in caplog.records
    )


async def test_a_flood_of_calls_that_crash_their_handler_writes_a_bounded_log(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: 300 calls whose handler raises an unexpected exception (the conformance
    service's ``x-crash``), 30 at a time. Outcome: each answers INTERNAL "internal error"
    (nothing of the exception reaches the client) and the server logs at most
    ``ServerOptions.log_burst`` tracebacks for them, not one per call."""
    caplog.set_level(logging.INFO)
    async with rig.connect() as channel:

        async def crash() -> StatusCode:
            try:
                await channel.unary_unary(
                    Routes.ECHO, BytesValue(), metadata={"x-crash": "1"}, timeout=TIMEOUT
                )
            except RpcError as error:
                assert error.message == "internal error"
                return error.code
            return StatusCode.OK

        codes: list[StatusCode] = []
        for _ in range(10):
            codes += await asyncio.gather(*(crash() for _ in range(30)))
    assert codes == [StatusCode.INTERNAL] * 300
    crashes = [r for r in caplog.records if r.getMessage().startswith("handler for ")]
    assert 1 <= len(crashes) <= rig.server.options.log_burst
