"""Rigs for discovery tests: a counting service in server processes that announce
themselves, and an etcd of a test's own.

`CountingService` (``flare.testing.v1.Counting``) has an idempotent route
(`READ`), a non-idempotent one (`WORK`) and an idempotent server stream
(`TICKS`). Each request carries an id (a ``StringValue``); the server appends
``<id>\\n`` to its log file *before* answering, unbuffered, so what a server
received survives its SIGKILL, and a test can check that no non-idempotent
request was ever processed twice. ``x-sleep`` metadata (seconds) makes a call
slow; a server started with ``delay`` sleeps that long on every call;
``x-fail`` makes it fail with UNAVAILABLE (after logging it).

`DiscoveryServer.start(...)` runs ``python -m flare_runtime.testing.discovery``:
a `Server` on 127.0.0.1 (WebSocket, or gRPC) announced in etcd
(``etcd=host:port``) or nowhere (static lists), printing ``READY <port>``;
SIGTERM shuts it down gracefully (deregister, drain, exit).

`EtcdProcess` runs Debian's ``etcd`` on free ports in a temporary directory
(stop, restart on the same data and ports, SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from google.protobuf import wrappers_pb2

from flare_runtime.context import CallContext
from flare_runtime.discovery.etcd import DEFAULT_PREFIX
from flare_runtime.errors import RpcError
from flare_runtime.routing import Cardinality, Route, RouteOptions, ServiceRoutes
from flare_runtime.server import Server
from flare_runtime.status import StatusCode

__all__ = [
    "READ",
    "SERVICE",
    "SERVICE_NAME",
    "TICKS",
    "WORK",
    "CountingService",
    "DiscoveryServer",
    "EtcdProcess",
    "etcd_answers",
    "free_port",
    "received_ids",
]

StringValue = wrappers_pb2.StringValue

SERVICE_NAME: Final = "flare.testing.v1.Counting"
_SERVICE_ID: Final = 0x7E10


def _route(
    name: str, route_id: int, cardinality: Cardinality, *, idempotent: bool
) -> Route[StringValue, StringValue]:
    return Route(
        path=f"/{SERVICE_NAME}/{name}",
        service_id=_SERVICE_ID,
        route_id=route_id,
        cardinality=cardinality,
        request_type=StringValue,
        response_type=StringValue,
        handler_name=name.lower(),
        options=RouteOptions(idempotent=idempotent),
    )


READ: Final = _route("Read", 1, Cardinality.UNARY, idempotent=True)
"""Idempotent unary: answers the server's name."""
WORK: Final = _route("Work", 2, Cardinality.UNARY, idempotent=False)
"""Not idempotent: answers the server's name."""
TICKS: Final = _route("Ticks", 3, Cardinality.SERVER_STREAM, idempotent=True)
"""Idempotent server stream: the server's name once per 50 ms, ``x-count`` times (or forever)."""
SERVICE: Final = ServiceRoutes(SERVICE_NAME, _SERVICE_ID, (READ, WORK, TICKS))


class CountingService:
    """Logs every request's id, then answers its name (see the module docstring)."""

    def __init__(self, name: str, log: str | None = None, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.received: dict[str, int] = {}
        self._log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if log else None

    async def _take(self, request: StringValue, context: CallContext) -> StringValue:
        self.received[request.value] = self.received.get(request.value, 0) + 1
        if self._log is not None:
            os.write(self._log, f"{request.value}\n".encode())
        if context.metadata.get("x-fail") is not None:
            raise RpcError(StatusCode.UNAVAILABLE, f"{self.name} fails on purpose")
        sleep = context.metadata.get("x-sleep")
        delay = float(sleep) if isinstance(sleep, str) else self.delay
        if delay:
            await asyncio.sleep(delay)
        return StringValue(value=self.name)

    async def read(self, request: StringValue, context: CallContext) -> StringValue:
        return await self._take(request, context)

    async def work(self, request: StringValue, context: CallContext) -> StringValue:
        return await self._take(request, context)

    async def ticks(self, request: StringValue, context: CallContext) -> AsyncIterator[StringValue]:
        await self._take(request, context)
        count = context.metadata.get("x-count")
        left = int(count) if isinstance(count, str) else -1
        while left != 0:
            yield StringValue(value=self.name)
            left -= 1
            await asyncio.sleep(0.05)


def received_ids(log: str | Path) -> list[str]:
    """The request ids a server's log holds, in order (duplicates kept)."""
    try:
        return Path(log).read_text().split()
    except FileNotFoundError:
        return []


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class DiscoveryServer:
    """A child process serving `CountingService` (see the module docstring)."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, name: str, log: str) -> None:
        self.process = process
        self.port = port
        self.name = name
        self.log = log

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @classmethod
    async def start(
        cls,
        name: str,
        log: str,
        *,
        etcd: str | None = None,
        port: int = 0,
        zone: str = "",
        delay: float = 0.0,
        ttl: int = 2,
        prefix: str = "",
        transport: str = "websocket",
        timeout: float = 20.0,
    ) -> DiscoveryServer:
        arguments = ["--name", name, "--log", log, "--port", str(port), "--ttl", str(ttl)]
        if prefix:
            arguments += ["--prefix", prefix]
        arguments += ["--transport", transport, "--delay", str(delay)]
        if etcd:
            arguments += ["--etcd", etcd]
        if zone:
            arguments += ["--zone", zone]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flare_runtime.testing.discovery",
            *arguments,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"server {name} did not start within {timeout} s") from None
        words = line.decode().split()
        if len(words) != 2 or words[0] != "READY":
            process.kill()
            await process.wait()
            raise RuntimeError(f"server {name} failed to start: {line!r}")
        return cls(process, int(words[1]), name, log)

    def kill(self) -> None:
        """SIGKILL: no deregistration, no drain."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (deregister, drain, exit); the exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def close(self) -> None:
        if self.process.returncode is None:
            self.kill()
        await self.process.wait()


class EtcdProcess:
    """An etcd of a test's own on free ports (`stop`, `start` again on the same data)."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="flare-etcd-")
        self.port = free_port()
        self.peer_port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @staticmethod
    def binary() -> str | None:
        """The etcd executable, or None when it is not installed."""
        return shutil.which("etcd")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        binary = self.binary()
        assert binary is not None, "etcd is not installed (.ci/services.d/80-etcd.sh)"
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--name=flare-test",
            f"--data-dir={self.directory}/data",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=flare-test={peer}",
            "--log-level=error",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(timeout):
            while not await etcd_answers(self.port):
                if self.process.returncode is not None:
                    raise RuntimeError(f"etcd exited with {self.process.returncode}")
                await asyncio.sleep(0.05)

    async def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.send_signal(sig)
            await process.wait()

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


async def etcd_answers(port: int) -> bool:
    """Whether etcd's client port answers its /health with health true."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(2.0):
            body = await reader.read()
        return b'"health":"true"' in body
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def _serve(arguments: argparse.Namespace) -> None:
    from flare_runtime.discovery.announce import announce  # noqa: PLC0415 -- the child only
    from flare_runtime.discovery.etcd import EtcdRegistry  # noqa: PLC0415 -- the child only

    service = CountingService(arguments.name, arguments.log, arguments.delay)
    server = Server([(SERVICE, service)])
    address = f"127.0.0.1:{arguments.port}"
    await server.start(listen={arguments.transport: address})
    registry = None
    if arguments.etcd:
        registry = EtcdRegistry(arguments.etcd, prefix=arguments.prefix, timeout=2.0)
        await announce(server, registry, host="127.0.0.1", zone=arguments.zone, ttl=arguments.ttl)
    print("READY", server.port(arguments.transport), flush=True)
    try:
        await server.serve_started(grace=10.0)
    finally:
        if registry is not None:
            await registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--etcd", default="")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--zone", default="")
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--transport", default="websocket")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
