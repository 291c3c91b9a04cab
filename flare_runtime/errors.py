"""Flare's exceptions, one tree rooted at `FlareError`.

::

    FlareError
    ├── RpcError              a call failed; carries a StatusCode, message and details
    ├── ProtocolError         the wire protocol was broken; closes the connection
    │   ├── LocalProtocolError    we broke the rules (a bug in Flare or its caller)
    │   └── RemoteProtocolError   the peer broke the rules
    ├── ConnectionClosedError the connection is gone (carries the close reason)
    └── ConfigurationError    a server, client or route is set up wrongly

RPC errors never close a connection; protocol errors always do. Exceptions
raised by third-party libraries (websockets, aioquic, grpcio) are translated
into this tree at the transport boundary.
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
    """

    def __init__(
        self,
        code: StatusCode,
        message: str = "",
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r}, details={len(self.details)})"


class ProtocolError(FlareError):
    """The Flare wire protocol was violated; the connection is closed."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


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
