"""The per-call context every handler receives as its last argument.

Generated handler bases type their methods as
``async def send(self, request: SendRequest, context: CallContext) -> SendReply``.
Transports create the context; handlers read call facts from it and may set
response headers and trailers through it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flare_runtime.auth import Principal
from flare_runtime.metadata import EMPTY_METADATA, Metadata, MetadataLike
from flare_runtime.routing import Route, Transport

if TYPE_CHECKING:
    from flare_runtime.server_connection import ServerConnection


class CallContext:
    """Facts about one call, and the handler's handle on its response metadata.

    Attributes are read-only for handlers except through the methods below.
    `deadline` is on the `time.monotonic()` clock; `None` means no deadline.
    """

    __slots__ = (
        "_response_headers",
        "_response_trailers",
        "connection",
        "deadline",
        "metadata",
        "peer",
        "principal",
        "route",
        "transport",
    )

    # Transports pass everything positionally: a class called with keywords
    # costs ~0.3 us more per call on CPython 3.11 (measured), and one context
    # is made per call.
    def __init__(  # noqa: PLR0917 - positional on purpose, see above
        self,
        route: Route[Any, Any],
        transport: Transport,
        metadata: Metadata = EMPTY_METADATA,
        deadline: float | None = None,
        peer: str = "",
        principal: Principal | None = None,
        connection: ServerConnection | None = None,
    ) -> None:
        self.route = route
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.transport = transport
        self.principal = principal
        self.connection = connection
        """The client connection the call arrived on (for pushes); None on gRPC."""
        self._response_headers: Metadata = EMPTY_METADATA
        self._response_trailers: Metadata = EMPTY_METADATA

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def set_response_headers(self, metadata: MetadataLike) -> None:
        """Add response headers; they are sent with the first response message."""
        self._response_headers = self._response_headers + metadata

    def set_trailers(self, metadata: MetadataLike) -> None:
        """Add trailers; they are sent with the call's final status."""
        self._response_trailers = self._response_trailers + metadata

    def has_metadata_to_send(self, headers_sent: bool) -> bool:
        """True when trailers are set, or response headers are and `headers_sent` is False.

        What a transport asks before ending a call: without metadata to send,
        the last response and the OK status can leave as one frame. Identity
        tests only (the setters replace the immutable `Metadata`), so the
        answer costs no further call.
        """
        return self._response_trailers is not EMPTY_METADATA or (
            not headers_sent and self._response_headers is not EMPTY_METADATA
        )

    @property
    def connection_id(self) -> str | None:
        """The id of the connection the call arrived on (`ServerConnection.connection_id`)."""
        connection = self.connection
        return None if connection is None else connection.connection_id

    @property
    def response_headers(self) -> Metadata:
        """Headers set so far by the handler and interceptors."""
        return self._response_headers

    @property
    def trailers(self) -> Metadata:
        """Trailers set so far by the handler and interceptors."""
        return self._response_trailers


CURRENT_CALL: ContextVar[CallContext | None] = ContextVar("flare_current_call", default=None)
"""The call the running code serves: set by the `Dispatcher` in each call's own task
before auth, interceptors and the handler run, so a log record written anywhere under a
handler can say which call it belongs to (`flare_runtime.observability.logs`)."""


def current_call() -> CallContext | None:
    """The `CallContext` of the call the running task serves, or None outside a call."""
    return CURRENT_CALL.get()
