"""The Flare wire protocol, sans-I/O: bytes in, events out (docs/wire-format.md).

Nothing here imports asyncio or a transport library, and nothing reads a
clock: time comes in as ``now``. Transport adapters (WebSocket, QUIC) pump
bytes between a socket and a `Connection`; the runtime turns its events into
calls.

Layout: `frames` (header, frame types, encoders/decoders), `events` (what a
connection reports), `state` (the per-call transition table), `config` (roles,
settings, limits), `connection` (the state machine tying them together),
`loopback` (`ConnectionPair`: two connections back to back, for tests).
"""

from __future__ import annotations

from flare_runtime.protocol.config import (
    CLIENT,
    PROTOCOL_VERSION,
    SERVER,
    ProtocolConfig,
    Role,
    Settings,
)
from flare_runtime.protocol.connection import (
    Connection,
    FlowControlBlockedError,
    LimitExceededError,
)
from flare_runtime.protocol.events import (
    CallCancelled,
    CallEnded,
    CallStarted,
    ConnectionClosed,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    HeadersReceived,
    MessageReceived,
    PingReceived,
    PongReceived,
    PushReceived,
    StreamEnded,
    WindowUpdated,
)
from flare_runtime.protocol.frames import CloseCode, FrameType, PreparedPush, encode_push
from flare_runtime.protocol.state import CallInput, CallState

__all__ = [
    "CLIENT",
    "PROTOCOL_VERSION",
    "SERVER",
    "CallCancelled",
    "CallEnded",
    "CallInput",
    "CallStarted",
    "CallState",
    "CloseCode",
    "Connection",
    "ConnectionClosed",
    "Event",
    "FlowControlBlockedError",
    "FrameType",
    "GoAwayReceived",
    "HandshakeCompleted",
    "HeadersReceived",
    "LimitExceededError",
    "MessageReceived",
    "PingReceived",
    "PongReceived",
    "PreparedPush",
    "ProtocolConfig",
    "PushReceived",
    "Role",
    "Settings",
    "StreamEnded",
    "WindowUpdated",
    "encode_push",
]
