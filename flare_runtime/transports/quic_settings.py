"""The QUIC transport's settings, importable without aioquic.

`QuicServerSettings` is a table of the configuration schema
(``[transports.quic]`` in flare.toml, docs/operations.md), which a plain
install without the ``quic`` extra still reads; so the settings, the datagram
batching knobs (`LinkTuning`) and the handshake admission counters
(`HandshakeGuard`) live here, apart from the aioquic plumbing in
`flare_runtime.transports.quic_link` and `flare_runtime.transports.quic`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flare_runtime.errors import ConfigurationError
from flare_runtime.transports.quic_tickets import ServerTicketStore

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds of silence after which QUIC closes a connection (both sides)."""


@dataclass(frozen=True, slots=True)
class LinkTuning:
    """How a `QuicLink` batches datagrams (docs/transports/quic.md, "Output batching").

    The defaults suit a busy connection on loopback and on a LAN; each was
    chosen with ``bench.quic_bench`` (bench/RESULTS.md has the runs).
    """

    transmit_hops: int = 16
    """Most event-loop iterations a tail waits for the loop to have nothing else ready."""
    blind_transmit_hops: int = 3
    """Iterations a tail waits on a loop that cannot be seen going idle (uvloop)."""
    tail_hold: float = 0.002
    """Most seconds a tail waits after a full datagram while the peer has not answered."""
    datagrams_per_wakeup: int = 32
    """Most datagrams a socket hands on per read-readiness callback (`DrainingSocket`)."""
    datagram_overhead: int = 64
    """Bytes of a datagram not available to Flare-stream data (QUIC header, AEAD tag,
    STREAM frame header, room for an ACK frame): a chunk is the rest."""

    def __post_init__(self) -> None:
        if min(self.transmit_hops, self.blind_transmit_hops, self.datagrams_per_wakeup) < 1:
            raise ValueError(
                "transmit_hops, blind_transmit_hops and datagrams_per_wakeup must be at least 1"
            )
        if self.tail_hold < 0 or self.datagram_overhead < 0:
            raise ValueError("tail_hold and datagram_overhead must not be negative")


DEFAULT_TUNING = LinkTuning()


class HandshakeGuard:
    """Admission control for new connections on one server socket (sans-I/O counters).

    `address_validation` picks when a new client must first prove its address
    with a Retry round trip (RFC 9000 §8.1): "always", "never", or "load" --
    once `retry_threshold` handshakes are in progress. Retry is stateless: a
    spoofed Initial gets a Retry packet and costs no connection. Beyond
    `max_handshakes` in progress, Initial packets that would start a
    connection are dropped. A handshake not complete `handshake_timeout`
    seconds after its first packet is abandoned.
    """

    MODES = ("always", "load", "never")

    def __init__(
        self,
        *,
        address_validation: str = "load",
        retry_threshold: int = 128,
        max_handshakes: int = 1024,
        handshake_timeout: float = 10.0,
    ) -> None:
        if address_validation not in self.MODES:
            raise ValueError(f"address_validation must be one of {', '.join(self.MODES)}")
        if retry_threshold < 0 or max_handshakes < 1:
            raise ValueError("retry_threshold must be >= 0 and max_handshakes >= 1")
        if not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        self.address_validation = address_validation
        self.retry_threshold = retry_threshold
        self.max_handshakes = max_handshakes
        self.handshake_timeout = handshake_timeout
        self.in_progress = 0
        """Connections created whose handshake has neither completed nor given up."""

    def must_retry(self) -> bool:
        """True when a new client must first prove its address (send it a Retry)."""
        mode = self.address_validation
        return mode == "always" or (mode == "load" and self.in_progress >= self.retry_threshold)

    @property
    def full(self) -> bool:
        """True when no new handshake may start."""
        return self.in_progress >= self.max_handshakes


@dataclass
class QuicServerSettings:
    """QUIC knobs of a listener (defaults suit most servers)."""

    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Seconds a connection may stay idle (no packet received) before it is closed
    (RFC 9000 §10.1)."""
    ticket_capacity: int = 65_536
    """Most unused session tickets remembered (0 disables resumption and 0-RTT)."""
    ticket_store: ServerTicketStore | None = None
    """Where issued tickets are kept; default a single-use `ServerTicketStore`.

    A replacement must keep tickets single-use, or the 0-RTT anti-replay
    guarantee shrinks to its second half (docs/transports/quic.md).
    """
    link: LinkTuning = DEFAULT_TUNING
    """How each connection batches datagrams (`LinkTuning`)."""
    address_validation: str = "load"
    """When a new client must first prove its address with a Retry round trip (RFC 9000
    §8.1), so that spoofed Initial packets cost no state: "load" (default: once
    `retry_threshold` handshakes are in progress), "always" (one more round trip on every
    connection; 0-RTT then saves nothing) or "never"."""
    retry_threshold: int = 128
    """Handshakes in progress from which "load" sends Retry to new clients."""
    max_handshakes: int = 1024
    """Most handshakes in progress; Initial packets that would start another are dropped."""
    handshake_timeout: float = 10.0
    """Seconds a new connection may take to complete its TLS handshake before it is dropped."""

    def __post_init__(self) -> None:
        try:
            self.guard()
        except ValueError as error:
            raise ConfigurationError(f"QuicServerSettings: {error}") from None

    def guard(self) -> HandshakeGuard:
        """The admission control these settings describe (one per listening socket)."""
        return HandshakeGuard(
            address_validation=self.address_validation,
            retry_threshold=self.retry_threshold,
            max_handshakes=self.max_handshakes,
            handshake_timeout=self.handshake_timeout,
        )
