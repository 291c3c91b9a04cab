"""Events a `Connection` reports to the layer above (docs/wire-format.md §9).

Each event is a small frozen dataclass named for what happened. Which role
sees which event:

==================  ======  ======  =============================================
event               client  server  produced by
==================  ======  ======  =============================================
HandshakeCompleted  yes     yes     the peer's HELLO
CallStarted                 yes     CALL_START (a compact one: with the request)
HeadersReceived     yes             HEADERS
MessageReceived     yes     yes     MESSAGE (``end_stream`` only on the server)
StreamEnded                 yes     HALF_CLOSE
CallEnded           yes             END_CALL (or a compact end), a local failure
CallCancelled               yes     CANCEL, deadline, or a call-level limit
PushReceived        yes             PUSH
PingReceived        yes     yes     PING (the PONG is already queued)
PongReceived        yes     yes     PONG
GoAwayReceived      yes             GOAWAY
WindowUpdated       yes     yes     WINDOW_UPDATE
ConnectionClosed    yes     yes     CLOSE, a protocol error, or keepalive timeout
==================  ======  ======  =============================================
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import TypeVar

from flare_runtime.metadata import MetadataValue
from flare_runtime.protocol.config import Settings
from flare_runtime.protocol.frames import CloseCode
from flare_runtime.status import StatusCode


class Event:
    """Base class of every protocol event."""

    __slots__ = ()


_EventT = TypeVar("_EventT", bound=Event)


def _fast_init(cls: type[_EventT]) -> type[_EventT]:
    """Give a frozen, slotted event dataclass an equivalent but faster ``__init__``.

    The ``__init__`` that dataclasses generates for a frozen class sets each
    field through a global ``object.__setattr__`` lookup; setting the slots
    through their member descriptors (held in a closure) is markedly faster
    (bench/RESULTS.md), and events are created per message. Same signature,
    same defaults, same resulting object (tests/runtime/protocol/test_protocol_events.py).
    """
    names = [field.name for field in fields(cls)]  # type: ignore[arg-type]
    params = ", ".join(
        name if field.default is MISSING else f"{name}=_default_{name}"
        for name, field in zip(names, fields(cls), strict=True)  # type: ignore[arg-type]
    )
    closure = {f"_set_{name}": getattr(cls, name).__set__ for name in names}
    closure.update(
        {
            f"_default_{field.name}": field.default
            for field in fields(cls)  # type: ignore[arg-type]
            if field.default is not MISSING
        }
    )
    body = "".join(f"        _set_{name}(self, {name})\n" for name in names)
    source = (
        f"def _make({', '.join(closure)}):\n"
        f"    def __init__(self, {params}):\n{body}"
        "    return __init__\n"
    )
    namespace: dict[str, object] = {}
    exec(source, {}, namespace)
    init = namespace["_make"](**closure)  # type: ignore[operator]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@_fast_init
@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """The peer's HELLO arrived and a version was agreed.

    On the client, calls may be started before this event; they are sent at once
    (the handshake does not cost a round trip).
    """

    version: int
    peer_settings: Settings


@_fast_init
@dataclass(frozen=True, slots=True)
class CallStarted(Event):
    """Server: the client opened a call.

    `deadline` is on the caller's `now` clock (`now` at receipt + `timeout`);
    both are None when the client set no deadline. The connection itself ends
    the call with DEADLINE_EXCEEDED when the deadline passes (`handle_timer`).

    `message` is the request of a compact call start (§3.2), else None. With
    it the client also half-closed: no `MessageReceived` or `StreamEnded`
    follows on the call, and the request's credit is acknowledged like a
    `MessageReceived`'s.
    """

    call_id: int
    wire_id: int
    """The route's wire id (``service_id << 16 | route_id``, docs/wire-format.md §3.2)."""
    metadata: tuple[tuple[str, MetadataValue], ...]
    timeout: float | None
    deadline: float | None
    message: bytes | None = None


@_fast_init
@dataclass(frozen=True, slots=True)
class HeadersReceived(Event):
    """Client: the server sent its response headers (at most once, before any message)."""

    call_id: int
    metadata: tuple[tuple[str, MetadataValue], ...]


@_fast_init
@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A message arrived on a call.

    `end_stream` is True when the client sent its last message (a half-close
    in the same frame); no `StreamEnded` follows then. Call
    `Connection.acknowledge(call_id, len(data))` once the application has
    consumed it, so the peer gets credit to send more.
    """

    call_id: int
    data: bytes
    end_stream: bool = False


@_fast_init
@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """Server: the client half-closed the call without a final message."""

    call_id: int


@_fast_init
@dataclass(frozen=True, slots=True)
class CallEnded(Event):
    """Client: the call is over, with this status; nothing more happens on it.

    `local` is True when this endpoint ended it (deadline passed, a limit was
    exceeded, the server's GOAWAY excluded it) rather than the server's
    END_CALL. A call excluded by GOAWAY ends with UNAVAILABLE and was never
    processed, so it is safe to retry.

    `final` is the server's last message when it came with the end (a compact
    end, §3.4: status OK, no trailers), else None; no `MessageReceived`
    reports it, and nothing needs acknowledging for it.
    """

    call_id: int
    status: StatusCode
    message: str = ""
    details: bytes = b""
    trailers: tuple[tuple[str, MetadataValue], ...] = ()
    local: bool = False
    final: bytes | None = None


@_fast_init
@dataclass(frozen=True, slots=True)
class CallCancelled(Event):
    """Server: the call is over before the handler finished; stop its handler.

    `code` is CANCELLED (client's CANCEL), DEADLINE_EXCEEDED (the deadline
    passed; the END_CALL is already queued) or RESOURCE_EXHAUSTED (the client
    broke a call-level limit; the END_CALL is already queued). Sending on the
    call afterwards is ignored.
    """

    call_id: int
    code: StatusCode
    reason: str = ""


@_fast_init
@dataclass(frozen=True, slots=True)
class PushReceived(Event):
    """Client: the server pushed a message of push type `type_id`."""

    type_id: int
    data: bytes


@_fast_init
@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer sent a PING; the PONG is already queued in `data_to_send()`."""

    data: bytes


@_fast_init
@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    """The peer answered a PING."""

    data: bytes


@_fast_init
@dataclass(frozen=True, slots=True)
class GoAwayReceived(Event):
    """Client: the server is draining; it processes no call above `last_call_id`.

    Calls above it already ended with `CallEnded(UNAVAILABLE, local=True)`
    (reported before this event); `start_call` raises from now on. Calls at or
    below it run to completion.
    """

    last_call_id: int
    reason: str = ""


@_fast_init
@dataclass(frozen=True, slots=True)
class WindowUpdated(Event):
    """The peer granted more send credit on a call; `credit` is the total now available."""

    call_id: int
    credit: int


@_fast_init
@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection is closed; the last event. Every open call is over.

    `by_peer` is True when the peer sent CLOSE; otherwise this endpoint closed
    it (`close()`, a protocol error by the peer, or keepalive timeout) and the
    CLOSE frame is in `data_to_send()`. Send it, then close the transport.
    """

    code: CloseCode
    reason: str
    by_peer: bool
