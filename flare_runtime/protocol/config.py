"""Connection roles, limits and the settings exchanged in the HELLO handshake.

See docs/wire-format.md §4 (handshake) and §7 (limits).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PROTOCOL_VERSION = 1
"""The wire-protocol version this implementation speaks (docs/wire-format.md §4)."""

MIN_INITIAL_WINDOW_SIZE = 65_536
"""Smallest per-call receive window a peer may announce.

A client may start calls before the server's HELLO arrives; until then it
assumes the server's window is exactly this, so a server may announce more,
never less (docs/wire-format.md §6).
"""

MIN_MAX_FRAME_SIZE = 16_384
"""Smallest `max_frame_size` a peer may announce."""


class Role(enum.Enum):
    """Which end of the connection this is. Only clients start calls."""

    CLIENT = "client"
    SERVER = "server"


CLIENT = Role.CLIENT
SERVER = Role.SERVER


@dataclass(frozen=True, slots=True)
class Settings:
    """What one endpoint announces in its HELLO frame: the limits it enforces on input.

    Each field is a limit on what this endpoint *accepts*; the peer must stay
    within it when sending. The ids are the setting ids on the wire.
    """

    max_frame_size: int = 262_144
    """Largest payload of any frame except MESSAGE and PUSH (setting id 1)."""
    max_message_size: int = 4 * 1024 * 1024
    """Largest MESSAGE or PUSH payload (setting id 2)."""
    max_concurrent_calls: int = 1_000
    """Most calls a server runs at once on this connection (setting id 3)."""
    initial_window_size: int = 262_144
    """Bytes of message data the peer may send on a new call before it gets credit (id 4)."""
    max_metadata_size: int = 16_384
    """Largest encoded metadata block (call headers, response headers, trailers) (id 5)."""
    compact_calls: bool = True
    """Accepts the compact call frames: a CALL_START carrying the request, a MESSAGE that
    ends the call (id 6, value 1; docs/wire-format.md §3.2, §3.4). A peer that does not
    announce it is sent the two-frame forms."""


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Everything one end of a Flare connection needs to know that is not on the wire.

    `settings` are announced to the peer and enforced on input. The rest is
    local policy: time limits in seconds (on the caller's `now` clock), the
    bound on input this endpoint buffers for the application, and how the
    asyncio endpoint (`flare_runtime.wire`) batches its output.
    """

    settings: Settings = Settings()
    max_buffered_input: int = 16 * 1024 * 1024
    """Most message bytes received but not yet acknowledged, over all calls.

    A message that would exceed it fails its call with RESOURCE_EXHAUSTED, so a
    peer spread over many calls cannot make this endpoint buffer without bound.
    """
    keepalive_interval: float | None = 20.0
    """Send a PING after this many seconds without input; None turns keepalive off."""
    keepalive_timeout: float = 20.0
    """Close with KEEPALIVE_TIMEOUT when no PONG (or other input) arrives this long after a PING."""
    handshake_timeout: float = 10.0
    """Close with PROTOCOL_ERROR when the peer's HELLO has not arrived this long after start."""
    window_update_ratio: float = 0.5
    """Announce acknowledged bytes once they reach this fraction of the window (batching)."""
    flush_batch: int = 16
    """Most sends the endpoint gathers into one write before writing at once.

    With many calls in flight the peer then starts on the first answers while
    this side finishes the rest, instead of both sides taking turns at whole
    windows; 1 writes every send on its own (docs/transports/websocket.md).
    """

    def __post_init__(self) -> None:
        settings = self.settings
        if settings.initial_window_size < MIN_INITIAL_WINDOW_SIZE:
            raise ValueError(f"initial_window_size must be >= {MIN_INITIAL_WINDOW_SIZE}")
        if settings.max_frame_size < MIN_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be >= {MIN_MAX_FRAME_SIZE}")
        for name in ("max_message_size", "max_concurrent_calls", "max_metadata_size"):
            value = getattr(settings, name)
            if not 0 < value < 1 << 32:
                raise ValueError(f"{name} must be between 1 and 2**32 - 1, got {value}")
        if settings.initial_window_size >= 1 << 31 or settings.max_frame_size >= 1 << 32:
            raise ValueError("window and frame sizes must fit the wire's 31/32-bit fields")
        if not 0.0 < self.window_update_ratio <= 1.0:
            raise ValueError("window_update_ratio must be in (0, 1]")
        if self.max_buffered_input <= 0:
            raise ValueError("max_buffered_input must be positive")
        if self.flush_batch < 1:
            raise ValueError("flush_batch must be at least 1")
