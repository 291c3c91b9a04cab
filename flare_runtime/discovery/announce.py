"""`announce`: register a running server's services in a registry, until it shuts down.

::

    await server.start(websocket="0.0.0.0:8080", grpc="0.0.0.0:50051")
    announcement = await announce(server, EtcdRegistry("etcd:2379"), host="10.0.0.7",
                                  zone="eu-west-1a", region="eu-west-1")
    await server.serve_started()        # SIGTERM: deregister, then drain, then exit

For every service the server serves (reflection aside) it registers one
`Endpoint`: instance ``host:port`` (the first listener's port), one URL per
transport served (``ws://host:8080``, ``grpc://host:50051``…), the zone and
region labels, and a load figure -- by default the server's open
connections, published again every `load_interval` seconds when it changed.

**Deregister first.** `announce` adds an `on_drain` hook to the server:
`Server.shutdown` first removes every entry
(clients watching the registry stop choosing this server), waits
`drain_delay` seconds, and only then stops its listeners, which send GOAWAY
and let calls in flight finish. A call that a client still sent here after
the GOAWAY is refused unprocessed, and the balancing channel sends it to
another endpoint: a graceful shutdown fails no call.

A process killed without a shutdown (SIGKILL, a crash) stops renewing its
leases; its entries expire after ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from flare_runtime.discovery.endpoint import Endpoint
from flare_runtime.discovery.registry import Registration, Registry
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.transport_registry import REGISTRY

if TYPE_CHECKING:
    from flare_runtime.server import Server

__all__ = ["Announcement", "announce", "server_urls"]

logger = logging.getLogger("flare_runtime.discovery")

REFLECTION_SERVICE = "flare.reflection.v1.Reflection"


def server_urls(server: Server, host: str, *, secure: bool = False) -> tuple[str, ...]:
    """The URL of each transport `server` serves, at `host` (``ws://host:port``…)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return tuple(
        f"{REGISTRY.get(name).url_scheme(secure=secure)}://{host}:{server.port(name)}"
        for name in server.transports
    )


class Announcement:
    """The registrations of one server's services (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        registrations: list[Registration],
        load: Callable[[], float],
        load_interval: float,
        drain_delay: float,
    ) -> None:
        self.registry = registry
        self.registrations = registrations
        self._load = load
        self._drain_delay = drain_delay
        self._withdrawn = False
        self._task = asyncio.get_running_loop().create_task(
            self._publish_load(load_interval), name="flare-announce-load"
        )

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The entries registered (with their last published load)."""
        return tuple(r.endpoint for r in self.registrations)

    async def _publish_load(self, interval: float) -> None:
        published = self.registrations[0].endpoint.load if self.registrations else 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                load = float(self._load())
            except Exception:
                logger.exception("the load function failed")
                continue
            if load == published:
                continue
            try:
                for registration in self.registrations:
                    await registration.update(load=load)
                published = load
            except (RpcError, ConnectionClosedError) as error:
                logger.info("publishing the load failed (%s); will try again", error)

    async def withdraw(self) -> None:
        """Deregister every entry, then wait the drain delay (idempotent).

        `Server.shutdown` calls this before its listeners stop.
        """
        if self._withdrawn:
            return
        self._withdrawn = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await asyncio.gather(*(r.deregister() for r in self.registrations))
        if self._drain_delay > 0:
            await asyncio.sleep(self._drain_delay)


async def announce(
    server: Server,
    registry: Registry,
    *,
    host: str,
    services: Iterable[str] | None = None,
    zone: str = "",
    region: str = "",
    labels: Mapping[str, str] | None = None,
    ttl: float = 10.0,
    load: Callable[[], float] | None = None,
    load_interval: float = 5.0,
    drain_delay: float = 0.0,
    secure: bool = False,
    urls: Iterable[str] | None = None,
) -> Announcement:
    """Register `server`'s services in `registry` and deregister them first on shutdown.

    Call after `Server.start`. `host` is the name or address clients reach the
    server by; `urls` overrides the URLs built from it (behind a proxy, say).
    `services` defaults to every service served but reflection. `load`
    returns the figure to publish (default: open connections). Raises
    `ConnectionClosedError` when the registry cannot be reached (nothing is
    left registered then).
    """
    if not server.transports:
        raise ConfigurationError("announce a server after it has started")
    names = (
        list(services)
        if services is not None
        else [name for name in server.router.services if name != REFLECTION_SERVICE]
    )
    if not names:
        raise ConfigurationError("the server serves no service to announce")
    endpoint_urls = tuple(urls) if urls is not None else server_urls(server, host, secure=secure)
    first = server.transports[0]
    instance = f"[{host}]:{server.port(first)}" if ":" in host else f"{host}:{server.port(first)}"
    load_of = load if load is not None else (lambda: float(len(server.connections)))
    registrations: list[Registration] = []
    try:
        for name in names:
            endpoint = Endpoint(
                name,
                instance,
                endpoint_urls,
                zone=zone,
                region=region,
                load=float(load_of()),
                labels=dict(labels or {}),
            )
            registrations.append(await registry.register(endpoint, ttl=ttl))
    except BaseException:
        for registration in registrations:
            with contextlib.suppress(Exception):
                await registration.deregister()
        raise
    announcement = Announcement(registry, registrations, load_of, load_interval, drain_delay)

    async def withdraw(_: Server) -> None:
        await announcement.withdraw()

    server.on_drain.append(withdraw)
    return announcement
