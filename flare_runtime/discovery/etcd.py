"""`EtcdRegistry`: the registry on etcd v3, through etcd's gRPC API and Flare's gRPC channel.

::

    registry = EtcdRegistry("127.0.0.1:2379")            # or ["h1:2379", "h2:2379", "h3:2379"]
    registration = await registry.register(endpoint, ttl=10.0)
    async for endpoints in registry.watch("examples.chat.v1.ChatService"): ...

Layout: each endpoint is one key, ``<prefix><service>/<instance>`` (prefix
``/flare/services/``), whose value is the endpoint's JSON (`Endpoint.to_json`),
attached to a lease of ``ttl`` seconds.

* **Registering** grants the lease and puts the key, then renews the lease
  every ``ttl / 3`` seconds. When etcd cannot be reached it keeps trying
  (backoff up to 2 s); if the lease expired meanwhile (or etcd lost it), it
  grants a new one and puts the key again. `deregister` revokes the lease,
  which deletes the key at once.
* **Watching** reads the service's keys (one Range), yields the set, then
  watches the prefix from the next revision: every change is yielded as the
  new set. When the stream breaks (etcd restarted, the member failed) nothing
  is yielded -- the last set stands -- and the watch is re-created from the
  last revision seen, so no change is missed; if etcd compacted that
  revision away, the keys are read again. Entries that are not endpoints are
  skipped, each logged once.

The calls are etcd's own gRPC services (``etcdserverpb.KV``, ``Watch``,
``Lease``), made through clients Flare generated from
``schemas/flare/etcd/v3/*.proto`` over ``grpc://`` (docs/discovery.md says
why this rather than a PyPI client). Several etcd members: the channel talks
to one and moves to the next when a call fails with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from flare.etcd.v3 import kv_pb2, rpc_pb2
from flare.etcd.v3.rpc_flare import KVClient, LeaseClient, WatchClient

from flare_runtime.client import Channel, connect
from flare_runtime.discovery.endpoint import Endpoint, InvalidEndpointError
from flare_runtime.discovery.registry import Registration, Registry
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.status import StatusCode

__all__ = ["DEFAULT_PREFIX", "EtcdRegistry"]

logger = logging.getLogger("flare_runtime.discovery.etcd")

DEFAULT_PREFIX = "/flare/services/"

_RETRY_INITIAL = 0.05
_RETRY_MAX = 2.0

_GRPC_OPTIONS = (
    # grpcio's reconnect backoff reaches 120 s by default: a registry must notice
    # etcd is back within seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A member that vanishes without a FIN (power loss, partition) is noticed by
    # HTTP/2 keepalive instead of never.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)

_TRANSIENT = (RpcError, ConnectionClosedError)


def _prefix_end(prefix: bytes) -> bytes:
    """The end of the key range holding every key that starts with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class _Retry:
    """Backoff between attempts to reach etcd: 50 ms doubling to 2 s, with jitter."""

    def __init__(self) -> None:
        self.delay = _RETRY_INITIAL

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * (0.5 + random.random() / 2))
        self.delay = min(_RETRY_MAX, self.delay * 2)

    def reset(self) -> None:
        self.delay = _RETRY_INITIAL


class EtcdRegistry(Registry):
    """A `Registry` on etcd v3 (see the module docstring).

    `endpoints` are etcd members' ``host:port`` (client URLs); `timeout` bounds
    each unary call to etcd (seconds); `prefix` is where entries live.
    `connect_options` go to `flare_runtime.connect` for the ``grpc://``
    channel (``ssl_context=`` with ``grpcs://`` members, ``token=``…).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "127.0.0.1:2379",
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        secure: bool = False,
        **connect_options: Any,
    ) -> None:
        members = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not members:
            raise ConfigurationError("EtcdRegistry needs at least one etcd member")
        scheme = "grpcs" if secure else "grpc"
        self._urls = [m if "://" in m else f"{scheme}://{m}" for m in members]
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.timeout = timeout
        self._options: dict[str, Any] = {
            "open_timeout": timeout,
            "grpc_options": _GRPC_OPTIONS,
            **connect_options,
        }
        self._next = 0
        self._channel: Channel | None = None
        self._opening: asyncio.Lock | None = None
        self._registrations: set[_EtcdRegistration] = set()
        self._logged_invalid: set[tuple[bytes, int]] = set()
        self._closed = False

    # -- the channel to etcd -----------------------------------------------------------

    async def channel(self) -> Channel:
        """The channel to the current etcd member (opened on first use).

        Raises `ConnectionClosedError` when no member answers.
        """
        if self._closed:
            raise ConnectionClosedError("the registry is closed")
        channel = self._channel
        if channel is not None:
            return channel
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._channel is not None:
                return self._channel
            errors = []
            for _ in range(len(self._urls)):
                url = self._urls[self._next]
                try:
                    self._channel = await connect(url, **self._options)
                    return self._channel
                except ConnectionClosedError as error:
                    errors.append(f"{url}: {error}")
                    self._next = (self._next + 1) % len(self._urls)
            raise ConnectionClosedError("no etcd member answers: " + "; ".join(errors))

    async def _failed(self, channel: Channel, error: BaseException) -> None:
        """A call on `channel` failed: with several members, move on to the next."""
        if len(self._urls) == 1 or self._channel is not channel:
            return  # grpcio reconnects to the one member by itself
        if isinstance(error, RpcError) and error.code is not StatusCode.UNAVAILABLE:
            return
        self._channel = None
        self._next = (self._next + 1) % len(self._urls)
        with contextlib.suppress(Exception):
            await channel.close()

    async def close(self) -> None:
        """Stop renewing (leases then run out), stop watches, close the channel."""
        self._closed = True
        for registration in list(self._registrations):
            registration.stop()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- registering -------------------------------------------------------------------

    def key(self, service: str, instance: str) -> bytes:
        """The key of one endpoint's entry."""
        return f"{self.prefix}{service}/{instance}".encode()

    async def register(self, endpoint: Endpoint, *, ttl: float) -> Registration:
        if not ttl >= 1:
            raise ConfigurationError("etcd leases are whole seconds: ttl must be at least 1")
        registration = _EtcdRegistration(self, endpoint, round(ttl))
        try:
            await registration.grant_and_put()
        except _TRANSIENT as error:
            raise ConnectionClosedError(f"cannot register in etcd: {error}") from None
        self._registrations.add(registration)
        registration.start()
        return registration

    # -- watching ----------------------------------------------------------------------

    async def watch(self, service: str) -> AsyncGenerator[tuple[Endpoint, ...], None]:
        prefix = f"{self.prefix}{service}/".encode()
        end = _prefix_end(prefix)
        entries: dict[bytes, Endpoint] = {}
        last: tuple[Endpoint, ...] | None = None
        revision = 0
        retry = _Retry()
        while not self._closed:
            channel: Channel | None = None
            call = None
            try:
                channel = await self.channel()
                if revision == 0:
                    reply = await KVClient(channel).range(
                        rpc_pb2.RangeRequest(key=prefix, range_end=end), timeout=self.timeout
                    )
                    entries = {}
                    for kv in reply.kvs:
                        self._apply_put(service, prefix, entries, kv)
                    revision = reply.header.revision
                    current = tuple(entries.values())
                    if current != last:
                        last = current
                        yield current
                call = WatchClient(channel).watch()
                await call.send(
                    rpc_pb2.WatchRequest(
                        create_request=rpc_pb2.WatchCreateRequest(
                            key=prefix,
                            range_end=end,
                            start_revision=revision + 1,
                            progress_notify=True,
                        )
                    )
                )
                async for response in call:
                    retry.reset()
                    if response.compact_revision:
                        logger.info(
                            "etcd compacted revision %d: reading %s again", revision, service
                        )
                        revision = 0
                        break
                    if response.canceled:
                        raise RpcError(StatusCode.UNAVAILABLE, response.cancel_reason or "canceled")
                    changed = False
                    for event in response.events:
                        if event.type == kv_pb2.Event.DELETE:
                            changed |= entries.pop(event.kv.key, None) is not None
                        else:
                            changed |= self._apply_put(service, prefix, entries, event.kv)
                    revision = max(revision, response.header.revision)
                    if changed:
                        current = tuple(entries.values())
                        if current != last:
                            last = current
                            yield current
            except _TRANSIENT as error:
                logger.debug("etcd watch of %s interrupted: %s", service, error)
                if channel is not None:
                    await self._failed(channel, error)
                await retry.wait()
            finally:
                if call is not None:
                    call.cancel()

    def _apply_put(
        self,
        service: str,
        prefix: bytes,
        entries: dict[bytes, Endpoint],
        kv: kv_pb2.KeyValue,
    ) -> bool:
        """Put `kv` into `entries`; False (and the entry dropped) when it is not an endpoint."""
        instance = kv.key[len(prefix) :].decode("utf-8", "replace")
        try:
            endpoint = Endpoint.from_json(service, instance, kv.value)
        except InvalidEndpointError as error:
            marker = (kv.key, kv.mod_revision)
            if marker not in self._logged_invalid and len(self._logged_invalid) < 1024:
                self._logged_invalid.add(marker)
                logger.warning("skipping etcd entry %r: %s", kv.key, error)
            return entries.pop(kv.key, None) is not None
        if entries.get(kv.key) == endpoint:
            return False
        entries[kv.key] = endpoint
        return True


class _EtcdRegistration(Registration):
    """One key under one lease, renewed every ttl/3 s (see the module docstring)."""

    def __init__(self, registry: EtcdRegistry, endpoint: Endpoint, ttl: int) -> None:
        self._registry = registry
        self.endpoint = endpoint
        self._ttl = ttl
        self._key = registry.key(endpoint.service, endpoint.instance)
        self.lease = 0
        self._task: asyncio.Task[None] | None = None
        self._gone = False

    async def grant_and_put(self) -> None:
        channel = await self._registry.channel()
        timeout = self._registry.timeout
        try:
            grant = await LeaseClient(channel).lease_grant(
                rpc_pb2.LeaseGrantRequest(TTL=self._ttl), timeout=timeout
            )
            if grant.error:
                raise RpcError(StatusCode.UNAVAILABLE, f"etcd refused a lease: {grant.error}")
            await KVClient(channel).put(
                rpc_pb2.PutRequest(key=self._key, value=self.endpoint.to_json(), lease=grant.ID),
                timeout=timeout,
            )
        except _TRANSIENT as error:
            await self._registry._failed(channel, error)
            raise
        self.lease = grant.ID

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._renew(), name=f"flare-etcd-lease {self.endpoint.instance}"
        )

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._registry._registrations.discard(self)

    async def _alive(self) -> bool:
        """Renew the lease once; False when etcd says it is gone."""
        channel = await self._registry.channel()
        call = LeaseClient(channel).lease_keep_alive(timeout=self._registry.timeout)
        try:
            await call.send(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease))
            async for reply in call:
                return reply.TTL > 0
            raise RpcError(StatusCode.UNAVAILABLE, "etcd ended the keep-alive stream")
        except _TRANSIENT as error:
            await self._registry._failed(channel, error)
            raise
        finally:
            call.cancel()

    async def _renew(self) -> None:
        retry = _Retry()
        interval = self._ttl / 3
        while True:
            await asyncio.sleep(interval)
            while True:
                try:
                    if not await self._alive():
                        logger.warning(
                            "etcd lease of %s expired: registering again", self.endpoint.instance
                        )
                        await self.grant_and_put()
                    retry.reset()
                    break
                except _TRANSIENT as error:
                    logger.debug("renewing the etcd lease failed: %s", error)
                    await retry.wait()

    async def update(self, *, load: float) -> None:
        if self._gone:
            return
        self.endpoint = dataclasses.replace(self.endpoint, load=load)
        channel = await self._registry.channel()
        try:
            await KVClient(channel).put(
                rpc_pb2.PutRequest(key=self._key, value=self.endpoint.to_json(), lease=self.lease),
                timeout=self._registry.timeout,
            )
        except _TRANSIENT as error:
            await self._registry._failed(channel, error)
            raise

    async def deregister(self) -> None:
        if self._gone:
            return
        self._gone = True
        self.stop()
        try:
            channel = await self._registry.channel()
            await LeaseClient(channel).lease_revoke(
                rpc_pb2.LeaseRevokeRequest(ID=self.lease), timeout=self._registry.timeout
            )
        except _TRANSIENT as error:
            logger.warning(
                "could not deregister %s from etcd (%s): its lease runs out in %d s",
                self.endpoint.instance,
                error,
                self._ttl,
            )
