"""`Resolver`: which service to call and where its endpoints are listed; the address forms.

A balancing channel (`flare_runtime.connect` given a service address, see
`flare_runtime.discovery.channel`) follows one resolver (an address string
becomes one through `flare_runtime.discovery.address.parse_address`): the endpoints it
yields are the servers the channel spreads calls over. Address forms:

* ``etcd://HOST:PORT[,HOST:PORT…]/SERVICE`` -- the service's entries in etcd
  (`EtcdRegistry`), followed live by a watch. Query parameters:
  ``prefix=`` (default ``/flare/services/``), ``secure=1`` (grpcs to etcd);
* ``static:URL,URL…`` -- these servers (`StaticRegistry`), every one serving
  the service; ``static:PATH`` -- the servers listed in a file
  (`read_endpoint_file`), read again when it changes;
* a `Resolver` object -- any `Registry` and a service name.

On both URL forms, ``scheme=ws,quic`` picks which of an endpoint's URLs to
use (its first URL otherwise), ``zone=`` and ``region=`` say where the client
is (calls prefer endpoints in its zone, then region), ``policy=`` is
``p2c`` (power of two choices on outstanding calls, the default) or
``round_robin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flare_runtime.errors import ConfigurationError

if TYPE_CHECKING:  # kept light: `flare_runtime.client` imports this module
    from collections.abc import AsyncGenerator

    from flare_runtime.discovery.endpoint import Endpoint
    from flare_runtime.discovery.registry import Registry

__all__ = ["POLICIES", "RESOLVER_SCHEMES", "Resolver", "is_service_address"]

RESOLVER_SCHEMES = frozenset({"etcd", "static"})
"""URL schemes that name a service in a registry rather than one server."""

POLICIES = ("p2c", "round_robin")


@dataclass
class Resolver:
    """A service in a registry, and how a client should pick among its endpoints."""

    registry: Registry
    service: str
    """The name the service's servers registered it under (``package.Service``)."""
    schemes: tuple[str, ...] = ()
    """URL schemes to reach endpoints by, in order of preference (empty: each endpoint's
    first URL)."""
    zone: str = ""
    """The client's zone: calls go to endpoints of this zone while one is available."""
    region: str = ""
    """The client's region: next best after the zone."""
    policy: str = "p2c"
    """``p2c`` (power of two choices on outstanding calls) or ``round_robin``."""
    owns_registry: bool = field(default=False, repr=False)
    """Close the registry with the channel (set for registries made from an address)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigurationError(
                f"unknown balancing policy {self.policy!r} (use {' or '.join(POLICIES)})"
            )
        if not self.service:
            raise ConfigurationError("a resolver needs a service name")

    def watch(self) -> AsyncGenerator[tuple[Endpoint, ...], None]:
        """The service's endpoints now, then after each change (`Registry.watch`)."""
        return self.registry.watch(self.service)

    async def close(self) -> None:
        """Close the registry if this resolver made it."""
        if self.owns_registry:
            await self.registry.close()


def is_service_address(address: object) -> bool:
    """True for a `Resolver` or a URL whose scheme is a registry's (``etcd:``, ``static:``)."""
    if isinstance(address, Resolver):
        return True
    if not isinstance(address, str):
        return False
    return address.split(":", 1)[0].lower() in RESOLVER_SCHEMES
