"""`Server`: one set of handlers served over every transport at once.

::

    server = flare.Server([Chat()], interceptors=[Timing()], auth=JWTAuth(key))
    await server.serve(websocket="0.0.0.0:8080")       # until SIGINT/SIGTERM

    # or, in a program that does other things too:
    await server.start(websocket="127.0.0.1:0")   # a plugin's: listen={"tcp": ":0"}
    port = server.port("websocket")
    ...
    await server.shutdown(grace=5.0)

Handlers are objects implementing a generated handler base (``ChatServiceBase``,
``LedgerBase``...: each declares the table it implements as
``__flare_service__`` and its file's push table as ``__flare_push_types__``,
and the server reads them), or generated ``register_*`` functions / any
callable taking the `Router`, or ``(ServiceRoutes, handler)`` pairs.

Transports plug in as *listeners*: the transport registry
(`flare_runtime.transport_registry`) names each transport's ``async def
start_listener(server, address, *, tls) -> Listener``; the built-in ones have
keyword arguments (``websocket=``, ``quic=``, ``grpc=``), every registered one,
plugins included, is reached through ``listen={name: address}``. Every
listener runs its calls through the server's one `Dispatcher`, so
interceptors, auth and error mapping are the same on all.

Graceful shutdown (`shutdown`): every listener stops accepting, tells its
clients to go away (Flare GOAWAY / gRPC's own), lets calls in flight finish
for up to `grace` seconds, then cancels what is left and closes.

Lifecycle hooks: ``on_startup`` coroutines run at the first `start`, before any
listener accepts (start an IM core, a metrics endpoint...); ``on_drain`` ones
run first thing in `shutdown`, before any listener stops accepting (withdraw
from a service registry); ``on_shutdown`` ones run at the end of `shutdown`,
after every listener has drained, in reverse order. A hook that raises is
logged and the shutdown goes on. `ready` is True from the end of `start` until a drain begins
(`request_drain`, SIGTERM, `shutdown`): what a readiness probe reports.

Every server counts what it serves in ``server.stats`` (`flare_runtime.stats`);
open WebSocket/QUIC connections are ``server.connections``, each with its
`ConnectionInfo` (the id logs, metrics and the admin API name it by).

Ports: a listener binds its port for this process alone, so a second server
on a busy port fails with "address already in use". Worker processes of one
host (``flare serve --workers N``, `flare_runtime.workers`) share their ports:
each worker starts its server with `SharedPorts`, and its listeners bind with
``SO_REUSEPORT`` (or serve on the socket the supervisor prepared).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from flare_runtime.auth import AuthPlugin
from flare_runtime.dispatch import Dispatcher
from flare_runtime.errors import ConfigurationError
from flare_runtime.interceptors import ServerInterceptor
from flare_runtime.peer_log import PeerLog
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.routing import PushTable, Router, ServiceRoutes
from flare_runtime.sharing import sharing_problems
from flare_runtime.stats import ServerStats
from flare_runtime.transport_registry import REGISTRY

if TYPE_CHECKING:
    from flare_runtime.server_connection import ServerConnection

logger = logging.getLogger("flare_runtime.server")

SERVICE_ATTRIBUTE = "__flare_service__"
"""The class attribute of a generated handler base naming the `ServiceRoutes` it implements."""
PUSH_TYPES_ATTRIBUTE = "__flare_push_types__"
"""The class attribute of a generated handler base naming its file's `PushTable`."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A PEM certificate chain and private key (TLS 1.3 is required where TLS is used)."""

    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        """A TLS 1.3-only server context from the chain and key (for stream transports)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class Listener(Protocol):
    """One transport serving the server's dispatcher on one address."""

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, send go-away, wait up to `grace` s for calls in flight, close."""


class ListenerStarter(Protocol):
    """A transport's ``start_listener``, as its `TransportSpec` names it."""

    def __call__(
        self, server: Server, address: str, *, tls: TLSFiles | None
    ) -> Awaitable[Listener]: ...


ConnectionHook = Callable[["ServerConnection"], None]
LifecycleHook = Callable[["Server"], Awaitable[None]]
"""An ``async def hook(server)`` run at startup or shutdown (`Server.on_startup`)."""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the server knows of one open WebSocket/QUIC connection beyond the connection."""

    connection_id: str
    """Unique within this process (with workers: prefixed by the worker's index)."""
    opened_at: float
    """When it opened (`time.time()`)."""


@dataclass(frozen=True, slots=True)
class SharedPorts:
    """How a worker process shares its listeners' ports with the other workers of its host.

    Given to `Server.start` by the worker (`flare_runtime.workers`); listeners
    read it as ``server.shared_ports`` (None: bind for this process alone).
    """

    worker: int
    """This worker's index, 0 to ``workers - 1`` (kept by its restarts)."""
    workers: int
    """How many workers share the ports."""
    sockets: Mapping[str, socket.socket] = field(default_factory=dict)
    """Transport name -> the bound socket it serves on instead of binding one (QUIC: this
    worker's own ``SO_REUSEPORT`` UDP socket, which the supervisor keeps open across
    restarts so the kernel's hashing of clients to workers stays put)."""
    directory: str = ""
    """A private directory where the workers' listeners find each other (QUIC's routing
    of datagrams to the worker that holds their connection)."""


@dataclass(slots=True)
class ServerOptions:
    """Options of the Flare wire protocol's listeners (WebSocket and QUIC).

    gRPC takes `protocol`'s limits too (`grpc_server.grpc_limits`); the other
    fields do not apply to it.
    """

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    """Limits announced to clients and enforced on input; keepalive timing."""
    max_write_buffer: int = 1024 * 1024
    """Bytes queued towards a client above which senders on that connection wait and the
    server stops reading from it (WebSocket, QUIC; docs/security/wire.md)."""
    max_unsent_output: int = 8 * 1024 * 1024
    """Bytes queued towards a client above which it is aborted as a slow consumer.

    Past `max_write_buffer` the server reads nothing more from the client and responses
    wait, so only what is not flow-controlled -- pushes -- can reach this."""
    close_timeout: float = 5.0
    """Seconds a closing connection may take to send what is queued before it is aborted
    (a client that does not read would otherwise hold it open)."""
    compression: str | None = None
    """WebSocket permessage-deflate: None (default) or "deflate"."""
    transports: Mapping[str, object] = field(default_factory=dict)
    """Settings of individual transports, by transport name: each transport documents its
    settings class and uses its defaults when it has no entry, e.g. ``{"quic":
    QuicServerSettings(idle_timeout=30.0)}`` (`flare_runtime.transports.quic_settings`: idle
    timeout, tickets, address validation with Retry, handshake limits). A plugin
    transport reads its own entry the same way."""
    log_burst: int = 20
    """Most log lines of one kind that clients can cause per `log_interval` seconds
    (refused upgrades, protocol errors, failed authentication, handler failures...);
    the rest are counted and reported with the next line written (`Server.peer_log`)."""
    log_interval: float = 10.0
    """The window of `log_burst`, in seconds."""
    eager_handlers: bool | None = None
    """Start each unary handler inside the read callback that decoded its request, not in
    a new task: a handler that never suspends costs no task, and its response leaves with
    the batch its request arrived in.

    None (default): on wherever asyncio has eager tasks, which keep every task semantic.
    True forces it on everywhere; docs/runtime.md ("Eager handlers") says what a
    handler may then not rely on before its first suspension.
    """

    def __post_init__(self) -> None:
        if self.max_write_buffer <= 0:
            raise ConfigurationError("max_write_buffer must be positive")
        if self.max_unsent_output < self.max_write_buffer:
            raise ConfigurationError("max_unsent_output must be at least max_write_buffer")
        if not self.close_timeout > 0:
            raise ConfigurationError("close_timeout must be positive")


class Server:
    """Serves handlers over WebSocket, QUIC and gRPC through one `Dispatcher`.

    Add every service before `start`; the router is frozen then. Unless
    `reflection` is False, the server also serves ``flare.reflection.v1.Reflection``
    on WebSocket and QUIC (`flare_runtime.reflection.service`: what ``flare call``,
    ``list``, ``describe`` and ``watch`` use) and gRPC's standard reflection on gRPC.
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
        parts: Iterable[object] = (),
        reflection: bool = True,
        on_startup: Iterable[LifecycleHook] = (),
        on_drain: Iterable[LifecycleHook] = (),
        on_shutdown: Iterable[LifecycleHook] = (),
    ) -> None:
        self.router = Router()
        self.interceptors = tuple(interceptors)
        self.auth = auth
        self.options = options or ServerOptions()
        self.peer_log = PeerLog(burst=self.options.log_burst, interval=self.options.log_interval)
        """Rate limits every log line a client can cause (`flare_runtime.peer_log`)."""
        self.reflection = reflection
        """Whether reflection is served (Flare's on WebSocket/QUIC, gRPC's on gRPC)."""
        self.on_connect = on_connect
        """Called with each new WebSocket/QUIC connection once it is open."""
        self.on_disconnect = on_disconnect
        """Called with each WebSocket/QUIC connection once it has closed."""
        self.connections: dict[ServerConnection, ConnectionInfo] = {}
        """Open WebSocket/QUIC connections (gRPC connections are grpcio's), with their ids."""
        self.stats = ServerStats()
        """What this server has served (`flare_runtime.stats`)."""
        self.on_startup: list[LifecycleHook] = list(on_startup)
        """Run once, in order, at the first `start`, before any listener starts."""
        self.on_drain: list[LifecycleHook] = list(on_drain)
        """Run once, in order, first thing in `shutdown`, before any listener stops
        accepting (service registration withdraws here, `flare_runtime.discovery.announce`,
        so that clients stop choosing this server before it drains)."""
        self.on_shutdown: list[LifecycleHook] = list(on_shutdown)
        """Run once, in reverse order, at the end of `shutdown` (after the first `start`)."""
        self.drain_handler: Callable[[], None] | None = None
        """What `request_drain` does instead of stopping this process's server (a worker
        process sets it to have its supervisor drain every worker)."""
        self._connection_ids = itertools.count(1)
        self._started_up = False
        self._draining = False
        self._serving = False
        self.parts: list[object] = list(parts)
        """What the server is made of beyond its services, auth and interceptors (a
        `ClusterNode`, a storage...): asked, like them, by `sharing_problems`."""
        self.shared_ports: SharedPorts | None = None
        """Set by `start` in a worker process: how its listeners share their ports."""
        self._services: list[object] = []
        self._dispatcher: Dispatcher | None = None
        self._listeners: dict[str, Listener] = {}
        self._stopped = asyncio.Event()
        for service in services:
            self.add(service)
        for table in push_tables:
            self.router.add_push_types(table)
        if reflection:
            # Lazily: the reflection service's generated module is only needed when served.
            from flare_runtime.reflection.service import ReflectionService  # noqa: PLC0415

            self.add(ReflectionService(self.router))

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
            self._services.append(implementation)
            return
        found = _declared_bindings(service)
        if found:
            for routes, push_types in found:
                self.router.add_service(routes, service)
                if push_types is not None:
                    self.router.add_push_types(push_types)
            self._services.append(service)
            return
        if callable(service):
            service(self.router)
            self._services.append(service)
            return
        raise ConfigurationError(
            f"{type(service).__name__} is not a Flare service: implement a generated "
            "handler base (a class with __flare_service__), or pass a register function "
            "or a (ServiceRoutes, handler) pair"
        )

    def sharing_problems(self) -> list[str]:
        """Why this server cannot run as several worker processes (empty when it can).

        Asks each service, the auth plugin, each interceptor and each of
        `parts` (`flare_runtime.sharing`); ``flare serve --workers N`` refuses
        to start N > 1 workers when the list is not empty.
        """
        return sharing_problems(*self._services, self.auth, *self.interceptors, *self.parts)

    def add_push_types(self, table: PushTable) -> None:
        """Register push type ids so `ServerConnection.push` can send those messages."""
        self.router.add_push_types(table)

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher every transport uses (built on first use; freezes the router)."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(
                self.router,
                interceptors=self.interceptors,
                auth=self.auth,
                peer_log=self.peer_log,
                stats=self.stats,
            )
        return self._dispatcher

    # ---------------------------------------------------------------- lifecycle

    async def start(
        self,
        *,
        websocket: str | None = None,
        quic: str | None = None,
        grpc: str | None = None,
        listen: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        shared_ports: SharedPorts | None = None,
    ) -> None:
        """Bind and start each transport given an address (``host:port``; port 0 picks one).

        `websocket`, `quic` and `grpc` name the built-in transports; `listen`
        maps any registered transport's name (plugins' included, see
        `flare_runtime.transport_registry`) to its address, e.g.
        ``listen={"tcp": "127.0.0.1:0"}``. QUIC requires `tls`; the others
        use it when given (``wss://``, ``grpcs://``). Returns once every
        listener accepts connections; raises `ConfigurationError` for an
        unknown transport or one already served, before binding anything.
        Each port is bound for this process alone (`OSError` "address already
        in use" when it is taken), unless `shared_ports` says this process is
        one of several workers sharing them (see `SharedPorts`).
        """
        addresses = _addresses(websocket=websocket, quic=quic, grpc=grpc, listen=listen)
        if not addresses:
            raise ConfigurationError(
                "give at least one address: websocket=, quic=, grpc= or listen={name: address}"
            )
        starters: dict[str, ListenerStarter] = {}
        for name in addresses:
            if name in self._listeners:
                raise ConfigurationError(f"{name} is already being served")
            starters[name] = REGISTRY.get(name).load_listener()
        self.dispatcher  # noqa: B018 -- freeze the router before the first connection
        if shared_ports is not None:
            self.shared_ports = shared_ports
        if not self._started_up:
            self._started_up = True
            for hook in self.on_startup:
                await hook(self)
        started: list[Listener] = []
        try:
            for name, address in addresses.items():
                listener = await starters[name](self, address, tls=tls)
                started.append(listener)
                self._listeners[name] = listener
        except BaseException:
            # Undo this call only; listeners started earlier keep serving.
            for name, listener in list(self._listeners.items()):
                if listener in started:
                    del self._listeners[name]
            await asyncio.gather(*(listener.shutdown(0) for listener in started))
            raise
        self._serving = True
        self._draining = False

    async def attach(self, name: str, listener: Listener) -> None:
        """Serve through `listener`, started by something else than `start`.

        For a listener whose socket belongs to another server: the ASGI mount
        (`flare_runtime.asgi.FlareASGI`) calls this at the ASGI application's
        startup. Does what `start` does before its first connection (the router
        is frozen), then `port(name)` and `shutdown` include `listener` like the
        listeners `start` started. Raises `ConfigurationError` if `name` is
        already served.
        """
        if name in self._listeners:
            raise ConfigurationError(f"{name} is already being served")
        self.dispatcher  # noqa: B018 -- freeze the router before the first connection
        self._listeners[name] = listener

    @property
    def transports(self) -> tuple[str, ...]:
        """The names of the transports being served, in the order they started."""
        return tuple(self._listeners)

    def port(self, transport: str) -> int:
        """The port `transport` (a registered name: "websocket", "quic", "grpc"...) is bound to."""
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
        listen: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        grace: float = 10.0,
    ) -> None:
        """`start`, then serve until SIGINT/SIGTERM or `shutdown`; shut down gracefully."""
        await self.start(websocket=websocket, quic=quic, grpc=grpc, listen=listen, tls=tls)
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
        """Run the ``on_drain`` hooks, stop every listener gracefully (see the module
        docstring), then run the ``on_shutdown`` hooks. Idempotent."""
        self._draining = True
        self._stopped.set()
        hooks, self.on_drain = self.on_drain, []
        for hook in hooks:
            try:
                await hook(self)
            except Exception:
                logger.exception("on_drain hook failed")
        listeners = list(self._listeners.values())
        self._listeners.clear()
        if listeners:
            await asyncio.gather(*(listener.shutdown(grace) for listener in listeners))
        if self._started_up:
            self._started_up = False
            hooks, self.on_shutdown = self.on_shutdown, []
            for hook in reversed(hooks):
                try:
                    await hook(self)
                except Exception:
                    logger.exception("on_shutdown hook failed")
        self._serving = False

    @property
    def ready(self) -> bool:
        """True once `start` has returned, until a drain or shutdown begins."""
        return self._serving and not self._draining

    @property
    def draining(self) -> bool:
        """True from `request_drain` (or the start of `shutdown`) on."""
        return self._draining

    def request_drain(self) -> None:
        """Begin a graceful stop, as SIGTERM does: `ready` turns False at once, `serve`
        then shuts down (GOAWAY, calls in flight finish within its grace). In a worker
        process, `drain_handler` drains every worker of the host instead."""
        self._draining = True
        if self.drain_handler is not None:
            self.drain_handler()
        else:
            self._stopped.set()

    async def wait_drain_requested(self) -> None:
        """Return once `request_drain` or `shutdown` was called."""
        await self._stopped.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # ---------------------------------------------------------------- hooks for listeners

    def connection_opened(self, connection: ServerConnection) -> None:
        """Listeners call this when a WebSocket/QUIC connection is open."""
        prefix = "" if self.shared_ports is None else f"w{self.shared_ports.worker}-"
        self.connections[connection] = ConnectionInfo(
            f"{prefix}{next(self._connection_ids)}", time.time()
        )
        self.stats.transport(connection.transport_kind.value).opened += 1
        if self.on_connect is not None:
            try:
                self.on_connect(connection)
            except Exception:  # the application's bug must not break the listener
                logger.exception("on_connect hook failed")

    def connection_closed(self, connection: ServerConnection) -> None:
        """Listeners call this once when a WebSocket/QUIC connection has closed."""
        if self.connections.pop(connection, None) is not None:
            counts = self.stats.transport(connection.transport_kind.value)
            counts.closed += 1
            traffic = connection.traffic()
            counts.bytes_received += traffic[0]
            counts.bytes_sent += traffic[1]
            counts.pushes += traffic[2]
        if self.on_disconnect is not None:
            try:
                self.on_disconnect(connection)
            except Exception:
                logger.exception("on_disconnect hook failed")


def _addresses(
    *,
    websocket: str | None,
    quic: str | None,
    grpc: str | None,
    listen: Mapping[str, str] | None,
) -> dict[str, str]:
    """Transport name → address, from the built-ins' keywords and `listen`."""
    addresses = {
        name: address
        for name, address in (("websocket", websocket), ("quic", quic), ("grpc", grpc))
        if address is not None
    }
    for name, address in (listen or {}).items():
        if name in addresses:
            raise ConfigurationError(f"{name} is given twice: as {name}= and in listen=")
        addresses[name] = address
    return addresses


def _declared_bindings(implementation: object) -> list[tuple[ServiceRoutes, PushTable | None]]:
    """The services a handler object implements, as its generated base classes declare them.

    Every generated ``*Base`` class carries ``__flare_service__`` (its
    `ServiceRoutes`) and ``__flare_push_types__`` (its file's `PushTable`).
    Each class of the MRO is asked for its own declaration, so an object
    implementing several generated bases serves all of them.
    """
    found: list[tuple[ServiceRoutes, PushTable | None]] = []
    seen: set[str] = set()
    for klass in type(implementation).__mro__:
        routes = klass.__dict__.get(SERVICE_ATTRIBUTE)
        if not isinstance(routes, ServiceRoutes) or routes.name in seen:
            continue
        seen.add(routes.name)
        push_types = klass.__dict__.get(PUSH_TYPES_ATTRIBUTE)
        found.append((routes, push_types if isinstance(push_types, PushTable) else None))
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
