"""Hostile input that every port must answer the same way (WebSocket, QUIC and gRPC).

Each test is one row of the hostile-input catalogue, run once per transport:
its docstring states the input and the promised outcome (docs/security/wire.md
links here). Real servers on 127.0.0.1, real clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from flare_runtime import RpcError, StatusCode
from flare_runtime.testing.harness import Rig, start_rig
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
