"""`ConnectionPair`: a client and a server `Connection` wired back to back in memory.

For tests and benchmarks of anything built on the protocol core: no sockets,
no event loop, time moved by hand. Bytes move only when asked
(`to_server`, `to_client`, `exchange`), optionally cut into small chunks to act
like a byte stream (QUIC) rather than whole messages (WebSocket).
"""

from __future__ import annotations

from flare_runtime.protocol.config import ProtocolConfig, Role
from flare_runtime.protocol.connection import Connection
from flare_runtime.protocol.events import Event


class ConnectionPair:
    """A client and a server connection and the clock they share.

    With `handshake=True` (the default) the HELLO exchange is done and its
    events discarded, so tests start on an established connection.
    `chunk_size` cuts every transfer into pieces of at most that many bytes.
    """

    def __init__(
        self,
        client_config: ProtocolConfig | None = None,
        server_config: ProtocolConfig | None = None,
        *,
        now: float = 0.0,
        handshake: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        self.now = now
        self.chunk_size = chunk_size
        self.client = Connection(Role.CLIENT, client_config, now=now)
        self.server = Connection(Role.SERVER, server_config, now=now)
        if handshake:
            self.exchange()

    def _deliver(self, source: Connection, target: Connection) -> list[Event]:
        data = source.data_to_send()
        if data:
            step = self.chunk_size or len(data)
            for offset in range(0, len(data), step):
                target.receive_data(data[offset : offset + step], self.now)
        return target.events_received()

    def to_server(self) -> list[Event]:
        """Deliver what the client queued; return the server's new events."""
        return self._deliver(self.client, self.server)

    def to_client(self) -> list[Event]:
        """Deliver what the server queued; return the client's new events."""
        return self._deliver(self.server, self.client)

    def exchange(self) -> tuple[list[Event], list[Event]]:
        """Move bytes both ways until neither side has anything to send.

        Returns (client events, server events), each in arrival order. Events
        that local method calls produced (a client's deadline, a close) are
        included too.
        """
        client_events = self.client.events_received()
        server_events = self.server.events_received()
        for _ in range(100):
            new_server = self.to_server()
            new_client = self.to_client()
            server_events += new_server
            client_events += new_client
            idle = not (self.client.has_data_to_send or self.server.has_data_to_send)
            if not new_server and not new_client and idle:
                break
        return client_events, server_events

    def advance(self, seconds: float) -> tuple[list[Event], list[Event]]:
        """Move the clock, run both timers if due, and exchange what they queued."""
        self.now += seconds
        for connection in (self.client, self.server):
            when = connection.get_timer()
            if when is not None and when <= self.now:
                connection.handle_timer(self.now)
        return self.exchange()
