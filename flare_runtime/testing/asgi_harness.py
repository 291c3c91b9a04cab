"""The ASGI mount's conformance harness: Flare inside a Starlette app under uvicorn.

`harness()` serves the conformance server the way an application mounts it
(`flare_runtime.asgi`): a Starlette app with an HTTP route at ``/`` and
`FlareASGI` at ``/flare``, Flare's lifespan as the app's, run by a real
uvicorn server on 127.0.0.1 port 0; clients connect to
``ws://127.0.0.1:<port>/flare``. Nothing is skipped: the mount is the
WebSocket endpoint, so it must pass every test the native listener passes.

`UvicornServer` runs any ASGI app that way, for other tests of the mount.
Shutting the `Server` down stops uvicorn too, after Flare has drained, in
the order a process stopped by a signal follows (`FlareASGI`'s signal drain,
then uvicorn's own shutdown, then the lifespan's end).
"""

from __future__ import annotations

import asyncio
import contextlib

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


async def _start_mounted(server: Server) -> str:
    flare = FlareASGI(server)
    app = Starlette(
        routes=[Route("/", _greet), WebSocketRoute("/flare", flare)], lifespan=flare.lifespan
    )
    running = UvicornServer(app)
    port = await running.start()
    await server.attach("uvicorn", _StopsAfterFlare(flare, running))
    return f"ws://127.0.0.1:{port}/flare"


def harness() -> Harness:
    """Flare mounted in a Starlette app under uvicorn (`flare_runtime.asgi`)."""
    return Harness("asgi", _start_mounted)
