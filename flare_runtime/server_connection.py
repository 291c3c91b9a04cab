"""`ServerConnection`: a connected client as the server sees it.

Handlers reach it as ``context.connection`` (None on gRPC, which has no
server push); the `Server` hands every connection to its ``on_connect`` /
``on_disconnect`` hooks. Push to it, watch its outbound buffer, close it with
a reason.

Pushing to many connections: build one `PreparedPush` (the message encoded
once, its frame built once) and `push_prepared` it on each.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from google.protobuf.message import Message

from flare_runtime.auth import Principal
from flare_runtime.metadata import Metadata
from flare_runtime.protocol.frames import PreparedPush
from flare_runtime.routing import Transport


class ServerConnection(abc.ABC):
    """One client connection on the server side (WebSocket or QUIC).

    `push` and `push_prepared` never block: they append a frame to the
    connection's outbound buffer. Check `buffered_bytes` to bound what
    a slow client may hold and `close` it when it falls too far behind;
    `abort` it when it does not even read the close.
    """

    transport_kind: Transport
    """WEBSOCKET or QUIC."""
    peer: str
    metadata: Metadata
    """The opening metadata the client sent at connect."""

    @property
    def connection_id(self) -> str:
        """This connection's id on its server: what logs, metrics and the admin API name
        it by (``flare admin kick ID``). Unique within the server's process."""
        return f"{id(self):x}"

    def traffic(self) -> tuple[int, int, int]:
        """(bytes received, bytes sent, pushes sent) so far, counted in Flare frames."""
        return (0, 0, 0)

    @property
    @abc.abstractmethod
    def principal(self) -> Principal | None:
        """Who authenticated at connect (None: anonymous, or the token was rejected)."""

    @abc.abstractmethod
    def push(self, message: Message) -> None:
        """Send `message` as a server push under its registered push type id.

        Raises `ConfigurationError` when its type has no push type id and
        `ConnectionClosedError` when the connection is closed.
        """

    @abc.abstractmethod
    def push_prepared(self, push: PreparedPush) -> None:
        """Send a push encoded once for many connections (`PreparedPush`).

        Raises `ConnectionClosedError` when the connection is closed and
        `LimitExceededError` when the payload exceeds the client's announced
        max_message_size.
        """

    @property
    @abc.abstractmethod
    def buffered_bytes(self) -> int:
        """Bytes queued for this client and not yet accepted by the socket."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the connection is closing or closed."""

    @abc.abstractmethod
    def close(self, reason: str = "") -> None:
        """Close the connection: calls still running are cancelled.

        `reason` is sent to the client in the close (e.g. "kicked: logged in
        elsewhere"). Returns at once; see `wait_closed`.
        """

    @abc.abstractmethod
    def abort(self, reason: str = "") -> None:
        """Close the connection now, without waiting for the client.

        What is still buffered for the client is dropped and nothing more is
        sent (not even the reason), so this ends a client that stopped reading
        and would never take the close frame queued behind its backlog. Calls
        still running are cancelled; close callbacks run once the transport
        is gone. Works whether or not `close` was called first; does nothing
        on a closed connection. `reason` is for the server's log.
        """

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Wait until the connection is fully closed."""

    @abc.abstractmethod
    def add_close_callback(self, callback: Callable[[ServerConnection], None]) -> None:
        """Call `callback(self)` once when the connection has closed."""


__all__ = ["PreparedPush", "ServerConnection"]
