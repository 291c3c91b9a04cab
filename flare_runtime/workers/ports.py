"""The supervisor's hold on the ports its workers share.

Before any worker starts, the supervisor claims each served address for the
workers of this one ``flare serve`` (`reserve_port`):

* it binds the address *exclusively* first, so a port another server holds
  -- a single process, or another ``flare serve --workers`` -- is refused with
  "address already in use" instead of being shared by accident, and port 0
  becomes one real port all workers use;
* TCP (WebSocket, gRPC): it keeps a bound, never-listening socket, switched to
  ``SO_REUSEPORT`` after the exclusive bind. Each worker's listener binds and
  listens on the port with ``SO_REUSEPORT`` itself, so the kernel spreads new
  connections over the workers that are alive (a dead worker's listening
  socket is gone with it); the reservation only keeps the port held;
* UDP (QUIC): it binds one ``SO_REUSEPORT`` socket per worker and keeps all of
  them open; worker *i* serves on socket *i*, and a restarted worker gets the
  same socket back. The kernel picks a socket by a hash of the datagram's
  addresses over the group's sockets, so a group that never changes size
  keeps every client on its worker across restarts of the others.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from flare_runtime.server import parse_address


@dataclass(slots=True)
class ReservedPort:
    """One served address, held for the workers (see the module docstring)."""

    transport: str
    address: str
    """The address as given (``host:port``; port 0 allowed)."""
    host: str
    port: int
    """The port every worker serves on (the chosen one when `address` said 0)."""
    kind: str
    """``"tcp"`` or ``"udp"`` (the transport's `TransportSpec.shared_port`)."""
    sockets: list[socket.socket] = field(default_factory=list)
    """TCP: the reservations (one per address `host` resolves to); UDP: one per worker."""

    @property
    def worker_address(self) -> str:
        """``host:port`` with the real port, as the workers' listeners are given it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def socket_for(self, worker: int) -> socket.socket | None:
        """The socket worker `worker` serves on (UDP), or None (TCP: it binds its own)."""
        return self.sockets[worker] if self.kind == "udp" else None

    def close(self) -> None:
        """Release the port."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def reserve_port(transport: str, address: str, kind: str, workers: int) -> ReservedPort:
    """Claim `address` for `workers` workers of `transport`; `OSError` when it is taken."""
    host, port = parse_address(address)
    reserved = ReservedPort(transport, address, host, port, kind)
    try:
        if kind == "udp":
            _reserve_udp(reserved, workers)
        elif kind == "tcp":
            _reserve_tcp(reserved)
        else:
            raise ValueError(f"unknown kind of shared port {kind!r}")
    except BaseException:
        reserved.close()
        raise
    return reserved


def _reserve_tcp(reserved: ReservedPort) -> None:
    port = reserved.port
    for family, kind, proto, _name, sockaddr in _addresses(reserved.host, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        reserved.sockets.append(sock)
        # SO_REUSEADDR as every listener sets it (a port left in TIME_WAIT by
        # the previous run can be bound); SO_REUSEPORT only once bound, so
        # the bind itself fails when another socket holds the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((sockaddr[0], port, *sockaddr[2:]))
        port = sock.getsockname()[1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.port = port


def _reserve_udp(reserved: ReservedPort, workers: int) -> None:
    family, kind, proto, _name, sockaddr = _addresses(reserved.host, socket.SOCK_DGRAM)[0]
    # The exclusive bind is only a question (is the port free? which port is
    # 0?): a UDP socket must have SO_REUSEPORT when it binds to join the
    # group the kernel balances over, so the workers' sockets are new ones.
    with socket.socket(family, kind, proto) as probe:
        probe.bind((sockaddr[0], reserved.port, *sockaddr[2:]))
        port = probe.getsockname()[1]
    for _ in range(workers):
        sock = socket.socket(family, kind, proto)
        reserved.sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((sockaddr[0], port, *sockaddr[2:]))
    reserved.port = port


def _addresses(host: str, kind: socket.SocketKind) -> list[tuple]:  # type: ignore[type-arg]
    """What `host` resolves to for binding (IPv4 first, like the listeners)."""
    infos = socket.getaddrinfo(host, 0, type=kind, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned an empty list")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos
