"""`StaticRegistry`: URL lists, endpoint files (reloaded), in-process registration."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from flare_runtime.discovery.endpoint import Endpoint
from flare_runtime.discovery.registry import StaticRegistry, read_endpoint_file
from flare_runtime.errors import ConfigurationError
from flare_runtime.testing.timing import UNIT


async def test_urls_serve_every_service() -> None:
    registry = StaticRegistry(["ws://a:1", "grpc://b:2"], zone="z1")
    watch = registry.watch("pkg.S")
    endpoints = await anext(watch)
    assert [(e.instance, e.urls, e.zone) for e in endpoints] == [
        ("a:1", ("ws://a:1",), "z1"),
        ("b:2", ("grpc://b:2",), "z1"),
    ]
    await watch.aclose()


def test_bad_url_is_refused_at_once() -> None:
    with pytest.raises(ConfigurationError):
        StaticRegistry(["nonsense"])
    with pytest.raises(ConfigurationError):
        StaticRegistry("ws://a:1")


def test_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "endpoints"
    path.write_text("# servers\nws://a:1 quic://a:2 zone=z1 region=r1\n\nws://b:1  # spare\n")
    endpoints = read_endpoint_file(str(path), "pkg.S")
    assert endpoints == (
        Endpoint("pkg.S", "a:1", ("ws://a:1", "quic://a:2"), zone="z1", region="r1"),
        Endpoint("pkg.S", "b:1", ("ws://b:1",)),
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [("ws://a:1 color=red\n", "unknown label"), ("zone=z\n", "no URL"), ("a:1\n", "bad URL")],
)
def test_bad_file_line_names_file_and_line(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "endpoints"
    path.write_text("ws://ok:1\n" + text)
    with pytest.raises(ConfigurationError, match=rf"endpoints:2: .*{why}"):
        read_endpoint_file(str(path), "s")


async def test_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "endpoints"
    path.write_text("ws://a:1\n")
    registry = StaticRegistry(file=str(path), reload_interval=0.05)
    watch = registry.watch("s")
    assert [e.instance for e in await anext(watch)] == ["a:1"]
    path.write_text("ws://a:1\nws://b:1\n")
    os.utime(path, (1, 1))  # a different mtime even within the clock's resolution
    async with asyncio.timeout(10 * UNIT):
        assert [e.instance for e in await anext(watch)] == ["a:1", "b:1"]
    # A broken file keeps the last good set: nothing is yielded for it.
    path.write_text("garbage\n")
    os.utime(path, (2, 2))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await anext(watch)
    await watch.aclose()


async def test_registration_in_process() -> None:
    registry = StaticRegistry()
    watch = registry.watch("s")
    assert await anext(watch) == ()
    registration = await registry.register(Endpoint("s", "h:1", ("ws://h:1",)), ttl=5)
    assert [e.instance for e in await anext(watch)] == ["h:1"]
    await registration.update(load=7)
    assert [e.load for e in await anext(watch)] == [7.0]
    await registration.deregister()
    assert await anext(watch) == ()
    await watch.aclose()
