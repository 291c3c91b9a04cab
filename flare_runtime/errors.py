"""Flare's exceptions, one tree rooted at `FlareError`.

::

    FlareError
    ├── RpcError                   a call failed: a StatusCode, message and details
    ├── ProtocolError              the Flare wire protocol's rules were at stake
    │   ├── LocalProtocolError         this side tried a step the rules forbid
    │   │   ├── LimitExceededError         ... sending more than the peer accepts
    │   │   └── FlowControlBlockedError    ... sending without flow-control credit
    │   └── RemoteProtocolError        the peer broke the rules
    ├── ConnectionClosedError      the connection is gone (carries the close reason)
    ├── ConfigurationError         a server, client, route or plugin is set up wrongly
    ├── SchemaError                a server's reflection cannot be used (flare_runtime.reflection)
    ├── MalformedEnvelopeError     bytes on a cluster channel that are no envelope
    │                              (flare_runtime.cluster; dropped and counted, never raised
    │                              to applications)
    ├── MalformedEventError        an IM cluster payload that does not parse (likewise)
    └── StorageError               an IM storage backend failed (flare_runtime.im.storage)
        └── ConversationExistsError

What each does to the connection:

* `RpcError` never closes it: the call ends with the status, other calls go on.
* `RemoteProtocolError` always closes it: the protocol core answers the
  peer's violation with a CLOSE frame (docs/wire-format.md §8), and the
  transports close on one they detect themselves.
* `LocalProtocolError` never does: it is raised to the code that tried the
  step, before anything is queued, so the connection stays usable. The
  runtime reports `LimitExceededError` to the caller as RESOURCE_EXHAUSTED
  and waits on `FlowControlBlockedError`'s condition before sending.

Exceptions raised by third-party libraries (websockets, aioquic, grpcio) are
translated into this tree at the transport boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from flare_runtime.status import StatusCode


class FlareError(Exception):
    """Root of every exception Flare raises on purpose."""


class RpcError(FlareError):
    """A call ended with a non-OK status.

    Raise it from a handler to end the call with `code`; the client sees an
    `RpcError` with the same code, message and details on every transport.
    `details` are protobuf messages, carried like gRPC's
    `google.rpc.Status.details` (packed into `google.protobuf.Any`).

    `not_processed` is True only when the client knows for certain that no
    server processed the call: it was never sent (the connection was closed
    or draining), or the server's GOAWAY excluded it (docs/wire-format.md
    §3.10). Such a call is safe to send again, to any server, whatever the
    route; the balancing channel does (docs/discovery.md, "Retries").
    """

    def __init__(
        self,
        code: StatusCode,
        message: str = "",
        details: Sequence[Message] = (),
        *,
        not_processed: bool = False,
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)
        self.not_processed = not_processed

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r}, details={len(self.details)})"


class ProtocolError(FlareError):
    """The Flare wire protocol's rules: see `LocalProtocolError` and `RemoteProtocolError`."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids; nothing was sent."""


class LimitExceededError(LocalProtocolError):
    """What we tried to send exceeds a limit the peer announced (message or metadata size).

    Nothing was queued; the runtime reports it as RESOURCE_EXHAUSTED.
    """


class FlowControlBlockedError(LocalProtocolError):
    """The call has no send credit: wait for `WindowUpdated` on it, then send again.

    Check ``available_credit(call_id) > 0`` (or the value `send_message`
    returns) before sending to avoid this; it means the peer's application
    stopped consuming, and the sender must stop too (docs/wire-format.md §6).
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; the connection is closed."""


class ConnectionClosedError(FlareError):
    """The connection is closed; `reason` says why."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or "connection closed")
        self.reason = reason


class ConfigurationError(FlareError):
    """A server, client, route or plugin is configured wrongly."""


def describe(error: BaseException) -> str:
    """`error`'s message, or its type's name when it has none.

    For messages built as ``f"cannot connect to {url}: {describe(error)}"``:
    some errors carry no text (``ConnectionResetError()`` from a TLS handshake
    the server closed), and a reason must never be empty.
    """
    return str(error) or type(error).__name__
