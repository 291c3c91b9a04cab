"""An in-memory `WireTransport` pair: a server and a client with no sockets.

The endpoint layer asks a transport only to move bytes, so two endpoints can
be joined by two small objects. Useful for testing handlers and interceptors
quickly, and it proves the transport interface is all a transport needs::

    server = Server([(SERVICE, ConformanceService())])
    async with memory_channel(server) as channel:
        reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"hi"))

Bytes are delivered on the next loop iteration, like a socket; `stall()`
stops delivery towards the client (a peer that stopped reading).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.routing import Transport
from flare_runtime.server import Server
from flare_runtime.wire.client import ClientEndpoint, WireChannel
from flare_runtime.wire.endpoint import WireEndpoint
from flare_runtime.wire.server import ServerEndpoint


class MemoryTransport:
    """One direction-pair end: `write` delivers to the peer endpoint asynchronously."""

    def __init__(self, peer_name: str) -> None:
        self.peer = peer_name
        self.endpoint: WireEndpoint | None = None
        self.other: MemoryTransport | None = None
        self.stalled = False
        self._held: list[bytes] = []
        self._closed = False
        self.written = 0

    def write(self, data: bytes) -> None:
        other = self.other
        if self._closed or other is None:
            return
        self.written += len(data)
        asyncio.get_running_loop().call_soon(other.deliver, data)

    def deliver(self, data: bytes) -> None:
        """Hand `data` to this end's endpoint (held while stalled)."""
        if self._closed or self.endpoint is None:
            return
        if self.stalled:
            self._held.append(data)
            return
        self.endpoint.data_received(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.stalled = True

    def resume_reading(self) -> None:
        self.stalled = False
        held, self._held = self._held, []
        for data in held:
            self.deliver(data)

    def close(self, reason: str = "") -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        loop.call_soon(self._lost)
        if self.other is not None:
            loop.call_soon(self.other._lost)

    def abort(self) -> None:
        self.close()

    def _lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.endpoint is not None:
            self.endpoint.connection_lost(None)


class RecordingTransport:
    """A `WireTransport` with no peer: it keeps what the endpoint writes, one entry per write.

    For tests that play the other side by hand (a sans-I/O `Connection` fed
    with `take()`). `max_write_size` reaches the endpoint as an adapter's
    would; `endpoint`, when set, is told the transport is gone on `close`.
    """

    peer = "memory"

    def __init__(self, max_write_size: int | None = None) -> None:
        self.writes: list[bytes] = []
        self.max_write_size = max_write_size
        self.endpoint: WireEndpoint | None = None

    def take(self) -> bytes:
        """Return and forget everything written so far."""
        data = b"".join(self.writes)
        self.writes.clear()
        return data

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self, reason: str = "") -> None:
        if self.endpoint is not None:
            asyncio.get_running_loop().call_soon(self.endpoint.connection_lost, None)

    def abort(self) -> None:
        self.close()


def memory_pair(
    server: Server,
    *,
    metadata: MetadataLike | None = None,
    client_config: ProtocolConfig | None = None,
    push_types: dict[int, Any] | None = None,
) -> tuple[WireChannel, ServerEndpoint, MemoryTransport]:
    """A client channel joined in memory to a new connection of `server`.

    Returns (channel, server endpoint, the client's transport end). The
    server's dispatcher is used as is; `server.start` is not needed.
    """
    client_end = MemoryTransport("memory-server")
    server_end = MemoryTransport("memory-client")
    client_end.other, server_end.other = server_end, client_end
    server_endpoint = ServerEndpoint(
        server, server_end, Metadata.coerce(metadata), Transport.WEBSOCKET
    )
    server_end.endpoint = server_endpoint
    push_table = {**server.router.push_types(), **(push_types or {})}
    client_endpoint = ClientEndpoint(
        client_end, client_config or ProtocolConfig(), Transport.WEBSOCKET, push_table, 1024
    )
    client_end.endpoint = client_endpoint
    return WireChannel(client_endpoint), server_endpoint, client_end


@contextlib.asynccontextmanager
async def memory_channel(server: Server, **options: Any) -> AsyncIterator[WireChannel]:
    """`memory_pair`'s channel as an ``async with`` block (closed on exit)."""
    channel, _, _ = memory_pair(server, **options)
    try:
        yield channel
    finally:
        await channel.close()
