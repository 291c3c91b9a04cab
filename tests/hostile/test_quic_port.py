"""Hostile peers on the QUIC port: raw UDP datagrams, QUIC clients that misbehave.

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). A real
server on 127.0.0.1, real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from flare_runtime import RpcError, StatusCode
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import Routes

TIMEOUT = 10.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    started = await start_rig("quic")
    yield started
    await started.server.shutdown(grace=0)


async def test_two_credentials_in_the_opening_block_are_refused(rig: Rig) -> None:
    """Input: a QUIC connection whose opening metadata block holds two ``authorization``
    entries (a valid token and another). Outcome: the connection's authentication fails as
    ambiguous: an authenticated route answers UNAUTHENTICATED "ambiguous credentials";
    neither credential is picked."""
    async with rig.connect(
        token=rig.token(), metadata=[("authorization", "Bearer not-a-token")]
    ) as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.WHO_AM_I, StringValue(), timeout=TIMEOUT)
    assert caught.value.code is StatusCode.UNAUTHENTICATED
    assert "ambiguous credentials" in caught.value.message
