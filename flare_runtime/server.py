"""`Server`: one set of handlers served over every transport at once.

::

    server = flare.Server([Chat()], interceptors=[Timing()], auth=JWTAuth(key))
    await server.serve(websocket="0.0.0.0:8080")       # until SIGINT/SIGTERM

    # or, in a program that does other things too:
    await server.start(websocket="127.0.0.1:0")
    port = server.port("websocket")
    ...
    await server.shutdown(grace=5.0)

Handlers are objects implementing a generated ``*ServiceBase`` (the server
finds the `ServiceRoutes` on their class), or generated ``register_*``
functions / any callable taking the `Router`, or ``(ServiceRoutes, handler)``
pairs.

Transports plug in as *listeners*, one module per transport named in
`LISTENER_MODULES`; each exposes ``async def start_listener(server, address,
*, tls) -> Listener``. Every listener runs its calls through the server's one
`Dispatcher`, so interceptors, auth and error mapping are the same on all.

Graceful shutdown (`shutdown`): every listener stops accepting, tells its
clients to go away (Flare GOAWAY / gRPC's own), lets calls in flight finish
for up to `grace` seconds, then cancels what is left and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flare_runtime.auth import AuthPlugin
from flare_runtime.dispatch import Dispatcher
from flare_runtime.errors import ConfigurationError
from flare_runtime.interceptors import ServerInterceptor
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.routing import PushTable, Router, ServiceRoutes

if TYPE_CHECKING:
    from flare_runtime.server_connection import ServerConnection

logger = logging.getLogger("flare_runtime.server")

LISTENER_MODULES: dict[str, str] = {
    "websocket": "flare_runtime.transports.websocket",
    "quic": "flare_runtime.transports.quic",
    "grpc": "flare_runtime.transports.grpc_server",
}
"""Transport name → module exposing ``start_listener``. Adding a transport is one line here."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A PEM certificate chain and private key (TLS 1.3 is required where TLS is used)."""

    cert_file: str
    key_file: str


class Listener(Protocol):
    """One transport serving the server's dispatcher on one address."""

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, send go-away, wait up to `grace` s for calls in flight, close."""


ListenerStarter = Callable[..., Any]

ConnectionHook = Callable[["ServerConnection"], None]


@dataclass(slots=True)
class ServerOptions:
    """Options of the Flare wire protocol's listeners (WebSocket and QUIC).

    gRPC takes `protocol`'s limits too (`grpc_server.grpc_limits`); the other
    fields do not apply to it.
    """

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    """Limits announced to clients and enforced on input; keepalive timing."""
    max_write_buffer: int = 1024 * 1024
    """Bytes queued towards a client above which senders on that connection wait."""
    compression: str | None = None
    """WebSocket permessage-deflate: None (default) or "deflate"."""
    eager_handlers: bool | None = None
    """Start each unary handler inside the read callback that decoded its request, not in
    a new task: a handler that never suspends costs no task, and its response leaves with
    the batch its request arrived in.

    None (default): on wherever asyncio has eager tasks, which keep every task semantic.
    True forces it on everywhere; docs/runtime.md ("Eager handlers") says what a
    handler may then not rely on before its first suspension.
    """


class Server:
    """Serves handlers over WebSocket, QUIC and gRPC through one `Dispatcher`.

    Add every service before `start`; the router is frozen then.
    """

    def __init__(
        self,
        services: Iterable[object] = (),
        *,
        interceptors: Sequence[ServerInterceptor] = (),
        auth: AuthPlugin | None = None,
        push_tables: Iterable[PushTable] = (),
        options: ServerOptions | None = None,
        on_connect: ConnectionHook | None = None,
        on_disconnect: ConnectionHook | None = None,
    ) -> None:
        self.router = Router()
        self.interceptors = tuple(interceptors)
        self.auth = auth
        self.options = options or ServerOptions()
        self.on_connect = on_connect
        """Called with each new WebSocket/QUIC connection once it is open."""
        self.on_disconnect = on_disconnect
        """Called with each WebSocket/QUIC connection once it has closed."""
        self.connections: set[ServerConnection] = set()
        """Open WebSocket/QUIC connections (gRPC connections are grpcio's)."""
        self._dispatcher: Dispatcher | None = None
        self._listeners: dict[str, Listener] = {}
        self._stopped = asyncio.Event()
        for service in services:
            self.add(service)
        for table in push_tables:
            self.router.add_push_types(table)

    # ---------------------------------------------------------------- services

    def add(self, service: object) -> None:
        """Add a handler object, a ``register_*(router)`` function, or a (routes, handler) pair."""
        if self._dispatcher is not None:
            raise ConfigurationError("add services before the server starts")
        if isinstance(service, tuple) and len(service) == 2:
            routes, implementation = service
            if not isinstance(routes, ServiceRoutes):
                raise ConfigurationError(f"expected (ServiceRoutes, handler), got {service!r}")
            self.router.add_service(routes, implementation)
            return
        found = _service_routes_of(service)
        if found:
            for routes, push_tables in found:
                self.router.add_service(routes, service)
                for table in push_tables:
                    self.router.add_push_types(table)
            return
        if callable(service):
            service(self.router)
            return
        raise ConfigurationError(
            f"{type(service).__name__} is not a Flare service: implement a generated "
            "*ServiceBase, or pass a register function or a (ServiceRoutes, handler) pair"
        )

    def add_push_types(self, table: PushTable) -> None:
        """Register push type ids so `ServerConnection.push` can send those messages."""
        self.router.add_push_types(table)

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher every transport uses (built on first use; freezes the router)."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(
                self.router, interceptors=self.interceptors, auth=self.auth
            )
        return self._dispatcher

    # ---------------------------------------------------------------- lifecycle

    async def start(
        self,
        *,
        websocket: str | None = None,
        quic: str | None = None,
        grpc: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        """Bind and start each transport given an address (``host:port``; port 0 picks one).

        QUIC requires `tls`; WebSocket and gRPC use it when given (``wss://``,
        ``grpcs://``). Returns once every listener accepts connections.
        """
        addresses = {"websocket": websocket, "quic": quic, "grpc": grpc}
        if not any(addresses.values()):
            raise ConfigurationError("give at least one address: websocket=, quic= or grpc=")
        self.dispatcher  # noqa: B018 -- freeze the router before the first connection
        for name, address in addresses.items():
            if address is not None and name in self._listeners:
                raise ConfigurationError(f"{name} is already being served")
        started: list[Listener] = []
        try:
            for name, address in addresses.items():
                if address is None:
                    continue
                module = importlib.import_module(LISTENER_MODULES[name])
                starter: ListenerStarter = module.start_listener
                listener: Listener = await starter(self, address, tls=tls)
                started.append(listener)
                self._listeners[name] = listener
        except BaseException:
            # Undo this call only; listeners started earlier keep serving.
            for name, listener in list(self._listeners.items()):
                if listener in started:
                    del self._listeners[name]
            await asyncio.gather(*(listener.shutdown(0) for listener in started))
            raise

    def port(self, transport: str) -> int:
        """The port `transport` ("websocket", "quic", "grpc") is bound to."""
        listener = self._listeners.get(transport)
        if listener is None:
            raise ConfigurationError(f"{transport} is not being served")
        return listener.port

    async def serve(
        self,
        *,
        websocket: str | None = None,
        quic: str | None = None,
        grpc: str | None = None,
        tls: TLSFiles | None = None,
        grace: float = 10.0,
    ) -> None:
        """Start, then serve until SIGINT/SIGTERM or `shutdown`; shut down gracefully."""
        await self.start(websocket=websocket, quic=quic, grpc=grpc, tls=tls)
        await self.serve_started(grace=grace)

    async def serve_started(self, *, grace: float = 10.0) -> None:
        """Serve an already started server until SIGINT/SIGTERM or `shutdown`."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stopped.set)
                installed.append(sig)
        try:
            await self._stopped.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.shutdown(grace=grace)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop every listener gracefully (see the module docstring). Idempotent."""
        self._stopped.set()
        listeners = list(self._listeners.values())
        self._listeners.clear()
        if listeners:
            await asyncio.gather(*(listener.shutdown(grace) for listener in listeners))

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # ---------------------------------------------------------------- hooks for listeners

    def connection_opened(self, connection: ServerConnection) -> None:
        """Listeners call this when a WebSocket/QUIC connection is open."""
        self.connections.add(connection)
        if self.on_connect is not None:
            try:
                self.on_connect(connection)
            except Exception:  # the application's bug must not break the listener
                logger.exception("on_connect hook failed")

    def connection_closed(self, connection: ServerConnection) -> None:
        """Listeners call this once when a WebSocket/QUIC connection has closed."""
        self.connections.discard(connection)
        if self.on_disconnect is not None:
            try:
                self.on_disconnect(connection)
            except Exception:
                logger.exception("on_disconnect hook failed")


def _service_routes_of(implementation: object) -> list[tuple[ServiceRoutes, list[PushTable]]]:
    """The services a handler object implements, found through its generated base classes.

    A generated ``FooServiceBase`` lives in the module that declares the
    ``ServiceRoutes`` named ``pkg.FooService`` (and that file's push table).
    """
    found: list[tuple[ServiceRoutes, list[PushTable]]] = []
    seen: set[str] = set()
    for klass in type(implementation).__mro__:
        if not klass.__name__.endswith("ServiceBase"):
            continue
        module = sys.modules.get(klass.__module__)
        if module is None:
            continue
        service_name = klass.__name__[: -len("Base")]
        tables = [value for value in vars(module).values() if isinstance(value, PushTable)]
        for value in vars(module).values():
            if (
                isinstance(value, ServiceRoutes)
                and value.name.rsplit(".", 1)[-1] == service_name
                and value.name not in seen
            ):
                seen.add(value.name)
                found.append((value, tables))
    return found


def parse_address(address: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigurationError(f"expected HOST:PORT, got {address!r}")
    host = host.strip("[]") or default_host
    port = int(port_text)
    if not 0 <= port < 65536:
        raise ConfigurationError(f"port out of range in {address!r}")
    return host, port
