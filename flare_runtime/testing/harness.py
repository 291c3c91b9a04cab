"""Transport harnesses: how the conformance suite serves and reaches each transport.

A transport's `TransportSpec` (`flare_runtime.transport_registry`) names its
harness factory, ``def harness() -> Harness``; a transport that names none
gets `default_harness`: served on 127.0.0.1 port 0 without TLS, reached at
``<scheme>://127.0.0.1:<port>``, every capability claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flare_runtime.auth import JWTAuth, issue_jwt
from flare_runtime.client import Channel, Connecting, connect
from flare_runtime.context import CallContext
from flare_runtime.errors import ConfigurationError
from flare_runtime.interceptors import (
    ServerInterceptor,
    StreamCallNext,
    UnaryCallNext,
)
from flare_runtime.server import Server, ServerOptions
from flare_runtime.testing.service import PUSH_TYPES, SERVICE, ConformanceService
from flare_runtime.transport_registry import REGISTRY, TransportSpec

JWT_KEY = "flare-conformance-signing-key-0123456789abcdef"
"""HS256 key the conformance server trusts (tests only)."""


@dataclass
class Harness:
    """How to serve a `Server` on one transport and the URL a client uses to reach it.

    `start` binds 127.0.0.1 port 0 and returns the client URL. Capabilities a
    transport lacks are declared here, so the suite skips those tests *by
    name*, never silently.
    """

    name: str
    start: Callable[[Server], Any]
    """``async (server) -> url``."""
    supports_push: bool = True
    supports_connection_auth: bool = True
    """Token given at connect authenticates the connection (gRPC: sent per call)."""
    connect_options: dict[str, Any] = field(default_factory=dict)


HarnessFactory = Callable[[], Harness]
"""What a `TransportSpec`'s ``harness`` names."""


def get_harness(name: str) -> Harness:
    """The conformance harness of the registered transport `name` (a plugin's included)."""
    spec = REGISTRY.get(name)
    factory: HarnessFactory | None = spec.load_harness()
    harness = default_harness(spec) if factory is None else factory()
    if not isinstance(harness, Harness):
        raise ConfigurationError(f"transport {name!r}: its harness gave {harness!r}, not a Harness")
    return harness


def default_harness(spec: TransportSpec) -> Harness:
    """Serve on 127.0.0.1 port 0 without TLS; connect to ``<scheme>://127.0.0.1:<port>``."""

    async def start(server: Server) -> str:
        await server.start(listen={spec.name: "127.0.0.1:0"})
        return f"{spec.url_scheme(secure=False)}://127.0.0.1:{server.port(spec.name)}"

    return Harness(spec.name, start)


class RecordingInterceptor(ServerInterceptor):
    """Records the order interceptors run in and tags each call's trailers."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def intercept_unary(
        self, request: Any, context: CallContext, call_next: UnaryCallNext
    ) -> Any:
        self.log.append(f"{self.name}:in")
        try:
            return await call_next(request, context)
        finally:
            self.log.append(f"{self.name}:out")
            if "x-intercept" in context.metadata:
                context.set_trailers({f"x-seen-by-{self.name}": "yes"})

    def intercept_stream(
        self, requests: Any, context: CallContext, call_next: StreamCallNext
    ) -> Any:
        return self._stream(requests, context, call_next)

    async def _stream(self, requests: Any, context: CallContext, call_next: StreamCallNext) -> Any:
        self.log.append(f"{self.name}:in")
        try:
            async for response in call_next(requests, context):
                yield response
        finally:
            self.log.append(f"{self.name}:out")
            if "x-intercept" in context.metadata:
                context.set_trailers({f"x-seen-by-{self.name}": "yes"})


@dataclass
class Rig:
    """A running conformance server on one transport, and how to reach it."""

    harness: Harness
    server: Server
    service: ConformanceService
    url: str
    interceptor_log: list[str]

    def connect(self, **options: Any) -> Connecting:
        """`flare_runtime.connect` to this server (``async with rig.connect() as ch``)."""
        merged = {**self.harness.connect_options, "push_tables": [PUSH_TYPES], **options}
        return connect(self.url, **merged)

    async def channel(self, **options: Any) -> Channel:
        """An open channel (close it yourself)."""
        channel: Channel = await self.connect(**options)
        return channel

    @staticmethod
    def token(
        subject: str = "alice", *, scopes: Sequence[str] = (), expires_in: float = 600
    ) -> str:
        """A JWT the rig's server accepts (negative `expires_in`: already expired)."""
        return issue_jwt(JWT_KEY, subject, scopes=scopes, expires_in=expires_in)


async def start_rig(transport: str | Harness, options: ServerOptions | None = None) -> Rig:
    """Start the conformance server on `transport` (a registered transport's name, or a
    harness serving it some other way). Stop it with ``rig.server.shutdown``."""
    harness = get_harness(transport) if isinstance(transport, str) else transport
    service = ConformanceService()
    log: list[str] = []
    server = Server(
        [(SERVICE, service)],
        push_tables=[PUSH_TYPES],
        auth=JWTAuth(JWT_KEY),
        interceptors=[RecordingInterceptor("first", log), RecordingInterceptor("second", log)],
        options=options,
    )
    url: str = await harness.start(server)
    return Rig(harness, server, service, url, log)
