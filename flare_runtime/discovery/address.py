"""Service addresses: the URL forms `flare_runtime.connect` resolves through a registry.

See `flare_runtime.discovery.resolver` for the forms (``etcd://…``, ``static:…``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

from flare_runtime.discovery.etcd import DEFAULT_PREFIX, EtcdRegistry
from flare_runtime.discovery.registry import Registry, StaticRegistry
from flare_runtime.discovery.resolver import Resolver
from flare_runtime.errors import ConfigurationError

__all__ = ["parse_address"]


def parse_address(address: str) -> Resolver:
    """The `Resolver` an address names (see the module docstring).

    Raises `ConfigurationError` for an address that is not one.
    """
    scheme, _, rest = address.partition(":")
    scheme = scheme.lower()
    if scheme == "etcd":
        return _etcd(address)
    if scheme == "static":
        return _static(address, rest)
    raise ConfigurationError(f"{address!r} is not a service address (etcd://… or static:…)")


def _options(query: str, address: str, allowed: Sequence[str]) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError(f"{address!r}: bad query string") from None
    options = dict(pairs)
    unknown = set(options) - set(allowed)
    if unknown:
        raise ConfigurationError(f"{address!r}: unknown parameter {sorted(unknown)[0]!r}")
    return options


_CLIENT_OPTIONS = ("scheme", "zone", "region", "policy")


def _resolver(registry: Registry, service: str, options: dict[str, str]) -> Resolver:
    schemes = tuple(s.strip().lower() for s in options.get("scheme", "").split(",") if s.strip())
    return Resolver(
        registry,
        service,
        schemes=schemes,
        zone=options.get("zone", ""),
        region=options.get("region", ""),
        policy=options.get("policy", "p2c"),
        owns_registry=True,
    )


def _etcd(address: str) -> Resolver:
    parts = urllib.parse.urlsplit(address)
    members = [m for m in parts.netloc.split(",") if m]
    service = parts.path.strip("/")
    if not members or not service or "/" in service:
        raise ConfigurationError(f"{address!r}: expected etcd://HOST:PORT[,HOST:PORT…]/SERVICE")
    options = _options(parts.query, address, (*_CLIENT_OPTIONS, "prefix", "secure"))
    registry = EtcdRegistry(
        members,
        prefix=options.get("prefix", DEFAULT_PREFIX),
        secure=options.get("secure", "0") in ("1", "true", "yes"),
    )
    return _resolver(registry, service, options)


def _static(address: str, rest: str) -> Resolver:
    body, _, query = rest.partition("?")
    options = _options(query, address, (*_CLIENT_OPTIONS, "service"))
    if not body:
        raise ConfigurationError(f"{address!r}: expected static:URL,URL… or static:PATH")
    if "://" in body:
        registry = StaticRegistry([url for url in body.split(",") if url])
    else:
        registry = StaticRegistry(file=body)
    # Every listed server serves whatever is called: the name only labels the endpoints.
    service = options.get("service", "static")
    return _resolver(registry, service, options)
