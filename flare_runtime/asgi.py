"""Serve Flare's WebSocket endpoint inside an ASGI application (Starlette, FastAPI...).

`FlareASGI` is an ASGI application: it runs a Flare connection over each
WebSocket it is given, so a Flare server shares the port, the TLS and the
process of an existing web application under its ASGI server (uvicorn)::

    flare = FlareASGI(server)                        # server: a flare_runtime.Server
    app = Starlette(routes=[..., WebSocketRoute("/flare", flare)], lifespan=flare.lifespan)
    # FastAPI: FastAPI(lifespan=flare.lifespan, routes=[WebSocketRoute("/flare", flare)])
    # any ASGI app: app = FlareASGI(server, app, path="/flare")

Clients connect as to the native listener: ``flare_runtime.connect("ws://host:port/flare")``,
``@flare/client`` in a browser. docs/asgi.md is the guide; the contract:

* **The same upgrade as the native listener.** Credentials and metadata come
  from the upgrade request exactly as there (`upgrade_metadata`, shared with
  `flare_runtime.transports.websocket`): ``Authorization``, or one
  ``access_token`` query parameter, and ``x-flare-*`` headers. An upgrade they
  cannot come from is refused before it is accepted: 401 (two credentials) or
  400 (a ``-bin`` header that is not base64) with the reason in the body where
  the ASGI server offers the denial-response extension
  (``websocket.http.response``: uvicorn, Hypercorn), 403 without a body
  otherwise (``websocket.close`` before ``websocket.accept``); 503 once the
  server is shutting down. Refusals are logged through the server's `PeerLog`.
* **Messages.** Each binary message's bytes go to the connection's
  `ServerEndpoint` (message boundaries carry no meaning, as on the native
  listener); its output leaves as binary messages of at most
  `MAX_WEBSOCKET_MESSAGE` bytes, queued writes joined while the ASGI server
  is busy sending. A text message closes the WebSocket with 1003, a message
  larger than the server's limit (`message_limit`) with 1009; a Flare close
  (go-away, a protocol error) ends with 1000, the Flare CLOSE frame before it
  carrying the reason.
* **Backpressure.** ``websocket.send`` is awaited one message at a time; what
  waits behind it is counted as the connection's write buffer, so
  `ServerOptions.max_write_buffer` and `ServerOptions.max_unsent_output` hold
  as on the native listener: above the first, senders wait and the connection
  reads nothing more (this module stops calling ``receive``; uvicorn then stops
  reading the socket); above the second, the connection is aborted. An abort
  is this side letting go: the queue is dropped and the application returns,
  the ASGI server closes the socket (it owns it, and holds at most its own
  buffer for a client that never reads).
* **Lifespan.** At the application's startup (`lifespan`, or the ``lifespan``
  scope when `FlareASGI` is the outer application) the mount joins the server
  (`Server.attach`: the router is frozen, `Server.shutdown` drains the mount's
  connections with the server's other listeners); at its shutdown,
  ``server.shutdown(grace)`` runs. ASGI servers close their WebSockets before
  the lifespan shutdown (uvicorn with 1012), so the graceful drain (GOAWAY,
  calls in flight finish for up to `grace` s) runs first, at the SIGINT/SIGTERM
  that starts the ASGI server's shutdown: `FlareASGI` puts its handler in front
  of the ASGI server's own (`drain_on_signal`), drains, then hands the signal on.

The ASGI server's own WebSocket settings apply on top: run uvicorn with
``--ws-per-message-deflate false`` (Flare's native listener does not compress;
browsers always offer it) and a ``--ws-max-size`` of at least `message_limit`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

from flare_runtime.errors import ConnectionClosedError
from flare_runtime.routing import Transport
from flare_runtime.server import Server
from flare_runtime.transports.websocket import (
    MAX_WEBSOCKET_MESSAGE,
    UpgradeRefusedError,
    message_limit,
    upgrade_metadata,
)
from flare_runtime.wire.endpoint import WireEndpoint
from flare_runtime.wire.listener import EndpointSet
from flare_runtime.wire.server import ServerEndpoint

__all__ = ["ASGIApp", "FlareASGI", "Receive", "Scope", "Send", "message_limit"]

logger = logging.getLogger("flare_runtime.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application (what Starlette's ``ASGIApp`` is)."""

DENIAL_RESPONSE = "websocket.http.response"
"""The ASGI extension that lets an application refuse a WebSocket with any HTTP response."""

_CLEAN_CLOSE_CODES = frozenset({1000, 1001, 1005})
"""WebSocket close codes of a connection that ended normally (RFC 6455 §7.4.1)."""


class _Pipe:
    """`WireTransport` over one ASGI WebSocket: the endpoint's writes become
    ``websocket.send`` messages, received messages its `data_received`.

    Two tasks run the connection: the reader (``receive`` → endpoint) and the
    writer (the queue → ``send``, awaited one message at a time). The first to
    see the end -- the client's disconnect, the close sent, a failed send, an
    abort -- finishes the connection for both.
    """

    max_write_size = MAX_WEBSOCKET_MESSAGE
    """The endpoint cuts its output at frame boundaries into writes of at most this size."""

    def __init__(
        self, receive: Receive, send: Send, peer: str, high_water: int, max_message: int
    ) -> None:
        self.peer = peer
        self.endpoint: WireEndpoint | None = None
        self._receive = receive
        self._send = send
        self._high_water = high_water
        self._low_water = high_water // 4  # asyncio's default for a given high-water mark
        self._max_message = max_message
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes written and not yet sent (the message being sent included)
        self._write_paused = False
        self._writer_waiting: asyncio.Future[None] | None = None
        self._read_paused: asyncio.Future[None] | None = None
        self._close: tuple[int, str] | None = None  # the WebSocket close to send after the queue
        self._finished: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )

    # -------------------------------------------------------------- WireTransport

    def write(self, data: bytes) -> None:
        if self._close is not None or self._finished.done():
            return
        self._queue.append(data)
        self._queued += len(data)
        if not self._write_paused and self._queued > self._high_water:
            self._write_paused = True
            if self.endpoint is not None:
                self.endpoint.pause_writing()
        self._wake_writer()

    def get_write_buffer_size(self) -> int:
        return self._queued

    def pause_reading(self) -> None:
        if self._read_paused is None:
            self._read_paused = asyncio.get_running_loop().create_future()

    def resume_reading(self) -> None:
        paused, self._read_paused = self._read_paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    def close(self, reason: str = "") -> None:
        """Send what is queued, then a WebSocket close (1000: the Flare CLOSE frame,
        already queued, carries the real reason)."""
        self._close_after_queue(1000, reason)

    def abort(self) -> None:
        """Drop what is queued and let the connection go (the ASGI server closes it)."""
        self._queue.clear()
        self._queued = 0
        self._finish(ConnectionClosedError("connection aborted"))

    # -------------------------------------------------------------- running

    async def run(self) -> None:
        """Serve the connection until it ends; then tell the endpoint it is gone."""
        reader = asyncio.ensure_future(self._read())
        writer = asyncio.ensure_future(self._write())
        try:
            await self._finished
        finally:
            # Finished, or cancelled (the ASGI server gave up on us): both tasks go.
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            finished = self._finished
            endpoint, self.endpoint = self.endpoint, None
            if endpoint is not None:
                endpoint.connection_lost(finished.result() if finished.done() else None)

    async def _read(self) -> None:
        receive = self._receive
        while True:
            paused = self._read_paused
            if paused is not None:
                await paused
                continue
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("bytes")
                if data is None:
                    self._close_after_queue(1003, "Flare speaks binary messages only")
                    return
                if len(data) > self._max_message:
                    self._close_after_queue(1009, f"message over {self._max_message} bytes")
                    return
                endpoint = self.endpoint
                if endpoint is not None:
                    try:
                        endpoint.data_received(data)
                    except Exception as error:
                        # A bug reached by this peer's input: close this connection only.
                        self._input_failed(error)
                        return
            elif kind == "websocket.disconnect":
                code = message.get("code", 1005)
                clean = code in _CLEAN_CLOSE_CODES
                self._finish(None if clean else ConnectionClosedError(f"closed with {code}"))
                return

    async def _write(self) -> None:
        send = self._send
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if queue:
                batch = self._take()
                try:
                    await send({"type": "websocket.send", "bytes": batch})
                except Exception as error:  # the spec says OSError; servers differ
                    self._finish(error)
                    return
                self._queued = max(0, self._queued - len(batch))
                if self._write_paused and self._queued <= self._low_water:
                    self._write_paused = False
                    if self.endpoint is not None:
                        self.endpoint.resume_writing()
                continue
            if self._close is not None:
                code, reason = self._close
                with contextlib.suppress(Exception):  # gone already: as closed
                    await send({"type": "websocket.close", "code": code, "reason": reason[:100]})
                self._finish(None)
                return
            self._writer_waiting = loop.create_future()
            try:
                await self._writer_waiting
            finally:
                self._writer_waiting = None

    def _take(self) -> bytes:
        """The next message: queued writes joined, up to `MAX_WEBSOCKET_MESSAGE` bytes
        (a single larger write travels alone)."""
        queue = self._queue
        first = queue.popleft()
        if not queue or len(first) + len(queue[0]) > MAX_WEBSOCKET_MESSAGE:
            return first
        parts = [first]
        size = len(first)
        while queue and size + len(queue[0]) <= MAX_WEBSOCKET_MESSAGE:
            data = queue.popleft()
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    def _close_after_queue(self, code: int, reason: str) -> None:
        if self._close is None and not self._finished.done():
            self._close = (code, reason)
            self._wake_writer()

    def _wake_writer(self) -> None:
        waiting = self._writer_waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._finished.done():
            self._finished.set_result(exc)

    def _input_failed(self, error: Exception) -> None:
        message = "WebSocket connection from %s failed on its input; closing it"
        endpoint = self.endpoint
        if isinstance(endpoint, ServerEndpoint):
            endpoint.server.peer_log.log(logger, logging.ERROR, message, self.peer, exc_info=error)
        else:
            logger.error(message, self.peer, exc_info=error)
        self.abort()


class FlareASGI:
    """An ASGI application serving a Flare `Server` over the WebSockets it is given.

    `app`: the application this one wraps, or None. With `app`, WebSocket
    scopes whose path (within ``root_path``) is `path` (default ``/flare``)
    are Flare's and everything else goes to `app`, the ``lifespan`` scope
    included (Flare starts before `app` sees ``lifespan.startup`` and drains
    before it sees ``lifespan.shutdown``). Without `app`, every WebSocket scope
    given is Flare's -- mount it with the framework's router -- unless `path`
    is given; HTTP requests get 404.

    `grace`: seconds calls in flight may take to finish at shutdown. `name`:
    the mount's name among the server's listeners (``server.port(name)`` is 0:
    the ASGI server owns the port). `drain_on_signal`: drain at the signal that
    starts the ASGI server's shutdown (the module docstring says why).

    It is also the server's `Listener` for the mount (`shutdown`, `port`).
    """

    def __init__(
        self,
        server: Server,
        app: ASGIApp | None = None,
        *,
        path: str | None = None,
        grace: float = 10.0,
        name: str = "asgi",
        drain_on_signal: bool = True,
    ) -> None:
        self.server = server
        self.app = app
        self.path = path if path is not None or app is None else "/flare"
        self.grace = grace
        self.name = name
        self.drain_on_signal = drain_on_signal
        self.port = 0
        """The `Listener` port: 0, the ASGI server owns the port."""
        self._endpoints = EndpointSet()
        self._started = False
        self._stopping: asyncio.Future[None] | None = None
        self._signal_handlers: dict[int, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and (self.path is None or _route_path(scope) == self.path):
            await self._serve(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await _refuse(scope, send, http.HTTPStatus.NOT_FOUND, "no Flare endpoint here")
        elif kind == "http":
            await _not_found(send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # gone before asking
        server = self.server
        peer = _peer(scope)
        if self._stopping is not None:
            await _refuse(scope, send, http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down")
            return
        if not self._started:
            await self.start()  # no lifespan (an ASGI server run without it)
        try:
            metadata = upgrade_metadata(
                [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in scope["headers"]
                ],
                scope.get("query_string", b"").decode("latin-1"),
            )
        except UpgradeRefusedError as refused:
            message = "refused WebSocket upgrade from %s: %s"
            server.peer_log.log(logger, logging.INFO, message, peer, refused.reason)
            await _refuse(scope, send, refused.status, refused.reason)
            return
        try:
            await send({"type": "websocket.accept"})
        except OSError:
            return
        options = server.options
        pipe = _Pipe(
            receive,
            send,
            peer,
            options.max_write_buffer,
            message_limit(options.protocol.settings),
        )
        pipe.endpoint = self._endpoints.add(
            ServerEndpoint(server, pipe, metadata, Transport.WEBSOCKET)
        )
        await pipe.run()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if app is not None:

            async def receive_and_run() -> Message:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.start()
                elif message["type"] == "lifespan.shutdown":
                    await self.stop()
                return message

            await app(scope, receive_and_run, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Join the server (`Server.attach`) and put the signal drain in place. Idempotent.

        Called at the ASGI application's startup; `lifespan` does it for Starlette
        and FastAPI.
        """
        if self._started:
            return
        await self.server.attach(self.name, self)
        self._started = True
        if self.drain_on_signal:
            self._install_signal_drain()

    async def stop(self) -> None:
        """Shut the server down (``server.shutdown(grace)``: every listener, the mount
        included, drains). Called at the ASGI application's shutdown."""
        self._restore_signals()
        await self.server.shutdown(self.grace)
        if not self._started:  # never attached: drain what connected anyway
            await self.shutdown(self.grace)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Flare's part of the application's lifespan: `start`, then `stop` at the end.

        Starlette's and FastAPI's ``lifespan=`` take it as it is; inside an
        application's own lifespan, ``async with flare.lifespan(app): yield``.
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def shutdown(self, grace: float) -> None:
        """The `Listener` side (`Server.shutdown` calls it): refuse new WebSockets (503),
        GOAWAY every connection, wait up to `grace` s for calls in flight, close.
        A second call waits for the first."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._endpoints.drain(grace))
        await asyncio.shield(self._stopping)

    # ---------------------------------------------------------------- signals

    def _install_signal_drain(self) -> None:
        """In front of the ASGI server's SIGINT/SIGTERM handlers: drain, then hand on.

        Only a Python-level handler the ASGI server installed (uvicorn's
        ``signal.signal``) is fronted; with none (or Python's default SIGINT
        handler) there is no ASGI server shutdown to run first.
        """
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous) or previous is signal.default_int_handler:
                continue

            def drain_first(number: int, frame: FrameType | None) -> None:
                handlers = dict(self._signal_handlers)
                self._restore_signals()  # a second signal goes straight to the ASGI server
                hand_on = handlers[number][0]
                loop.call_soon_threadsafe(self._drain_then, hand_on, number)

            signal.signal(signum, drain_first)
            self._signal_handlers[signum] = (previous, drain_first)

    def _drain_then(self, hand_on: Callable[[int, FrameType | None], Any], number: int) -> None:
        async def drain() -> None:
            try:
                await self.server.shutdown(self.grace)
            finally:
                hand_on(number, None)

        task = asyncio.ensure_future(drain())
        task.add_done_callback(_log_failure)

    def _restore_signals(self) -> None:
        handlers, self._signal_handlers = self._signal_handlers, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, (previous, ours) in handlers.items():
            if signal.getsignal(signum) is ours:
                signal.signal(signum, previous)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("draining Flare at shutdown failed", exc_info=task.exception())


def _route_path(scope: Scope) -> str:
    """The scope's path within its ``root_path`` (where a router would match it)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    if client:
        return f"{client[0]}:{client[1]}"
    return ""


async def _refuse(scope: Scope, send: Send, status: http.HTTPStatus, reason: str) -> None:
    """Refuse a WebSocket before accepting it: `status` and `reason` where the ASGI
    server offers the denial-response extension, 403 otherwise."""
    with contextlib.suppress(OSError):
        if DENIAL_RESPONSE in scope.get("extensions", {}):
            body = f"{reason}\n".encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": int(status),
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:100]})


async def _not_found(send: Send) -> None:
    body = b"Flare speaks WebSocket here\n"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
