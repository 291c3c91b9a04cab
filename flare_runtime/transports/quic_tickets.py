"""TLS 1.3 session tickets for QUIC resumption and 0-RTT.

Two stores, one per side (see docs/transports/quic.md, "0-RTT"):

* `TicketStore` (client): where a client keeps the tickets servers issue it, so
  that its next connection to the same server resumes the TLS session and may
  send idempotent calls as 0-RTT early data. `MemoryTicketStore` is the
  default; implement the two-method protocol to keep tickets elsewhere (a file,
  a keychain) or to share them between channels.
* `ServerTicketStore` (server): the tickets a server issued. aioquic tickets are
  *stateful*: the ticket the client holds is only a random 64-byte label; the
  resumption secret stays here. Every ticket is **single-use** (`take` removes
  it), which is what makes replayed early data fail: a replay of a client's
  first flight names a ticket that is already gone, so the server falls back to
  a full handshake and discards the replayed 0-RTT packets unread.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only annotations: the stores import without the quic extra
    from aioquic.tls import SessionTicket


class TicketStore(Protocol):
    """Client-side storage of session tickets, keyed by server.

    `server` is an opaque key the channel builds from the URL and the TLS server
    name (``"localhost:8443"``); a store must keep tickets of different servers
    apart. The contract:

    * `add` is called (on the event loop, must not block) each time a server
      issues a ticket, usually right after a handshake.
    * `take` is called once per new connection; it returns a ticket to resume
      with and **forgets it** (RFC 8446 appendix C.4: a ticket is used for one
      connection, so that connections cannot be linked and early data is not
      offered twice under one ticket), or None to make a full handshake.
      Returning an expired ticket is harmless (aioquic ignores it).
    """

    def add(self, server: str, ticket: SessionTicket) -> None:
        """Remember `ticket`, issued by `server`."""

    def take(self, server: str) -> SessionTicket | None:
        """Remove and return the newest usable ticket for `server`, if any."""


class MemoryTicketStore:
    """The default `TicketStore`: tickets in memory, lost when the process ends.

    Bounded: at most `per_server` tickets per server (newest kept) and
    `max_servers` servers (least recently used dropped).
    """

    def __init__(self, *, per_server: int = 4, max_servers: int = 256) -> None:
        if per_server < 1 or max_servers < 1:
            raise ValueError("per_server and max_servers must be at least 1")
        self._per_server = per_server
        self._max_servers = max_servers
        self._tickets: OrderedDict[str, deque[SessionTicket]] = OrderedDict()

    def add(self, server: str, ticket: SessionTicket) -> None:
        """Remember `ticket` for `server`, dropping the oldest beyond the bounds."""
        tickets = self._tickets.get(server)
        if tickets is None:
            tickets = self._tickets[server] = deque(maxlen=self._per_server)
            while len(self._tickets) > self._max_servers:
                self._tickets.popitem(last=False)
        else:
            self._tickets.move_to_end(server)
        tickets.append(ticket)

    def take(self, server: str) -> SessionTicket | None:
        """Remove and return the newest still-valid ticket for `server`."""
        tickets = self._tickets.get(server)
        while tickets:
            ticket = tickets.pop()
            if ticket.is_valid:
                return ticket
        return None

    def __len__(self) -> int:
        """Number of tickets held, over all servers."""
        return sum(len(tickets) for tickets in self._tickets.values())


class ServerTicketStore:
    """Server-side session tickets: single-use, bounded, expiring.

    Pass `add` as aioquic's ``session_ticket_handler`` and `take` as its
    ``session_ticket_fetcher``. At most `capacity` tickets are held; beyond it
    the oldest is forgotten (that client then makes a full handshake, nothing
    worse). The store lives in one server process: tickets issued by one worker
    do not resume on another, so 0-RTT replay across workers is impossible too.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()
        self.issued = 0
        """Tickets issued so far (for metrics and tests)."""
        self.resumed = 0
        """Tickets taken for a resumption so far."""

    def add(self, ticket: SessionTicket) -> None:
        """Record a ticket the server just issued."""
        self._tickets[ticket.ticket] = ticket
        self.issued += 1
        while len(self._tickets) > self._capacity:
            self._tickets.popitem(last=False)

    def take(self, label: bytes) -> SessionTicket | None:
        """Remove and return the ticket named `label`; None when unknown or used.

        Removing it is the anti-replay rule: a second ClientHello naming the
        same ticket (a replay, or a client that reused a ticket) cannot resume,
        so its early data is never decrypted.
        """
        ticket = self._tickets.pop(label, None)
        if ticket is None or not ticket.is_valid:
            return None
        self.resumed += 1
        return ticket

    def __len__(self) -> int:
        """Number of unused tickets held."""
        return len(self._tickets)
