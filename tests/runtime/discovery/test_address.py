"""Service addresses (`parse_address`): the forms and their parameters; bad ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from flare_runtime.discovery.address import parse_address
from flare_runtime.discovery.etcd import DEFAULT_PREFIX, EtcdRegistry
from flare_runtime.discovery.registry import StaticRegistry
from flare_runtime.errors import ConfigurationError


async def test_etcd_address_with_members_and_parameters() -> None:
    resolver = parse_address(
        "etcd://h1:2379,h2:2379/pkg.Svc?prefix=/p/&zone=z1&region=r1&policy=round_robin"
        "&scheme=quic,ws"
    )
    try:
        assert isinstance(resolver.registry, EtcdRegistry)
        assert resolver.registry.prefix == "/p/"
        assert resolver.service == "pkg.Svc"
        assert (resolver.zone, resolver.region, resolver.policy) == ("z1", "r1", "round_robin")
        assert resolver.schemes == ("quic", "ws")
        assert resolver.owns_registry
    finally:
        await resolver.close()


async def test_etcd_address_defaults() -> None:
    resolver = parse_address("ETCD://h:2379/pkg.Svc")
    try:
        assert isinstance(resolver.registry, EtcdRegistry)
        assert resolver.registry.prefix == DEFAULT_PREFIX
        assert (resolver.policy, resolver.zone, resolver.schemes) == ("p2c", "", ())
    finally:
        await resolver.close()


def test_static_urls() -> None:
    resolver = parse_address("static:ws://a:1,grpc://b:2?service=pkg.Svc&policy=round_robin")
    assert isinstance(resolver.registry, StaticRegistry)
    assert [e.urls for e in resolver.registry.endpoints("pkg.Svc")] == [
        ("ws://a:1",),
        ("grpc://b:2",),
    ]
    assert resolver.service == "pkg.Svc"
    assert resolver.policy == "round_robin"


def test_static_file(tmp_path: Path) -> None:
    path = f"{tmp_path}/endpoints"
    with open(path, "w") as file:
        file.write("ws://a:1 zone=z1\n")
    resolver = parse_address(f"static:{path}?zone=z1")
    assert isinstance(resolver.registry, StaticRegistry)
    assert [e.zone for e in resolver.registry.endpoints(resolver.service)] == ["z1"]
    assert resolver.zone == "z1"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("ws://h:1", "not a service address"),
        ("etcd:///pkg.Svc", "expected etcd://"),
        ("etcd://h:2379", "expected etcd://"),
        ("etcd://h:2379/a/b", "expected etcd://"),
        ("etcd://h:2379/pkg.Svc?service=x", "unknown parameter 'service'"),
        ("etcd://h:2379/pkg.Svc?zone", "bad query string"),
        ("etcd://h:2379/pkg.Svc?policy=random", "unknown balancing policy"),
        ("static:", "expected static:"),
        ("static:ws://h:1?prefix=/x", "unknown parameter 'prefix'"),
        ("static:ws://", "bad URL"),
    ],
)
def test_bad_addresses(address: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        parse_address(address)
