"""Hostile peers on the gRPC port, as a stock grpcio client (no Flare on the client side).

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). Rows that
hold on every port alike are in test_every_transport.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import Routes

TIMEOUT = 10.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    started = await start_rig("grpc")
    yield started
    await started.server.shutdown(grace=0)


async def test_a_stock_client_sending_two_credentials_is_refused(rig: Rig) -> None:
    """Input: a plain grpcio client calls an authenticated method with two
    ``authorization`` metadata entries, a bad token then a valid one. Outcome:
    UNAUTHENTICATED "ambiguous credentials"; neither is picked."""
    target = rig.url.removeprefix("grpc://")
    async with grpc.aio.insecure_channel(target) as channel:
        who_am_i = channel.unary_unary(
            Routes.WHO_AM_I.path,
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await who_am_i(
                StringValue(),
                metadata=(
                    ("authorization", "Bearer not-a-token"),
                    ("authorization", f"Bearer {rig.token()}"),
                ),
                timeout=TIMEOUT,
            )
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "ambiguous credentials" in (caught.value.details() or "")
