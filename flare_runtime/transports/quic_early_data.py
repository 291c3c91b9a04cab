"""The 0-RTT rule, enforced on the Flare byte stream: only idempotent calls ride early data.

A resumed QUIC client may send data before the TLS handshake completes (0-RTT
early data, RFC 9001 §4.6). An attacker who recorded that first flight can
replay it (RFC 8446 §8), so Flare lets only calls to routes marked
``idempotent`` travel in it (docs/transports/quic.md, "0-RTT"). One
`EarlyDataGate` sits on each side of the early-data phase:

* **client, outgoing**: bytes the endpoint writes before the handshake pass
  until the first CALL_START of a non-idempotent route; from that frame on,
  everything is held and sent when the handshake completes. A non-idempotent
  call is therefore never in early data; calls started after it wait too
  (the stream is ordered), calls started before it are not delayed.
* **server, incoming**: the same rule on the bytes received as early data, so a
  client that breaks it (or a replay of one that did) gets its non-idempotent
  call *held until the handshake completes* -- which a replayer cannot make
  happen -- never executed from early data.

The gate reads only frame headers and the wire id of each CALL_START, through
`flare_runtime.protocol.frames.peek_frame` (docs/wire-format.md §2-3): it
never copies a frame it lets pass, and once the
handshake is done it is dropped, costing nothing afterwards. It is sans-I/O:
bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Callable

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.protocol.frames import HEADER_SIZE, peek_frame

MAX_HELD_BYTES = 4 * 1024 * 1024
"""Most bytes a gate holds back; QUIC flow control keeps early data far below this."""


class EarlyDataGate:
    """Splits the bytes of the early-data phase into "may pass now" and "held".

    `is_idempotent(wire_id)` says whether a route may run in early data;
    unknown routes count as non-idempotent. Feed bytes in stream order with
    `feed`; it returns the prefix that may pass. `release`, called when the
    handshake completes, returns the rest; the gate is not used after it.
    """

    __slots__ = ("_held", "_is_idempotent", "_pending", "_skip", "held_calls", "passed_calls")

    def __init__(self, is_idempotent: Callable[[int], bool]) -> None:
        self._is_idempotent = is_idempotent
        self._pending = b""  # an undecided frame header split across feeds (< 14 bytes)
        self._skip = 0  # bytes of the current frame's payload still to pass through
        self._held: bytearray | None = None  # set once a non-idempotent call is seen
        self.held_calls = 0
        """1 once the gate has held a non-idempotent CALL_START, else 0."""
        self.passed_calls = 0
        """CALL_STARTs (of idempotent routes) let through in early data."""

    @property
    def holding(self) -> bool:
        """True once bytes are being held back."""
        return self._held is not None

    def feed(self, data: bytes) -> bytes:
        """Return the part of `data` that may be delivered (or sent) now; hold the rest.

        Raises `RemoteProtocolError` when more than `MAX_HELD_BYTES` are held.
        """
        if self._held is not None:
            self._hold(data)
            return b""
        if self._pending:
            # Rare: a header was split across feeds; its bytes were not passed yet.
            data = self._pending + data
            self._pending = b""
        size = len(data)
        pos = 0
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                continue
            head = peek_frame(data, pos)
            if head is None:  # the header (or a CALL_START's wire id) is not all here yet
                self._pending = data[pos:]
                return data[:pos]
            _frame_type, length, wire_id = head
            if wire_id is not None:  # a CALL_START
                if not self._is_idempotent(wire_id):
                    self.held_calls = 1
                    self._held = bytearray()
                    self._hold(data[pos:])
                    return data[:pos]
                self.passed_calls += 1
            pos += HEADER_SIZE
            self._skip = length
        return data

    def release(self) -> bytes:
        """The handshake completed: return every byte not yet passed, in order."""
        rest = self._pending + (bytes(self._held) if self._held is not None else b"")
        self._pending = b""
        self._held = None
        return rest

    def _hold(self, data: bytes) -> None:
        assert self._held is not None
        self._held += data
        if len(self._held) > MAX_HELD_BYTES:
            raise RemoteProtocolError("too much data held until the QUIC handshake completes")
