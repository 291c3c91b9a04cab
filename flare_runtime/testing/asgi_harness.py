"""The ASGI mount's conformance harness: Flare inside a Starlette app under uvicorn.

`harness()` serves the conformance server the way an application mounts it
(`flare_runtime.asgi`): a Starlette app with an HTTP route at ``/`` and
`FlareASGI` at ``/flare``, Flare's lifespan as the app's, run by a real
uvicorn server on 127.0.0.1 port 0 (either of its WebSocket implementations,
websockets-sansio or wsproto); clients connect to
``ws://127.0.0.1:<port>/flare``. Nothing is skipped: the mount is the
WebSocket endpoint, so it must pass every test the native listener passes.

`UvicornServer` runs any ASGI app that way, for other tests of the mount;
`UvicornProcess` runs ``python -m uvicorn module:app`` in a child process, as
a deployment does (to measure its memory, or stop it with a signal).
Shutting the `Server` down stops uvicorn too, after Flare has drained, in
the order a process stopped by a signal follows (`FlareASGI`'s signal drain,
then uvicorn's own shutdown, then the lifespan's end).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from flare_runtime.asgi import ASGIApp, FlareASGI, message_limit
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.server import Server
from flare_runtime.testing.harness import Harness

HTTP_GREETING = "an HTTP route beside Flare\n"
"""What the harness app's HTTP route ``/`` answers."""


class UvicornServer:
    """A uvicorn server running `app` on 127.0.0.1 (port 0 picks one) in this event loop.

    ``ws`` is uvicorn's WebSocket implementation ("websockets-sansio", what its
    "auto" picks with websockets installed, or "wsproto"). permessage-deflate is
    off and the largest message is Flare's limit, as docs/asgi.md recommends.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int = 0,
        ws: str = "websockets-sansio",
        max_message: int = message_limit(ProtocolConfig().settings),
    ) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws=ws,
            ws_per_message_deflate=False,
            ws_max_size=max_message,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        self.uvicorn = uvicorn.Server(config)
        self.port = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> int:
        """Start serving; returns the port once uvicorn listens (RuntimeError if it fails)."""
        self._task = asyncio.ensure_future(self.uvicorn.serve())
        async with asyncio.timeout(timeout):
            while not self.uvicorn.started:
                if self._task.done():
                    raise RuntimeError("uvicorn did not start (see its log)")
                await asyncio.sleep(0.01)
        self.port = self.uvicorn.servers[0].sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop as on SIGTERM: uvicorn's shutdown, then the app's lifespan shutdown."""
        if self._task is not None:
            self.uvicorn.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class UvicornProcess:
    """``python -m uvicorn TARGET`` in a child process, on a free port of 127.0.0.1."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: IO[bytes]) -> None:
        self.process = process
        self.port = port
        self._log = log

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, target: str, *, cwd: Path | None = None, timeout: float = 30.0
    ) -> AsyncIterator[UvicornProcess]:
        """Run uvicorn on `target` (``module:app``) until the block ends (SIGKILL if still up).

        Flare's recommended settings: no permessage-deflate, Flare's message limit.
        Raises `RuntimeError` if it does not accept connections within `timeout` s.
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        arguments = [
            "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
            "--ws-per-message-deflate", "false",
            "--ws-max-size", str(message_limit(ProtocolConfig().settings)),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        with tempfile.TemporaryFile() as log:  # a file: a child logging must never block
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *arguments,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            served = cls(process, port, log)
            try:
                await served._wait_listening(timeout)
                yield served
            finally:
                if process.returncode is None:
                    process.kill()
                await process.wait()

    async def _wait_listening(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"uvicorn exited: {self.log_text()[-2000:]}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                return

    def log_text(self) -> str:
        """What the child wrote to stdout and stderr so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def rss(self) -> int:
        """The child's resident memory in bytes (Linux: /proc/<pid>/status, VmRSS)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line in /proc/<pid>/status")

    def terminate(self) -> None:
        """Send SIGTERM, as a service manager stopping the deployment does."""
        self.process.terminate()


class _StopsAfterFlare:
    """The uvicorn server as a listener of the Flare `Server`: stopped after the mount drained."""

    def __init__(self, flare: FlareASGI, server: UvicornServer) -> None:
        self._flare = flare
        self._server = server
        self.port = server.port

    async def shutdown(self, grace: float) -> None:
        await self._flare.shutdown(grace)
        await self._server.stop()


async def _greet(request: Request) -> PlainTextResponse:
    return PlainTextResponse(HTTP_GREETING)


async def _start_mounted(server: Server, ws: str) -> str:
    flare = FlareASGI(server)
    app = Starlette(
        routes=[Route("/", _greet), WebSocketRoute("/flare", flare)], lifespan=flare.lifespan
    )
    running = UvicornServer(app, ws=ws)
    port = await running.start()
    await server.attach("uvicorn", _StopsAfterFlare(flare, running))
    return f"ws://127.0.0.1:{port}/flare"


WEBSOCKET_IMPLEMENTATIONS = ("websockets-sansio", "wsproto")
"""uvicorn's WebSocket implementations the mount is tested under (``--ws``)."""


def harness(ws: str = "websockets-sansio") -> Harness:
    """Flare mounted in a Starlette app under uvicorn (`flare_runtime.asgi`), uvicorn
    running its `ws` WebSocket implementation (one of `WEBSOCKET_IMPLEMENTATIONS`)."""

    async def start(server: Server) -> str:
        return await _start_mounted(server, ws)

    return Harness("asgi", start)
