"""`WireEndpoint`, the half both sides share: timer, batched output, closing."""

from __future__ import annotations

import asyncio

from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.server import Server, ServerOptions
from flare_runtime.testing.memory import memory_pair
from flare_runtime.testing.service import (
    PUSH_TYPES,
    SERVICE,
    BytesValue,
    ConformanceService,
    Routes,
)


def _server(**options: object) -> tuple[Server, ConformanceService]:
    service = ConformanceService()
    server = Server([(SERVICE, service)], push_tables=[PUSH_TYPES], **options)  # type: ignore[arg-type]
    return server, service


async def test_keepalive_closes_a_stalled_peer_with_one_timer() -> None:
    fast = ProtocolConfig(keepalive_interval=0.05, keepalive_timeout=0.05)
    server, _ = _server(options=ServerOptions(protocol=fast))
    channel, endpoint, client_end = memory_pair(
        server, client_config=ProtocolConfig(keepalive_interval=None)
    )
    await channel.unary_unary(Routes.ECHO, BytesValue())
    timer = endpoint._timer
    assert timer is not None  # the connection's one timer
    client_end.pause_reading()  # the client stops answering PINGs
    async with asyncio.timeout(5):
        while not endpoint.closed:
            await asyncio.sleep(0.01)
    assert not server.connections
    client_end.resume_reading()
    await channel.close()
