"""`EtcdRegistry` against a real etcd: leases, watches, garbage entries, etcd restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from flare.etcd.v3 import rpc_pb2
from flare.etcd.v3.rpc_flare import KVClient

from flare_runtime.discovery.endpoint import Endpoint
from flare_runtime.discovery.etcd import EtcdRegistry, _prefix_end
from flare_runtime.errors import ConnectionClosedError
from flare_runtime.testing.discovery import EtcdProcess
from flare_runtime.testing.timing import UNIT

SERVICE = "pkg.Service"


def endpoint(instance: str, **changes: object) -> Endpoint:
    return Endpoint(SERVICE, instance, (f"ws://{instance}",), **changes)  # type: ignore[arg-type]


async def next_set(
    watch: AsyncGenerator[tuple[Endpoint, ...], None], timeout: float = 10 * UNIT
) -> set[str]:
    async with asyncio.timeout(timeout):
        return {e.instance for e in await anext(watch)}


async def until(
    watch: AsyncGenerator[tuple[Endpoint, ...], None],
    expected: set[str],
    timeout: float = 10 * UNIT,
) -> None:
    """Read sets until one is `expected` (changes may come one by one or together)."""
    async with asyncio.timeout(timeout):
        while {e.instance for e in await anext(watch)} != expected:
            pass


def test_prefix_end() -> None:
    assert _prefix_end(b"/a/") == b"/a0"
    assert _prefix_end(b"a\xff") == b"b"
    assert _prefix_end(b"\xff") == b"\0"


async def test_register_watch_update_deregister(etcd_registry: EtcdRegistry) -> None:
    watch = etcd_registry.watch(SERVICE)
    assert await next_set(watch) == set()
    first = await etcd_registry.register(endpoint("h:1", zone="z1"), ttl=5)
    assert await next_set(watch) == {"h:1"}
    second = await etcd_registry.register(endpoint("h:2"), ttl=5)
    assert await next_set(watch) == {"h:1", "h:2"}
    await second.update(load=4.0)
    async with asyncio.timeout(10 * UNIT):
        loads = {e.instance: e.load for e in await anext(watch)}
    assert loads == {"h:1": 0.0, "h:2": 4.0}
    await first.deregister()
    assert await next_set(watch) == {"h:2"}
    await second.deregister()
    await second.deregister()  # idempotent
    assert await next_set(watch) == set()
    await watch.aclose()


async def test_a_late_watcher_sees_the_current_set(etcd_registry: EtcdRegistry) -> None:
    registration = await etcd_registry.register(endpoint("h:1"), ttl=5)
    watch = etcd_registry.watch(SERVICE)
    assert await next_set(watch) == {"h:1"}
    await watch.aclose()
    await registration.deregister()


async def test_lease_is_renewed_then_expires_when_not(etcd_registry: EtcdRegistry) -> None:
    watch = etcd_registry.watch(SERVICE)
    assert await next_set(watch) == set()
    kept = await etcd_registry.register(endpoint("kept:1"), ttl=1)
    dropped = await etcd_registry.register(endpoint("dropped:1"), ttl=1)
    await until(watch, {"kept:1", "dropped:1"})
    dropped.stop()  # type: ignore[attr-defined]  # as if its process died: no more renewals
    # etcd expires a 1 s lease within ~1-2 s; the renewed one stays.
    await until(watch, {"kept:1"})
    await asyncio.sleep(1.5)
    await kept.update(load=1.0)  # still there: the put succeeds under the live lease
    await kept.deregister()
    await watch.aclose()


async def test_garbage_entries_are_skipped(etcd_registry: EtcdRegistry) -> None:
    """A registry entry with garbage: skipped (logged once); the valid ones are served."""
    channel = await etcd_registry.channel()
    kv = KVClient(channel)
    prefix = f"{etcd_registry.prefix}{SERVICE}/"
    await kv.put(rpc_pb2.PutRequest(key=f"{prefix}bad:1".encode(), value=b"\x00garbage"))
    registration = await etcd_registry.register(endpoint("good:1"), ttl=5)
    watch = etcd_registry.watch(SERVICE)
    assert await next_set(watch) == {"good:1"}
    await kv.put(rpc_pb2.PutRequest(key=f"{prefix}bad:2".encode(), value=b'{"urls": 5}'))
    await kv.put(rpc_pb2.PutRequest(key=f"{prefix}good:2".encode(), value=endpoint("x").to_json()))
    await until(watch, {"good:1", "good:2"})
    # A good entry overwritten with garbage leaves the set.
    await kv.put(rpc_pb2.PutRequest(key=f"{prefix}good:2".encode(), value=b"{"))
    assert await next_set(watch) == {"good:1"}
    await registration.deregister()
    await watch.aclose()


async def test_unreachable_etcd() -> None:
    registry = EtcdRegistry("127.0.0.1:1", timeout=1.0)
    with pytest.raises(ConnectionClosedError):
        await registry.register(endpoint("h:1"), ttl=5)
    await registry.close()


async def test_etcd_restart_keeps_the_set_and_resumes_watching(own_etcd: EtcdProcess) -> None:
    """etcd killed and restarted: the watcher keeps its last set (yields nothing while
    etcd is down), then sees changes made after the restart; leases are renewed again."""
    server_side = EtcdRegistry(own_etcd.address, timeout=1.0)
    client_side = EtcdRegistry(own_etcd.address, timeout=1.0)
    try:
        registration = await server_side.register(endpoint("h:1"), ttl=3)
        watch = client_side.watch(SERVICE)
        assert await next_set(watch) == {"h:1"}
        # The watch is read in a task (cancelling an anext() would end the generator).
        reading = asyncio.ensure_future(anext(watch))
        await own_etcd.stop()
        await asyncio.sleep(1.0)
        assert not reading.done()  # the last set stands: nothing is yielded while etcd is down
        await own_etcd.start()
        other = await server_side.register(endpoint("h:2"), ttl=3)
        async with asyncio.timeout(20 * UNIT):
            changed = {e.instance for e in await reading}
        if changed != {"h:1", "h:2"}:
            await until(watch, {"h:1", "h:2"}, 20 * UNIT)
        # The first registration's lease is renewed across the restart (ttl 3 s).
        await asyncio.sleep(4)
        await registration.deregister()
        assert await next_set(watch) == {"h:2"}
        await other.deregister()
        await watch.aclose()
    finally:
        await server_side.close()
        await client_side.close()


async def test_lease_lost_with_etcd_data_is_granted_again(own_etcd: EtcdProcess) -> None:
    """etcd comes back without the lease (a new, empty member): the registration puts
    its entry again under a new lease."""
    registry = EtcdRegistry(own_etcd.address, timeout=1.0)
    try:
        registration = await registry.register(endpoint("h:1"), ttl=1)
        await own_etcd.stop()
        replacement = EtcdProcess()
        replacement.port, replacement.peer_port = own_etcd.port, own_etcd.peer_port
        await replacement.start()
        try:
            watch = registry.watch(SERVICE)
            await until(watch, {"h:1"}, 20 * UNIT)
            await registration.deregister()
            await watch.aclose()
        finally:
            await replacement.close()
    finally:
        await registry.close()
