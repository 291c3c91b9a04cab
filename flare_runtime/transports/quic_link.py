"""aioquic plumbing for the QUIC transport: one QUIC connection carrying one Flare byte stream.

This module knows QUIC and nothing of Flare frames. A `QuicLink` owns an aioquic
`QuicConnection` (sans-I/O; the loop's clock is passed in as ``now``) and moves
the bytes of **one long-lived bidirectional stream** (stream 0, opened by the
client) between the network and a `LinkListener` -- the runtime's endpoint for
that connection. Why one stream and not a stream per call: see
docs/transports/quic.md, "Stream strategy" (a stream per call costs aioquic
~2.6x the CPU per message, measured).

What the link adds to aioquic's `QuicConnectionProtocol`:

* every datagram already queued on the socket is handled per wake-up
  (`DrainingSocket`), not one per event-loop iteration, and aioquic's
  connection timer is re-armed once after them, not after each;
* output is cut into full datagrams (`OutputCoalescer`): each whole
  datagram's worth of written bytes leaves at once; the remainder (the *tail*)
  waits until the event loop has nothing else ready to run (at most
  `LinkTuning.transmit_hops` iterations; a fixed `blind_transmit_hops` on
  loops that cannot be seen going idle, e.g. uvloop), and -- while a full
  datagram sent earlier is still unanswered -- until the peer's next datagram
  or `LinkTuning.tail_hold` seconds, so a busy connection sends full datagrams
  rather than a full one plus a scrap (Nagle's rule, bounded;
  docs/transports/quic.md, "Output batching");
* the *early-data phase* is tracked: on a server, bytes received before the
  TLS handshake completed arrived as 0-RTT early data (`in_early_data`);
* anything but stream 0 (a second stream, a server-initiated stream, a reset
  of stream 0) is a protocol violation that closes this connection only;
* a client link can `rebind` to a new local UDP port mid-connection (what a NAT
  rebinding or a network change looks like to the server), and sends QUIC
  PINGs when idle so NAT bindings and the idle timeout stay fresh;
* a server admits new connections through a `HandshakeGuard`: handshakes in
  progress are counted and capped, each must complete within a timeout, and
  under load (or always, by configuration) a client must first prove its
  address with a stateless Retry round trip (RFC 9000 §8.1), so spoofed Initial
  packets cost no connection state (`AdmittingQuicServer`).

What aioquic keeps private and the link needs (a stream's unacknowledged and
unsent bytes, the peer's current address) is read in one place,
`flare_runtime.transports.aioquic_shim`; whether the loop is idle, in
`flare_runtime.transports.asyncio_shim`. Like aioquic's own `transmit`, the link
re-arms the protocol's connection timer (`QuicConnectionProtocol._timer`,
``_timer_at``, ``_handle_timer``: the subclass contract).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, cast

from aioquic._buffer import Buffer  # aioquic.buffer re-exports it without __all__
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler

from flare_runtime.transports.aioquic_shim import (
    network_peer_address,
    server_connections,
    set_server_retry,
    stream_has_unsent_data,
    stream_unacked_bytes,
)
from flare_runtime.transports.asyncio_shim import ready_queue
from flare_runtime.transports.quic_settings import DEFAULT_TUNING, HandshakeGuard, LinkTuning
from flare_runtime.transports.quic_tickets import ServerTicketStore

logger = logging.getLogger("flare_runtime.transports.quic")

FLARE_STREAM_ID = 0
"""The client's first bidirectional stream carries the whole Flare connection."""

RECEIVE_SIZE = 65536
"""Largest datagram read from the socket (QUIC datagrams are far smaller)."""


NO_ERROR = 0x0
"""QUIC application close code: orderly close."""
FLARE_PROTOCOL_ERROR = 0x1
"""QUIC application close code: the Flare wire protocol or the stream rules were broken."""
FLARE_INTERNAL_ERROR = 0x2
"""QUIC application close code: this side failed unexpectedly."""


class OutputCoalescer:
    """Cuts the outgoing Flare byte stream into datagram-sized chunks (sans-I/O).

    `push` returns the whole chunks available now (to be sent at once) and
    keeps the remainder, the tail, until `take_tail`. `hold_tail` says the
    tail should wait: a full chunk left since the peer last sent anything, so
    its answer (and the writes that answer triggers) is on the way and will
    most likely fill the tail up; `peer_sent` clears it. A link flushes a
    held tail after `LinkTuning.tail_hold` seconds at the latest.
    """

    __slots__ = ("_tail", "chunk_size", "full_sent")

    def __init__(self, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self._tail = bytearray()
        self.full_sent = False
        """A whole chunk was handed out since `peer_sent` was last called."""

    def push(self, data: bytes) -> bytes:
        """Add `data`; return every whole chunk now available (b"" when none)."""
        tail = self._tail
        tail += data
        whole = len(tail) - len(tail) % self.chunk_size
        if not whole:
            return b""
        chunks = bytes(tail[:whole])
        del tail[:whole]
        self.full_sent = True
        return chunks

    def take_tail(self) -> bytes:
        """Return and forget the bytes that do not fill a chunk."""
        if not self._tail:
            return b""
        tail = bytes(self._tail)
        self._tail.clear()
        return tail

    def peer_sent(self) -> None:
        """The peer sent a datagram: a held tail may go."""
        self.full_sent = False

    @property
    def tail_size(self) -> int:
        """Bytes waiting in the tail."""
        return len(self._tail)

    @property
    def hold_tail(self) -> bool:
        """True while the tail should wait for the peer (see the class docstring)."""
        return self.full_sent and bool(self._tail)


class LinkListener(Protocol):
    """What a `QuicLink` drives: the Flare endpoint of one connection.

    Called on the event loop, never concurrently; none of them may block.
    """

    def link_data_received(self, data: bytes, early: bool) -> None:
        """Bytes of the Flare stream arrived; `early`: they came as 0-RTT data."""

    def link_handshake_completed(self, early_data_accepted: bool) -> None:
        """The TLS handshake finished (after this, no byte is early data)."""

    def link_acked(self) -> None:
        """A datagram was processed while `QuicLink.watch_acks` is set (acks may have freed
        send buffer)."""

    def link_lost(self, reason: str, error_code: int) -> None:
        """The QUIC connection is gone (closed by either side, or timed out)."""


class QuicLink(QuicConnectionProtocol):
    """One QUIC connection carrying one Flare byte stream (see the module docstring).

    After construction set `listener` before the first datagram is handled.
    """

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        tuning: LinkTuning = DEFAULT_TUNING,
    ) -> None:
        super().__init__(quic)
        self.loop = asyncio.get_running_loop()
        self.listener: LinkListener | None = None
        self.handshake_complete = False
        self.early_data_accepted = False
        self.session_resumed = False
        self.alpn_protocol: str | None = None
        self.closed = False
        self.close_reason = ""
        self.peer_address: tuple[str, int] | None = None
        self.received_bytes = 0
        """Flare-stream bytes received (a test can tell 0-RTT bytes from the rest)."""
        self.early_bytes = 0
        """Of `received_bytes`, those that arrived before the handshake completed."""
        self.early_bytes_sent = 0
        """Flare-stream bytes written before the handshake completed (0-RTT on a client)."""
        self.watch_acks = False
        """When set, the listener's `link_acked` runs after every datagram received."""
        self.is_client: bool = quic.configuration.is_client
        self.tuning = tuning
        self.socket: asyncio.DatagramTransport | None = None
        """The datagram transport (`connection_made`); None until then."""
        self._tail_scheduled = False  # a deferred transmit of the tail is on its way
        # The loop's ready callbacks, where it shows them (asyncio_shim), else a fixed wait.
        self._ready_queue = ready_queue(self.loop)
        self._hops = (
            tuning.transmit_hops if self._ready_queue is not None else tuning.blind_transmit_hops
        )
        self._stream_written = 0  # bytes handed to aioquic on the Flare stream
        self._rearm_pending = False  # a datagram arrived; no transmit pass re-armed since
        self._output = OutputCoalescer(
            quic.configuration.max_datagram_size - tuning.datagram_overhead
        )
        self._tail_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """:meta private: aioquic's, keeping the transport for the link's own checks."""
        super().connection_made(transport)
        self.socket = cast(asyncio.DatagramTransport, transport)

    # --------------------------------------------------------------- sending

    def write(self, data: bytes) -> None:
        """Queue `data` on the Flare stream.

        Whole datagrams' worth leave at once; the rest follows when the link
        goes quiet, or with the next write that completes a datagram (see the
        module docstring). Data written while closed is dropped (the listener
        learns of the close through `link_lost`).
        """
        if self.closed:
            return
        chunks = self._output.push(data)
        if chunks:
            self._send_stream_data(chunks)
        if not self.handshake_complete:
            # Before the handshake every byte leaves at once: 0-RTT data is
            # only early if it beats the server's handshake reply.
            self.early_bytes_sent += len(data)
            if self.socket is not None:
                self.transmit()
            return
        if chunks:
            self._rearm_pending = False  # aioquic's transmit pass re-arms the timer
            QuicConnectionProtocol.transmit(self)
        if self._output.tail_size:
            self._transmit_later()

    def flush(self) -> None:
        """Send everything written so far now, tail included."""
        if self.socket is not None and not self.closed:
            self.transmit()

    def transmit(self) -> None:
        """:meta private: aioquic's; sends everything queued (the tail too)."""
        self._tail_scheduled = False
        self._rearm_pending = False  # aioquic's transmit pass re-arms the timer
        tail = self._output.take_tail()
        if tail:
            self._send_stream_data(tail)
        super().transmit()

    def _send_stream_data(self, data: bytes) -> None:
        self._quic.send_stream_data(FLARE_STREAM_ID, data)
        self._stream_written += len(data)

    def _transmit_later(self) -> None:
        if not self._tail_scheduled:
            self._tail_scheduled = True
            self.loop.call_soon(self._deferred_transmit, self._hops)

    def _deferred_transmit(self, hops: int) -> None:
        if not self._tail_scheduled:
            return  # a transmit pass sent everything meanwhile
        # Other callbacks ready: they may write more (a loop whose queue cannot
        # be seen waits its fixed number of iterations).
        ready = self._ready_queue
        if hops > 1 and (ready is None or ready):
            self.loop.call_soon(self._deferred_transmit, hops - 1)
            return
        if self.socket is None:
            return
        if self._output.hold_tail:
            # Nagle: a full datagram is unanswered; its answer comes with more
            # to send. `datagram_received` reschedules, the timer bounds the wait.
            self._tail_scheduled = False
            if self._tail_timer is None:
                self._tail_timer = self.loop.call_later(
                    self.tuning.tail_hold, self._tail_held_too_long
                )
            return
        self.transmit()

    def _rearm_soon(self) -> None:
        # One re-arm per loop iteration however many datagrams arrived in it
        # (`DrainingSocket` hands over bursts), and none when a transmit pass
        # (which re-arms) runs first: aioquic's get_timer is costly (µs).
        if not self._rearm_pending:
            self._rearm_pending = True
            self.loop.call_soon(self._rearm_if_pending)

    def _rearm_if_pending(self) -> None:
        if self._rearm_pending:
            self._rearm_timer()

    def _rearm_timer(self) -> None:
        # aioquic re-arms its connection timer only at the end of a transmit
        # pass (QuicConnectionProtocol.transmit); this is that step alone.
        self._rearm_pending = False
        timer_at = self._quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self.loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at

    def _tail_held_too_long(self) -> None:
        self._tail_timer = None
        self._output.peer_sent()
        if self._output.tail_size and self.socket is not None and not self.closed:
            self.transmit()

    @property
    def buffered_bytes(self) -> int:
        """Flare-stream bytes written and not yet acknowledged by the peer."""
        return self._output.tail_size + stream_unacked_bytes(self._quic, FLARE_STREAM_ID)

    def abort(self, error_code: int, reason: str) -> None:
        """Close the QUIC connection now with `error_code` (see the codes above)."""
        if self.closed:
            return
        if self._output.tail_size and self.socket is not None:
            self.transmit()  # what was written goes before the CONNECTION_CLOSE
        self._mark_closed(reason)
        self._quic.close(error_code=error_code, reason_phrase=reason[:200])
        self.transmit()

    def close(self, error_code: int = NO_ERROR, reason_phrase: str = "") -> None:
        """Close (aioquic's signature): CONNECTION_CLOSE with `error_code` now."""
        self.abort(error_code, reason_phrase)

    # ------------------------------------------------------------- receiving

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """:meta private: aioquic's, without its transmit pass after every datagram (see below)."""
        self._output.peer_sent()
        quic = self._quic
        quic.receive_datagram(cast(bytes, data), addr, now=self.loop.time())
        if not self.is_client:
            # After a migration aioquic promotes the new path to the first place;
            # known before the events, so a listener created by them sees it.
            self.peer_address = network_peer_address(quic)
        self._process_events()
        # aioquic transmits after every datagram. Here the listener's writes
        # send themselves, and an ACK owed for the datagram rides on the next
        # one or goes when aioquic's ACK delay (1 ms) expires; only a held tail,
        # the handshake and stream data aioquic could not send before need a
        # transmit pass from here. Its timer (ACK delay, loss detection, idle
        # timeout) must follow the datagram either way: by the end of this
        # loop iteration's callbacks (`_rearm_soon`).
        if (
            self._output.tail_size
            or not self.handshake_complete
            or stream_has_unsent_data(quic, FLARE_STREAM_ID, self._stream_written)
        ):
            self._transmit_later()
        self._rearm_soon()
        if self.watch_acks and self.listener is not None:
            self.listener.link_acked()

    def quic_event_received(self, event: QuicEvent) -> None:
        """:meta private: dispatch one aioquic event."""
        if isinstance(event, StreamDataReceived):
            self._stream_data(event)
        elif isinstance(event, HandshakeCompleted):
            self.handshake_complete = True
            self.early_data_accepted = event.early_data_accepted
            self.session_resumed = event.session_resumed
            self.alpn_protocol = event.alpn_protocol
            if self.listener is not None:
                self.listener.link_handshake_completed(event.early_data_accepted)
        elif isinstance(event, StreamReset | StopSendingReceived):
            if event.stream_id == FLARE_STREAM_ID:
                self.abort(FLARE_PROTOCOL_ERROR, "the Flare stream was reset by the peer")
            else:
                self.abort(FLARE_PROTOCOL_ERROR, f"unexpected QUIC stream {event.stream_id}")
        elif isinstance(event, ConnectionTerminated):
            reason = event.reason_phrase or f"QUIC error 0x{event.error_code:x}"
            self._mark_closed(reason, event.error_code)

    def _stream_data(self, event: StreamDataReceived) -> None:
        if self.closed:
            return
        if event.stream_id != FLARE_STREAM_ID:
            # Flare uses exactly one stream (docs/transports/quic.md).
            self.abort(FLARE_PROTOCOL_ERROR, f"unexpected QUIC stream {event.stream_id}")
            return
        if event.end_stream:
            self.abort(FLARE_PROTOCOL_ERROR, "the Flare stream was ended by the peer")
            return
        data = event.data
        if not data:
            return
        early = not self.handshake_complete
        self.received_bytes += len(data)
        if early:
            self.early_bytes += len(data)
        if self.listener is not None:
            self.listener.link_data_received(data, early)

    def _mark_closed(self, reason: str, error_code: int = NO_ERROR) -> None:
        first = not self.closed
        self.closed = True
        if self._tail_timer is not None:
            self._tail_timer.cancel()
            self._tail_timer = None
        if first:
            self.close_reason = reason
            if self.listener is not None:
                self.listener.link_lost(reason, error_code)


class ClientLink(QuicLink):
    """The client end: owns its UDP socket, can move to a new local port, pings when idle."""

    def __init__(
        self,
        quic: QuicConnection,
        *,
        keepalive_interval: float | None,
        tuning: LinkTuning = DEFAULT_TUNING,
    ) -> None:
        super().__init__(quic, tuning=tuning)
        self.handshake_done: asyncio.Future[None] = self.loop.create_future()
        self._keepalive_interval = keepalive_interval
        self._keepalive: asyncio.TimerHandle | None = None
        self._last_input = self.loop.time()
        self._socket: _UdpSocket | None = None

    async def open(self, host: str, port: int) -> None:
        """Bind a UDP socket and start the handshake (returns without waiting for it)."""
        address = await _resolve(host, port)
        await self._bind(address[0])
        self.connect(address)
        if self._keepalive_interval:
            self._keepalive = self.loop.call_later(self._keepalive_interval, self._tick)

    async def rebind(self) -> tuple[str, int]:
        """Move to a new local UDP port; return the new local address.

        The QUIC connection (and every call on it) continues: the server sees
        datagrams from a new address, validates the path and switches to it
        (RFC 9000 §9). A PING is sent at once so the switch happens now.
        """
        old = self._socket
        remote = network_peer_address(self._quic)
        assert remote is not None  # a connected link has a path
        await self._bind(remote[0])
        if old is not None:
            old.transport.close()
        self._quic.send_ping(0)
        self.transmit()
        assert self._socket is not None
        return cast("tuple[str, int]", self._socket.transport.get_extra_info("sockname")[:2])

    async def _bind(self, remote_host: str) -> None:
        family = socket.AF_INET6 if ":" in remote_host else socket.AF_INET
        local = "::" if family == socket.AF_INET6 else "0.0.0.0"
        if remote_host in ("127.0.0.1", "::1"):
            local = remote_host
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((local, 0))
        endpoint = _UdpSocket(self)
        await self.loop.create_datagram_endpoint(
            lambda: DrainingSocket(endpoint, sock, self.tuning.datagrams_per_wakeup), sock=sock
        )
        self._socket = endpoint

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """:meta private:"""
        self._last_input = self.loop.time()
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        """:meta private:"""
        super().quic_event_received(event)
        if isinstance(event, HandshakeCompleted):
            if not self.handshake_done.done():
                self.handshake_done.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            self._stop()

    def _mark_closed(self, reason: str, error_code: int = NO_ERROR) -> None:
        super()._mark_closed(reason, error_code)
        if not self.handshake_done.done():
            self.handshake_done.set_exception(ConnectionError(reason))
            # Nobody may await it (a failed connect is reported elsewhere).
            self.handshake_done.exception()

    def _tick(self) -> None:
        # Keepalive: a QUIC PING when nothing arrived for an interval keeps the
        # peer's idle timer and any NAT binding fresh (RFC 9000 §10.1.2).
        interval = self._keepalive_interval
        if self.closed or interval is None:
            return
        now = self.loop.time()
        if now - self._last_input >= interval * 0.9:
            self._quic.send_ping(0)
            self.transmit()
        self._keepalive = self.loop.call_later(interval, self._tick)

    def _stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._socket is not None:
            # Let aioquic's CONNECTION_CLOSE leave before the socket goes.
            self.loop.call_soon(self._socket.transport.close)

    def release(self) -> None:
        """Stop timers and close the socket (after `close`, or when abandoning the link)."""
        self._mark_closed(self.close_reason or "closed")
        self._stop()


class DrainingSocket(asyncio.DatagramProtocol):
    """Hands `inner` every datagram already queued on `sock` per wake-up, not one.

    asyncio's datagram transport reads one datagram per read-readiness
    callback, so under load every datagram costs a loop iteration (a
    `select` call and the loop's bookkeeping) and is handled alone. After the
    datagram the transport read, this reads on from the (non-blocking) socket
    until it would block, at most `per_wakeup` in all, so a burst is handled
    in one callback and its answers leave together. `sock` must be the socket
    the transport was created on.
    """

    def __init__(
        self,
        inner: asyncio.DatagramProtocol,
        sock: socket.socket,
        per_wakeup: int = DEFAULT_TUNING.datagrams_per_wakeup,
    ) -> None:
        self.inner = inner
        self._sock = sock
        self._per_wakeup = per_wakeup
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.inner.connection_made(self._transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        inner = self.inner
        inner.datagram_received(data, addr)
        transport = self._transport
        receive = self._sock.recvfrom
        for _ in range(self._per_wakeup - 1):
            if transport is None or transport.is_closing():
                return
            try:
                data, addr = receive(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable, reported on a read
                inner.error_received(exc)
                return
            inner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


class _UdpSocket(asyncio.DatagramProtocol):
    """The client's UDP socket; forwards datagrams to the link (so the link can rebind)."""

    def __init__(self, link: ClientLink) -> None:
        self.link = link
        self.transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.link.connection_made(transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.link.socket is self.transport:
            self.link.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) are not fatal for QUIC: loss
        # detection and the idle timeout handle an unreachable peer.
        logger.debug("QUIC client socket error: %s", exc)


async def _resolve(host: str, port: int) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    # Prefer IPv4 for "localhost" (servers here bind 127.0.0.1).
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return cast("tuple[str, int]", infos[0][4][:2])


ListenerFactory = Callable[["ServerLink"], LinkListener]
"""Builds the endpoint of a new server connection (called once per connection)."""


class ServerLink(QuicLink):
    """The server end of one connection, created by aioquic's `QuicServer`.

    Its listener is created lazily, at the first Flare-stream byte or at the
    handshake's completion, whichever comes first: a connection that never
    completes TLS (wrong ALPN, bad certificate, a replayed first flight) costs
    no endpoint.
    """

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        factory: ListenerFactory,
        guard: HandshakeGuard | None = None,
        tuning: LinkTuning = DEFAULT_TUNING,
    ) -> None:
        super().__init__(quic, tuning=tuning)
        self._factory = factory
        self._guard = guard
        self._handshake_timer: asyncio.TimerHandle | None = None
        if guard is not None:
            guard.in_progress += 1
            self._handshake_timer = self._loop.call_later(
                guard.handshake_timeout, self._handshake_timed_out
            )

    def quic_event_received(self, event: QuicEvent) -> None:
        """:meta private:"""
        if self.listener is None and not self.closed:
            wanted = isinstance(event, HandshakeCompleted) or (
                isinstance(event, StreamDataReceived) and event.stream_id == FLARE_STREAM_ID
            )
            if wanted:
                self.listener = self._factory(self)
        if isinstance(event, HandshakeCompleted):
            self._handshake_over()
        super().quic_event_received(event)

    def _mark_closed(self, reason: str, error_code: int = NO_ERROR) -> None:
        self._handshake_over()
        super()._mark_closed(reason, error_code)

    def _handshake_over(self) -> None:
        """The handshake completed or the connection closed: it is no longer in progress."""
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None:
            timer.cancel()
            assert self._guard is not None
            self._guard.in_progress -= 1

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        if self._guard is not None:
            self._guard.in_progress -= 1
        if not self.handshake_complete and not self.closed:
            self.abort(NO_ERROR, "handshake timed out")


class AdmittingQuicServer(QuicServer):
    """aioquic's `QuicServer`, admitting new connections through a `HandshakeGuard`.

    Packets of existing connections (every short-header packet, and long-header
    packets for a known connection id) pass straight to aioquic. An Initial that
    would create a connection is dropped when the guard is full, and otherwise
    handled by aioquic with or without Retry as the guard decides; an Initial
    carrying a token (the answer to a Retry) always has it validated.

    The shim: aioquic decides Retry per server from its private ``_retry``
    attribute (a `QuicRetryTokenHandler` or None) and keeps connections in
    ``_protocols``; this class sets the first per new-connection packet and
    reads the second. tests/runtime/transports/test_quic_link.py checks both
    against the installed aioquic (it fails loudly if they change).
    """

    def __init__(self, *, guard: HandshakeGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard
        self._retry_tokens = QuicRetryTokenHandler()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """:meta private: admission control, then aioquic's own handling."""
        if data and cast(bytes, data)[0] & 0x80 and self._admit(cast(bytes, data)):
            return
        super().datagram_received(data, addr)

    def _admit(self, data: bytes) -> bool:
        """Decide Retry for a long-header packet; return True to drop it."""
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._configuration.connection_id_length
            )
        except ValueError:
            return False  # aioquic ignores it too
        if (
            header.packet_type != QuicPacketType.INITIAL
            or header.destination_cid in server_connections(self)
        ):
            return False
        guard = self.guard
        if guard.full:
            return True
        # A token answers a Retry we sent: validate it even if no longer under load.
        retry = header.token or guard.must_retry()
        set_server_retry(self, self._retry_tokens if retry else None)
        return False


async def serve_links(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    factory: ListenerFactory,
    tickets: ServerTicketStore | None,
    guard: HandshakeGuard | None = None,
    sock: socket.socket | None = None,
    wrap: Callable[[QuicServer], asyncio.DatagramProtocol] | None = None,
    tuning: LinkTuning = DEFAULT_TUNING,
) -> tuple[QuicServer, int]:
    """Listen for QUIC on `host`:`port`; each connection gets ``factory(link)``.

    Returns aioquic's server and the bound port. With `tickets`, the server
    issues session tickets (resumption and 0-RTT) and accepts each one once
    (see `ServerTicketStore`). New connections are admitted through `guard`
    (default: a `HandshakeGuard` with its defaults). aioquic's `serve`, reading
    through a `DrainingSocket`. The port is this process's alone unless `sock`,
    an already bound UDP socket, is given to serve on (a worker's
    ``SO_REUSEPORT`` socket); `wrap` puts a protocol between the socket and
    aioquic's server (`flare_runtime.transports.quic_workers`).
    """
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = await _bound_socket(host, port)
    sock.setblocking(False)
    guard = guard if guard is not None else HandshakeGuard()
    server = AdmittingQuicServer(
        guard=guard,
        configuration=configuration,
        create_protocol=partial(ServerLink, factory=factory, guard=guard, tuning=tuning),
        session_ticket_handler=tickets.add if tickets is not None else None,
        session_ticket_fetcher=tickets.take if tickets is not None else None,
    )
    try:
        bound_port = int(sock.getsockname()[1])
        inner = server if wrap is None else wrap(server)
        await loop.create_datagram_endpoint(
            lambda: DrainingSocket(inner, sock, tuning.datagrams_per_wakeup), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    return server, bound_port


async def _bound_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to the first address `host`:`port` resolves to
    that can be bound (what ``create_datagram_endpoint(local_addr=...)`` does)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned an empty list")
    error: OSError | None = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    assert error is not None
    raise error
