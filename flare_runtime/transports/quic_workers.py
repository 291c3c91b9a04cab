"""QUIC on several worker processes: each datagram reaches the worker that holds its connection.

Workers of one host share the QUIC port with ``SO_REUSEPORT`` (``flare serve
--workers N``, docs/cluster.md "Workers"). The kernel gives each datagram to
one worker's socket by a hash of its source and destination addresses, which
keeps a connection on its worker only while its client's address stays the
same. When the address changes -- a NAT rebinding, a phone moving from Wi-Fi
to mobile data, `QuicChannel.rebind` -- the kernel hashes the new address to
any worker, most likely (N-1 in N) one that has never heard of the
connection. aioquic's server drops a short-header packet whose destination
connection id it does not know, without a word, so the client would go on
sending into the void until its keepalive or idle timeout (20 to 60 s):
a hang. What happens instead (the routing):

* A worker that receives a short-header datagram for a connection id it does
  not hold asks the others: it sends the datagram, with the client's address,
  to every other worker over a Unix datagram socket in the workers' private
  directory (`SharedPorts.directory`). The worker holding the connection
  handles it as if it had arrived on its own socket -- aioquic sees a
  migration, validates the new path and answers the client from the shared
  port -- and tells the asker "it is mine". From then on the asker forwards
  that connection id's datagrams to the owner alone (one Unix datagram each).
  The connection continues; the cost is one local hop per datagram for a
  connection whose address changed.
* A datagram nobody holds (a connection of a worker that died, or noise) is
  dropped after one ask; asks are rate-limited (`ASKS_PER_SECOND`), and a
  connection id is asked about at most once per `ASK_INTERVAL`.
* Long-header packets (handshakes) are never routed: a new connection starts
  on the worker the kernel picked.

The supervisor keeps each worker's UDP socket open across that worker's
restarts, so the kernel's hashing never changes under the other workers'
connections (a socket leaving a ``SO_REUSEPORT`` group would re-hash every
client). Only this module reads aioquic's table of connection ids
(`_holds`): tests/runtime/transports/test_quic_workers.py fails loudly if
aioquic changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from flare_runtime.transports.aioquic_shim import server_connections

if TYPE_CHECKING:
    from aioquic.asyncio.server import QuicServer

    from flare_runtime.server import SharedPorts

logger = logging.getLogger("flare_runtime.transports.quic")

LONG_HEADER: Final = 0x80
"""The first bit of a QUIC long-header packet (RFC 9000 §17.2); short headers have it clear."""

FORWARD: Final = 1
"""A datagram for a connection the receiver is known to hold."""
ASK: Final = 2
"""A datagram for a connection id no worker is known to hold: the holder answers `OWNER`."""
OWNER: Final = 3
""""I hold this connection id": the asker forwards its datagrams to me from now on."""
NOT_OWNER: Final = 4
""""I do not hold this connection id" (it closed, or its worker restarted): forget me."""

MAX_OWNERS: Final = 65_536
"""Most connection id -> worker entries a worker remembers (least recently used go first)."""
ASK_INTERVAL: Final = 0.25
"""Seconds before the same connection id is asked about again."""
ASKS_PER_SECOND: Final = 1_000
"""Most asks a worker sends per second (each goes to every other worker); beyond, drop."""

_HEADER = struct.Struct("!BHB")  # kind, sender worker, connection id length
_ADDRESS = struct.Struct("!HB")  # client port, client host length


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """One message between workers (see `encode_message`)."""

    kind: int
    worker: int
    """The sending worker's index."""
    connection_id: bytes
    address: tuple[Any, ...] | None = None
    """The client's address as the shared socket reported it (FORWARD and ASK): (host,
    port), or (host, port, 0, 0) for IPv6."""
    datagram: bytes = b""
    """The QUIC datagram as the client sent it (FORWARD and ASK)."""


def encode_message(message: RoutedMessage) -> bytes:
    """The bytes of `message` on the workers' Unix datagram sockets."""
    head = _HEADER.pack(message.kind, message.worker, len(message.connection_id))
    if message.address is None:
        return head + message.connection_id
    host = str(message.address[0]).encode("ascii")
    port = int(message.address[1])
    return head + message.connection_id + _ADDRESS.pack(port, len(host)) + host + message.datagram


def decode_message(data: bytes) -> RoutedMessage:
    """Parse `encode_message`'s bytes; `ValueError` when they are not such a message."""
    try:
        kind, worker, length = _HEADER.unpack_from(data)
        at = _HEADER.size
        connection_id = data[at : at + length]
        at += length
        if len(connection_id) != length or kind not in (FORWARD, ASK, OWNER, NOT_OWNER):
            raise ValueError("not a routed QUIC message")
        if kind in (OWNER, NOT_OWNER):
            return RoutedMessage(kind, worker, connection_id)
        port, host_length = _ADDRESS.unpack_from(data, at)
        at += _ADDRESS.size
        host = data[at : at + host_length].decode("ascii")
        if len(host) != host_length:
            raise ValueError("truncated address")
        address: tuple[Any, ...] = (host, port, 0, 0) if ":" in host else (host, port)
        return RoutedMessage(kind, worker, connection_id, address, data[at + host_length :])
    except (struct.error, UnicodeDecodeError) as error:
        raise ValueError(f"not a routed QUIC message: {error}") from None


def short_header_connection_id(datagram: bytes, length: int) -> bytes | None:
    """The destination connection id of a short-header packet, None for a long header."""
    if len(datagram) <= 1 + length or datagram[0] & LONG_HEADER:
        return None
    return datagram[1 : 1 + length]


def _holds(quic_server: QuicServer) -> Mapping[bytes, Any]:
    """aioquic's connection id -> connection table of `quic_server` (read, never written)."""
    return server_connections(quic_server)


@dataclass(slots=True)
class RoutingStats:
    """What one worker's routing did (`routing_stats` sums the live ones of a process)."""

    asked: int = 0
    """Datagrams sent to every other worker (owner unknown)."""
    forwarded: int = 0
    """Datagrams sent to their known owner."""
    received: int = 0
    """Routed datagrams this worker handled for a connection it holds."""
    dropped: int = 0
    """Datagrams for unknown connection ids dropped (asked recently, rate limit, backlog)."""


_LIVE: weakref.WeakSet[WorkerRouting] = weakref.WeakSet()


def routing_stats() -> RoutingStats:
    """The sums of this process's live routings' `RoutingStats`."""
    total = RoutingStats()
    for routing in list(_LIVE):
        stats = routing.stats
        total.asked += stats.asked
        total.forwarded += stats.forwarded
        total.received += stats.received
        total.dropped += stats.dropped
    return total


class WorkerRouting(asyncio.DatagramProtocol):
    """Sits between a worker's shared UDP socket and aioquic's `QuicServer` (see the module).

    `bind` gives the socket to serve on, `wrap` is `serve_links`'s ``wrap``.
    """

    def __init__(self, shared: SharedPorts, connection_id_length: int) -> None:
        self.shared = shared
        self.stats = RoutingStats()
        self._cid_length = connection_id_length
        self._quic: QuicServer | None = None
        self._connections: Mapping[bytes, Any] = {}
        self._owners: OrderedDict[bytes, int] = OrderedDict()
        self._asked: dict[bytes, float] = {}
        self._ask_budget = float(ASKS_PER_SECOND)
        self._budget_at = 0.0
        self._path = ""
        self._peers: dict[int, str] = {}
        self._peer_transport: asyncio.DatagramTransport | None = None
        self._peer_socket = _PeerSocket(self)
        self._loop = asyncio.get_running_loop()
        _LIVE.add(self)

    async def bind(self, host: str, port: int) -> socket.socket:
        """The UDP socket to serve on: the supervisor's for this worker, else a new
        ``SO_REUSEPORT`` one; and this worker's routing socket, listening."""
        sock = self.shared.sockets.get("quic")
        if sock is None:
            sock = _reuse_port_socket(host, port)
        bound_port = sock.getsockname()[1]
        directory = self.shared.directory
        self._path = os.path.join(directory, f"quic-{bound_port}-{self.shared.worker}")
        self._peers = {
            worker: os.path.join(directory, f"quic-{bound_port}-{worker}")
            for worker in range(self.shared.workers)
            if worker != self.shared.worker
        }
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)  # left by this worker's previous process
        peer_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            peer_socket.setblocking(False)
            peer_socket.bind(self._path)
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: self._peer_socket, sock=peer_socket
            )
        except BaseException:
            peer_socket.close()
            raise
        self._peer_transport = transport
        return sock

    def wrap(self, quic_server: QuicServer) -> asyncio.DatagramProtocol:
        """`serve_links`'s ``wrap``: route in front of `quic_server`."""
        self._quic = quic_server
        self._connections = _holds(quic_server)
        return self

    # ------------------------------------------------------------ the shared socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self._quic is not None
        self._quic.connection_made(transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self._quic is not None
        connection_id = short_header_connection_id(data, self._cid_length)
        if connection_id is not None and connection_id not in self._connections:
            self._route(connection_id, data, addr)
            return
        self._quic.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        assert self._quic is not None
        self._quic.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        _LIVE.discard(self)
        if self._peer_transport is not None:
            self._peer_transport.close()
            self._peer_transport = None
            with contextlib.suppress(OSError):
                os.unlink(self._path)
        if self._quic is not None:
            self._quic.connection_lost(exc)

    # ------------------------------------------------------------ routing

    def _route(self, connection_id: bytes, data: bytes, addr: tuple[str | Any, int]) -> None:
        address = (str(addr[0]), int(addr[1]), *addr[2:])
        owner = self._owners.get(connection_id)
        if owner is not None:
            self._owners.move_to_end(connection_id)
            if self._send(
                owner, RoutedMessage(FORWARD, self.shared.worker, connection_id, address, data)
            ):
                self.stats.forwarded += 1
            return
        now = self._loop.time()
        if now - self._asked.get(connection_id, -ASK_INTERVAL) < ASK_INTERVAL or not self._spend(
            now
        ):
            self.stats.dropped += 1
            return
        if len(self._asked) >= 4096:
            self._asked = {key: at for key, at in self._asked.items() if now - at < ASK_INTERVAL}
        self._asked[connection_id] = now
        message = encode_message(
            RoutedMessage(ASK, self.shared.worker, connection_id, address, data)
        )
        for worker in self._peers:
            self._send_bytes(worker, message)
        self.stats.asked += 1

    def _spend(self, now: float) -> bool:
        """Take one ask from the budget (refilled at `ASKS_PER_SECOND`)."""
        self._ask_budget = min(
            float(ASKS_PER_SECOND), self._ask_budget + (now - self._budget_at) * ASKS_PER_SECOND
        )
        self._budget_at = now
        if self._ask_budget < 1.0:
            return False
        self._ask_budget -= 1.0
        return True

    def _send(self, worker: int, message: RoutedMessage) -> bool:
        return self._send_bytes(worker, encode_message(message))

    def _send_bytes(self, worker: int, data: bytes) -> bool:
        transport = self._peer_transport
        path = self._peers.get(worker)
        if transport is None or path is None or self._peer_socket.paused:
            # Nowhere to send, or the other workers are not reading (asyncio's
            # buffer is over its high-water mark): drop, as a network would.
            self.stats.dropped += 1
            return False
        transport.sendto(data, path)
        return True

    def peer_message(self, data: bytes) -> None:
        """A message from another worker (see `RoutedMessage`)."""
        try:
            message = decode_message(data)
        except ValueError:
            return
        if message.worker not in self._peers:
            return
        if message.kind in (FORWARD, ASK):
            assert message.address is not None
            if message.connection_id in self._connections and self._quic is not None:
                self.stats.received += 1
                self._quic.datagram_received(message.datagram, message.address)
                if message.kind == ASK:
                    self._send(
                        message.worker,
                        RoutedMessage(OWNER, self.shared.worker, message.connection_id),
                    )
            elif message.kind == FORWARD:
                self._send(
                    message.worker,
                    RoutedMessage(NOT_OWNER, self.shared.worker, message.connection_id),
                )
        elif message.kind == OWNER:
            self._owners[message.connection_id] = message.worker
            self._owners.move_to_end(message.connection_id)
            if len(self._owners) > MAX_OWNERS:
                self._owners.popitem(last=False)
        elif self._owners.get(message.connection_id) == message.worker:
            del self._owners[message.connection_id]


class _PeerSocket(asyncio.DatagramProtocol):
    """A worker's Unix datagram socket: messages from the other workers."""

    def __init__(self, routing: WorkerRouting) -> None:
        self.routing = routing
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.routing.peer_message(data)

    def error_received(self, exc: Exception) -> None:
        # A peer that is restarting has no socket yet: its datagram is lost,
        # like any datagram; the client's retransmission comes back later.
        logger.debug("QUIC worker routing: %s", exc)


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A UDP socket bound to `host`:`port` with ``SO_REUSEPORT`` (IPv4 or IPv6 by `host`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
