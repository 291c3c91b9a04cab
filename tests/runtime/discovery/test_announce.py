"""`announce`: what a server registers, its load updates, deregister-first shutdown, refusals."""

from __future__ import annotations

import asyncio

import pytest

import flare_runtime as flare
from flare_runtime.discovery import announce
from flare_runtime.discovery.announce import server_urls
from flare_runtime.discovery.etcd import EtcdRegistry
from flare_runtime.discovery.registry import StaticRegistry
from flare_runtime.errors import ConfigurationError, ConnectionClosedError
from flare_runtime.testing.discovery import (
    READ,
    SERVICE,
    SERVICE_NAME,
    CountingService,
    StringValue,
    free_port,
)
from flare_runtime.testing.timing import UNIT, wait_until


async def test_registers_each_service_with_one_url_per_transport() -> None:
    server = flare.Server([(SERVICE, CountingService("s"))])
    await server.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    registry = StaticRegistry()
    try:
        announcement = await announce(
            server, registry, host="127.0.0.1", zone="z1", region="r1", labels={"v": "2"}
        )
        ws, grpc = server.port("websocket"), server.port("grpc")
        assert server_urls(server, "127.0.0.1") == (
            f"ws://127.0.0.1:{ws}",
            f"grpc://127.0.0.1:{grpc}",
        )
        # Reflection is served too, but not announced.
        [endpoint] = registry.endpoints(SERVICE_NAME)
        assert announcement.endpoints == (endpoint,)
        assert endpoint.instance == f"127.0.0.1:{ws}"
        assert endpoint.urls == (f"ws://127.0.0.1:{ws}", f"grpc://127.0.0.1:{grpc}")
        assert (endpoint.zone, endpoint.region, dict(endpoint.labels)) == ("z1", "r1", {"v": "2"})
        assert registry.endpoints("flare.reflection.v1.Reflection") == ()
    finally:
        await server.shutdown(0)
    assert registry.endpoints(SERVICE_NAME) == ()


def test_ipv6_hosts_are_bracketed() -> None:
    class _Started:
        transports = ("websocket",)

        def port(self, name: str) -> int:
            return 8080

    assert server_urls(_Started(), "::1") == ("ws://[::1]:8080",)  # type: ignore[arg-type]


async def test_load_is_published_when_it_changes() -> None:
    server = flare.Server([(SERVICE, CountingService("s"))])
    await server.start(websocket="127.0.0.1:0")
    registry = StaticRegistry()
    try:
        await announce(server, registry, host="127.0.0.1", load_interval=0.05)
        assert [e.load for e in registry.endpoints(SERVICE_NAME)] == [0.0]
        async with flare.connect(f"ws://127.0.0.1:{server.port('websocket')}") as channel:
            await channel.unary_unary(READ, StringValue(value="x"))
            await wait_until(lambda: registry.endpoints(SERVICE_NAME)[0].load == 1.0)
    finally:
        await server.shutdown(0)


async def test_shutdown_deregisters_before_the_listeners_stop() -> None:
    """The entry goes first; during `drain_delay` the server still takes calls."""
    server = flare.Server([(SERVICE, CountingService("s"))])
    await server.start(websocket="127.0.0.1:0")
    registry = StaticRegistry()
    url = f"ws://127.0.0.1:{server.port('websocket')}"
    await announce(server, registry, host="127.0.0.1", drain_delay=1.0)
    watch = registry.watch(SERVICE_NAME)
    assert len(await anext(watch)) == 1
    shutdown = asyncio.ensure_future(server.shutdown(5))
    try:
        async with asyncio.timeout(5 * UNIT):
            assert await anext(watch) == ()
        assert not shutdown.done()
        async with flare.connect(url) as channel:
            answer = await channel.unary_unary(READ, StringValue(value="x"))
        assert answer.value == "s"
    finally:
        await watch.aclose()
        await shutdown
    with pytest.raises(ConnectionClosedError):
        await flare.connect(url, open_timeout=1.0)


async def test_refusals() -> None:
    server = flare.Server([(SERVICE, CountingService("s"))])
    with pytest.raises(ConfigurationError, match="after it has started"):
        await announce(server, StaticRegistry(), host="127.0.0.1")
    bare = flare.Server([])
    await bare.start(websocket="127.0.0.1:0")
    try:
        with pytest.raises(ConfigurationError, match="no service to announce"):
            await announce(bare, StaticRegistry(), host="127.0.0.1")
    finally:
        await bare.shutdown(0)


async def test_unreachable_registry_leaves_nothing_registered() -> None:
    server = flare.Server([(SERVICE, CountingService("s"))])
    await server.start(websocket="127.0.0.1:0")
    registry = EtcdRegistry(f"127.0.0.1:{free_port()}", timeout=0.5)
    try:
        with pytest.raises(ConnectionClosedError):
            await announce(server, registry, host="127.0.0.1")
    finally:
        await registry.close()
        await server.shutdown(0)
