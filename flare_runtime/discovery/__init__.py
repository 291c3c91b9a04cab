"""Service discovery and client-side load balancing (docs/discovery.md).

* servers register the services they serve in a `Registry` --
  `StaticRegistry` (a list of URLs or a file; the default) or
  `flare_runtime.discovery.etcd.EtcdRegistry` -- under a renewed lease, and
  deregister first on graceful shutdown (`announce`);
* clients ``flare.connect("etcd://host:2379/package.Service")`` (or
  ``static:…``, or a `Resolver`) and get a `BalancingChannel`: the same
  `Channel` API, spreading calls over the live endpoint set with power of two
  choices (or round robin), zone preference, health checks, draining, and
  retries only where they are safe (`RetryPolicy`).

Names load on first use (PEP 562): importing the package imports nothing more.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flare_runtime.discovery.announce import Announcement, announce
    from flare_runtime.discovery.channel import BalancingChannel
    from flare_runtime.discovery.endpoint import Endpoint, InvalidEndpointError
    from flare_runtime.discovery.health import HealthPolicy
    from flare_runtime.discovery.registry import Registration, Registry, StaticRegistry
    from flare_runtime.discovery.resolver import Resolver
    from flare_runtime.discovery.retry import RetryBudget, RetryPolicy

_EXPORTS: dict[str, str] = {
    "Announcement": "announce",
    "announce": "announce",
    "BalancingChannel": "channel",
    "Endpoint": "endpoint",
    "InvalidEndpointError": "endpoint",
    "HealthPolicy": "health",
    "Registration": "registry",
    "Registry": "registry",
    "StaticRegistry": "registry",
    "Resolver": "resolver",
    "RetryBudget": "retry",
    "RetryPolicy": "retry",
}
"""Each public name and the submodule defining it (loaded on first use: importing
`flare_runtime.client`, which needs `resolver`, must not import the rest)."""

__all__ = [
    "Announcement",
    "BalancingChannel",
    "Endpoint",
    "HealthPolicy",
    "InvalidEndpointError",
    "Registration",
    "Registry",
    "Resolver",
    "RetryBudget",
    "RetryPolicy",
    "StaticRegistry",
    "announce",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flare_runtime.discovery' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flare_runtime.discovery.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
