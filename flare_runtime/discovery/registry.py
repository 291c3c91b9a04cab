"""The registry interface, and the static registry (the default).

A `Registry` holds, per service, the set of endpoints serving it:

* a server `register`\\ s each service it serves under a lease of ``ttl``
  seconds, which the returned `Registration` renews until `deregister` (or
  until the process dies: then the lease runs out and the entry goes);
* a client `watch`\\ es a service: the set now, then again after every change.

Backends: `StaticRegistry` (a list of URLs or a file, plus whatever registers
in this process) and `flare_runtime.discovery.etcd.EtcdRegistry` (etcd v3).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncGenerator, Callable, Sequence

from flare_runtime.discovery.endpoint import Endpoint, InvalidEndpointError, instance_of
from flare_runtime.errors import ConfigurationError

__all__ = ["Registration", "Registry", "StaticRegistry", "read_endpoint_file"]

logger = logging.getLogger("flare_runtime.discovery")


class Registration(abc.ABC):
    """One endpoint registered under a lease; renewed until `deregister`."""

    endpoint: Endpoint

    @abc.abstractmethod
    async def update(self, *, load: float) -> None:
        """Publish a new load figure for the endpoint."""

    @abc.abstractmethod
    async def deregister(self) -> None:
        """Remove the entry now and stop renewing (idempotent; best effort when the
        registry is unreachable: the lease then runs out)."""


class Registry(abc.ABC):
    """Where servers announce the services they serve and clients find them."""

    @abc.abstractmethod
    async def register(self, endpoint: Endpoint, *, ttl: float) -> Registration:
        """Add `endpoint` under a lease of `ttl` seconds, renewed in the background.

        Raises `ConnectionClosedError` when the registry cannot be reached.
        """

    @abc.abstractmethod
    def watch(self, service: str) -> AsyncGenerator[tuple[Endpoint, ...], None]:
        """The endpoints of `service` now, then again after each change, until closed.

        While the registry is unreachable nothing is yielded (the last set
        stands) and the watch resumes by itself when it is back. Entries that
        are not valid endpoints are skipped (and logged once).
        """

    async def close(self) -> None:  # noqa: B027 -- optional for backends holding nothing
        """Release connections; registrations made through it stop being renewed."""


def read_endpoint_file(path: str, service: str) -> tuple[Endpoint, ...]:
    """Endpoints from a file: one per line, ``URL [URL…] [zone=Z] [region=R]``.

    Blank lines and ``#`` comments are skipped. Raises `ConfigurationError`
    (with the file and line) for a line that is not an endpoint.
    """
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"cannot read endpoint file {path}: {error}") from None
    endpoints: list[Endpoint] = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        urls = [word for word in words if "=" not in word]
        labels = dict(word.split("=", 1) for word in words if "=" in word)
        unknown = set(labels) - {"zone", "region"}
        try:
            if unknown:
                raise InvalidEndpointError(f"unknown label {sorted(unknown)[0]!r}")
            if not urls:
                raise InvalidEndpointError("no URL")
            endpoints.append(
                Endpoint(
                    service,
                    instance_of(urls[0]),
                    tuple(urls),
                    zone=labels.get("zone", ""),
                    region=labels.get("region", ""),
                )
            )
        except InvalidEndpointError as error:
            raise ConfigurationError(f"{path}:{number}: {error}") from None
    return tuple(endpoints)


class StaticRegistry(Registry):
    """A fixed list of endpoints, plus those registered in this process.

    ``StaticRegistry(["ws://a:8080", "ws://b:8080"])`` lists servers by URL
    (every service is served by all of them); ``StaticRegistry(file=path)``
    reads them from a file (`read_endpoint_file`) and reads it again when it
    changes (checked every `reload_interval` seconds). `register` adds an
    endpoint for watchers in this process only (no lease: nothing outlives
    the process to expire). A listed server that dies stays listed: the
    balancing channel's health checks take it out of rotation.
    """

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        file: str | None = None,
        zone: str = "",
        region: str = "",
        reload_interval: float = 1.0,
    ) -> None:
        if isinstance(urls, str):
            raise ConfigurationError("give StaticRegistry a list of URLs, not one string")
        self._urls = tuple(urls)
        self._file = file
        self._zone = zone
        self._region = region
        self._reload_interval = reload_interval
        self._registered: dict[tuple[str, str], Endpoint] = {}
        self._changed = asyncio.Condition()
        self._version = 0
        for url in self._urls:  # refuse a bad URL now, not on the first watch
            Endpoint("check", instance_of(url), (url,))
        if file is not None:
            read_endpoint_file(file, "check")

    def _listed(self, service: str) -> tuple[Endpoint, ...]:
        listed = [
            Endpoint(service, instance_of(url), (url,), zone=self._zone, region=self._region)
            for url in self._urls
        ]
        if self._file is not None:
            try:
                listed.extend(read_endpoint_file(self._file, service))
            except ConfigurationError as error:
                # The file is being rewritten or was broken: keep the last good set.
                raise _UnreadableFileError(str(error)) from None
        listed.extend(e for (name, _), e in self._registered.items() if name == service)
        return tuple(listed)

    async def register(self, endpoint: Endpoint, *, ttl: float) -> Registration:
        key = (endpoint.service, endpoint.instance)
        self._registered[key] = endpoint
        await self._notify()
        return _StaticRegistration(self, endpoint)

    async def _notify(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    async def watch(self, service: str) -> AsyncGenerator[tuple[Endpoint, ...], None]:
        last: tuple[Endpoint, ...] | None = None
        mtime = _mtime(self._file)
        version = -1
        while True:
            if version != self._version:
                version = self._version
                with contextlib.suppress(_UnreadableFileError):
                    current = self._listed(service)
                    if current != last:
                        last = current
                        yield current
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    timeout = self._reload_interval if self._file is not None else None
                    await asyncio.wait_for(self._changed.wait_for(self._newer(version)), timeout)
            if self._file is not None:
                now = _mtime(self._file)
                if now != mtime:
                    mtime = now
                    version = -1

    def _newer(self, version: int) -> Callable[[], bool]:
        return lambda: self._version != version

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        """The endpoints listed and registered for `service` now."""
        return self._listed(service)


class _UnreadableFileError(Exception):
    """The endpoint file cannot be read now: keep the last set."""


def _mtime(path: str | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


class _StaticRegistration(Registration):
    def __init__(self, registry: StaticRegistry, endpoint: Endpoint) -> None:
        self._registry = registry
        self.endpoint = endpoint
        self._gone = False

    async def update(self, *, load: float) -> None:
        if self._gone:
            return
        key = (self.endpoint.service, self.endpoint.instance)
        self.endpoint = dataclasses.replace(self.endpoint, load=load)
        self._registry._registered[key] = self.endpoint
        await self._registry._notify()

    async def deregister(self) -> None:
        if self._gone:
            return
        self._gone = True
        key = (self.endpoint.service, self.endpoint.instance)
        self._registry._registered.pop(key, None)
        await self._registry._notify()
