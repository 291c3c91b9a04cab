"""`Resolver`: its checks, `is_service_address`, and closing the registry it owns."""

from __future__ import annotations

import pytest

from flare_runtime.discovery.endpoint import Endpoint
from flare_runtime.discovery.registry import StaticRegistry
from flare_runtime.discovery.resolver import Resolver, is_service_address
from flare_runtime.errors import ConfigurationError


class _CountingCloses(StaticRegistry):
    closes = 0

    async def close(self) -> None:
        self.closes += 1


def test_is_service_address() -> None:
    assert is_service_address("etcd://h:2379/pkg.Svc")
    assert is_service_address("STATIC:ws://h:1")
    assert is_service_address(Resolver(StaticRegistry(), "pkg.Svc"))
    assert not is_service_address("ws://h:1")
    assert not is_service_address("grpc://h:1")
    assert not is_service_address(42)


def test_bad_resolvers() -> None:
    with pytest.raises(ConfigurationError, match="unknown balancing policy 'random'"):
        Resolver(StaticRegistry(), "pkg.Svc", policy="random")
    with pytest.raises(ConfigurationError, match="needs a service name"):
        Resolver(StaticRegistry(), "")


async def test_watch_is_the_registrys_watch_of_the_service() -> None:
    registry = StaticRegistry(["ws://a:1"])
    watch = Resolver(registry, "pkg.Svc").watch()
    assert await anext(watch) == (Endpoint("pkg.Svc", "a:1", ("ws://a:1",)),)
    await watch.aclose()


async def test_closes_only_a_registry_it_owns() -> None:
    registry = _CountingCloses()
    await Resolver(registry, "pkg.Svc").close()
    assert registry.closes == 0
    await Resolver(registry, "pkg.Svc", owns_registry=True).close()
    assert registry.closes == 1
