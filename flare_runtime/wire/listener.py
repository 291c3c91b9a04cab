"""What every listener of a wire transport keeps: its open endpoints, drained on shutdown.

A listener (`flare_runtime.server.Listener`) creates one `ServerEndpoint` per
accepted connection; `EndpointSet.add` keeps it until it closes, and
`EndpointSet.drain` is the endpoints' half of the listener's graceful
``shutdown(grace)``: GOAWAY on every connection at once, calls in flight
finish for up to `grace` seconds, then each closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from flare_runtime.server_connection import ServerConnection
from flare_runtime.wire.server import ServerEndpoint


class EndpointSet:
    """The open `ServerEndpoint`s of one listener."""

    def __init__(self) -> None:
        self._endpoints: set[ServerEndpoint] = set()

    def add(self, endpoint: ServerEndpoint) -> ServerEndpoint:
        """Keep `endpoint` until it closes; returns it."""
        self._endpoints.add(endpoint)
        endpoint.add_close_callback(self._discard)
        return endpoint

    def _discard(self, connection: ServerConnection) -> None:
        self._endpoints.discard(connection)

    async def drain(self, grace: float) -> None:
        """Drain every endpoint at once (`ServerEndpoint.drain`); returns when all are closed."""
        endpoints = list(self._endpoints)
        if endpoints:
            await asyncio.gather(*(endpoint.drain(grace) for endpoint in endpoints))

    def __len__(self) -> int:
        return len(self._endpoints)

    def __iter__(self) -> Iterator[ServerEndpoint]:
        return iter(list(self._endpoints))
