"""`Endpoint`: one server's entry for one service in a registry, and its JSON form.

An entry names a service (``package.Service``), the server instance (its
``host:port``, unique per service), the URLs it is reached at (one per
transport it serves: ``ws://…``, ``quic://…``, ``grpc://…``, a plugin's), its
zone and region labels, and a load figure the server updates. In etcd the
entry is the JSON object `to_json` writes, under
``<prefix><service>/<instance>``; `from_json` reads it back and refuses
anything else with `InvalidEndpointError` (a registry skips such an entry and
says so once in its log: a garbage entry must not take the service down).
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flare_runtime.errors import ConfigurationError

__all__ = ["MAX_ENTRY_BYTES", "Endpoint", "InvalidEndpointError"]

MAX_ENTRY_BYTES = 16 * 1024
"""The largest JSON entry `from_json` reads (a registry entry is a few hundred bytes)."""

_MAX_URLS = 16
_MAX_LABEL = 256


class InvalidEndpointError(ConfigurationError):
    """A registry entry that is not an endpoint (bad JSON, wrong types, a URL without a host)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server instance serving one service (see the module docstring)."""

    service: str
    """Fully qualified service name, ``package.Service``."""
    instance: str
    """The instance's id within the service: its ``host:port`` (unique per service)."""
    urls: tuple[str, ...]
    """Where the instance is reached, one URL per transport, in the server's order of
    preference."""
    zone: str = ""
    """Availability zone label (``eu-west-1a``); "" when unknown."""
    region: str = ""
    """Region label (``eu-west-1``); "" when unknown."""
    load: float = 0.0
    """A load figure the server updates (default: its open connections); lower is less
    loaded. Balancers break ties with it."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Free-form labels (version, canary…), carried as they are."""

    def __post_init__(self) -> None:
        if not self.urls:
            raise InvalidEndpointError(f"endpoint {self.instance} of {self.service} has no URL")
        for url in self.urls:
            _check_url(url)
        if not self.service or not self.instance:
            raise InvalidEndpointError("an endpoint needs a service and an instance")
        if not math.isfinite(self.load):
            raise InvalidEndpointError(f"endpoint {self.instance}: load must be a finite number")

    def url_for(self, schemes: Sequence[str] = ()) -> str | None:
        """The URL to reach it by: the first of `schemes` it has (any order given), else its
        first URL when `schemes` is empty; None when it has none of `schemes`."""
        if not schemes:
            return self.urls[0]
        for scheme in schemes:
            for url in self.urls:
                if url.split(":", 1)[0].lower() == scheme:
                    return url
        return None

    def to_json(self) -> bytes:
        """The entry as a registry stores it (UTF-8 JSON)."""
        document: dict[str, Any] = {"urls": list(self.urls)}
        if self.zone:
            document["zone"] = self.zone
        if self.region:
            document["region"] = self.region
        document["load"] = self.load
        if self.labels:
            document["labels"] = dict(self.labels)
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, service: str, instance: str, data: bytes) -> Endpoint:
        """Read an entry `to_json` wrote; raise `InvalidEndpointError` for anything else."""
        if len(data) > MAX_ENTRY_BYTES:
            raise InvalidEndpointError(f"entry of {len(data)} bytes (at most {MAX_ENTRY_BYTES})")
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise InvalidEndpointError(f"entry is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise InvalidEndpointError("entry is not a JSON object")
        urls = document.get("urls")
        if (
            not isinstance(urls, list)
            or not 0 < len(urls) <= _MAX_URLS
            or not all(isinstance(url, str) for url in urls)
        ):
            raise InvalidEndpointError(f"'urls' must be a list of 1 to {_MAX_URLS} strings")
        zone = _label(document, "zone")
        region = _label(document, "region")
        load = document.get("load", 0.0)
        if isinstance(load, bool) or not isinstance(load, int | float):
            raise InvalidEndpointError("'load' must be a number")
        labels = document.get("labels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(key, str) and isinstance(value, str) and len(value) <= _MAX_LABEL
            for key, value in labels.items()
        ):
            raise InvalidEndpointError("'labels' must map strings to strings")
        return cls(service, instance, tuple(urls), zone, region, float(load), labels)


def _label(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key, "")
    if not isinstance(value, str) or len(value) > _MAX_LABEL:
        raise InvalidEndpointError(f"{key!r} must be a string of at most {_MAX_LABEL} characters")
    return value


def _check_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError as error:
        raise InvalidEndpointError(f"bad URL {url!r}: {error}") from None
    if not parts.scheme or not parts.hostname:
        raise InvalidEndpointError(f"bad URL {url!r}: expected scheme://host:port")


def instance_of(url: str) -> str:
    """The ``host:port`` of `url` (an endpoint's instance id)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host
