"""`ReconnectingChannel`: one `Channel` that stays connected to any of several servers.

::

    channel = await flare.reconnecting(
        ["ws://node-a:8080", "ws://node-b:8080", "ws://node-c:8080"],
        token=jwt, push_tables=[PUSH_TYPES],
        backoff=flare.Backoff(),                         # the defaults: 0.25 s doubling to 10 s
        resume=log_in_again,                             # async (channel, reconnected) -> None
    )
    ...
    await channel.close()                                # or: async with flare.reconnecting(...)

It holds one connection at a time (WebSocket or QUIC: the wire transports,
whose pushes tell when the connection is gone) and behaves like the Python
twin of the TypeScript client (docs/typescript.md, "Reconnect"):

* **Any of several servers.** It starts at a random URL of the list (so
  clients spread over the nodes; ``shuffle=False``: at the first) and, when a
  connection cannot be opened or is lost, tries the next one.
* **Backoff.** After a failed attempt it waits ``min(max_delay, initial_delay
  * multiplier ** (attempt - 1))``, shortened by up to `jitter` at random (so
  clients of a dead node do not all come back at once), forever until
  `close`; a connection that stays up resets the count.
* **Calls wait for a connection.** A call started while it (re)connects waits,
  within its own ``timeout``, then runs on the new connection. A call on a
  connection that is lost fails with ``UNAVAILABLE`` and is not retried (the
  server may have run it: retry what is idempotent yourself).
* **Resume hook.** ``resume(channel, reconnected)`` runs on every connection,
  the first included, before the calls waiting are let through; its calls go
  straight to that connection (log in again, re-subscribe, ``Sync``). If it
  raises, that connection is dropped and the next one tried, with backoff.
* **Pushes outlive connections.** `pushes` iterators and `on_push` callbacks
  see every push of every connection, in order, until `close`.
* `on_state(state, error)` is told each `ChannelState` change.

The first ``await reconnecting(...)`` returns once a connection is up and
resumed, or raises `ConnectionClosedError` when none could be made within
``open_timeout`` seconds (all servers down). Every other keyword is
`flare_runtime.connect`'s, used for each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from flare_runtime.calls import BidiStreamCall, ServerStreamCall
from flare_runtime.client import Channel, connect
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.interceptors import ClientCallInfo
from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.routing import Route
from flare_runtime.status import StatusCode

logger = logging.getLogger("flare_runtime.reconnect")

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

ResumeHook = Callable[[Channel, bool], Awaitable[None]]
"""``resume(channel, reconnected)``: run on every new connection before calls go through."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between reconnect attempts (seconds)."""

    initial_delay: float = 0.25
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2
    """Fraction of each delay drawn at random (0: none; 1: anywhere in [0, delay])."""

    def delay(self, attempt: int, draw: float) -> float:
        """The wait before attempt `attempt` (1-based); `draw` is uniform in [0, 1)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        return base * (1 - self.jitter * draw)


class ChannelState(enum.Enum):
    """Where a `ReconnectingChannel` stands."""

    CONNECTING = "connecting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class ReconnectingChannel(Channel):
    """A `Channel` over one connection at a time to any of `urls` (see the module docstring).

    Made by `reconnecting`; `open` starts it.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        backoff: Backoff | None = None,
        resume: ResumeHook | None = None,
        on_state: Callable[[ChannelState, BaseException | None], None] | None = None,
        open_timeout: float = 10.0,
        max_pending_pushes: int = 1024,
        shuffle: bool = True,
        **connect_options: Any,
    ) -> None:
        super().__init__()
        if not urls:
            raise ConfigurationError("a reconnecting channel needs at least one URL")
        for url in urls:
            if url.split(":", 1)[0].lower() in ("grpc", "grpcs"):
                raise ConfigurationError(
                    f"{url}: reconnecting channels use WebSocket or QUIC "
                    "(grpcio reconnects a grpc:// channel by itself)"
                )
        self.urls = list(urls)
        self.backoff = backoff or Backoff()
        self._resume = resume
        self._on_state = on_state
        self._open_timeout = open_timeout
        self._max_pending = max_pending_pushes
        self._options: dict[str, Any] = {
            "open_timeout": open_timeout,
            "max_pending_pushes": max_pending_pushes,
            **connect_options,
        }
        self._next_url = random.randrange(len(self.urls)) if shuffle else 0
        self._channel: Channel | None = None
        self._ready: asyncio.Future[Channel] | None = None
        self._state = ChannelState.CONNECTING
        self._task: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[Message], None]] = []
        self._iterators: list[_PushQueue] = []
        self._closed = False
        self.url = ""
        """The URL of the current connection ("" while there is none)."""
        self.connections = 0
        """Connections made so far (the first included)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> ReconnectingChannel:
        """Connect (and resume) once; then keep a connection until `close`.

        Raises `ConnectionClosedError` when no server could be reached within
        ``open_timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._keep_connected(), name="flare-reconnect")
        try:
            async with asyncio.timeout(self._open_timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close()
            raise ConnectionClosedError(
                f"no server of {self.urls} could be reached within {self._open_timeout} s"
            ) from None
        return self

    @property
    def state(self) -> ChannelState:
        return self._state

    def _set_state(self, state: ChannelState, error: BaseException | None = None) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception:
                logger.exception("on_state callback failed")

    async def ready(self, timeout: float | None = None) -> Channel:
        """The current connection, waiting (at most `timeout` s) for one if there is none."""
        if self._closed:
            raise RpcError(StatusCode.UNAVAILABLE, "the channel is closed")
        channel = self._channel
        if channel is not None:
            return channel
        ready = self._ready
        assert ready is not None, "open() the channel first"
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(ready)
        except TimeoutError:
            raise RpcError(
                StatusCode.DEADLINE_EXCEEDED, "no connection to the server within the deadline"
            ) from None

    async def close(self) -> None:
        """Close the connection and stop reconnecting; push iterators end."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConnectionClosedError("the channel is closed"))
            self._ready.exception()
        for queue in self._iterators:
            queue.end()
        self._set_state(ChannelState.CLOSED)

    async def _keep_connected(self) -> None:
        attempt = 0
        reconnected = False
        loop = asyncio.get_running_loop()
        while not self._closed:
            url = self.urls[self._next_url]
            self._next_url = (self._next_url + 1) % len(self.urls)
            channel: Channel | None = None
            try:
                channel = await connect(url, **self._options)
                if self._resume is not None:
                    await self._resume(channel, reconnected)
            except asyncio.CancelledError:
                if channel is not None:
                    await channel.close()
                raise
            except Exception as error:
                if channel is not None:
                    await channel.close()
                attempt += 1
                logger.info("connecting to %s failed (%s); attempt %d", url, error, attempt)
                self._set_state(
                    ChannelState.RECONNECTING if reconnected else ChannelState.CONNECTING, error
                )
                await asyncio.sleep(self.backoff.delay(attempt, random.random()))
                continue
            self._channel, self.url = channel, url
            self.connections += 1
            reconnected = True
            up_since = loop.time()
            self._set_state(ChannelState.READY)
            assert self._ready is not None
            if not self._ready.done():
                self._ready.set_result(channel)
            await self._forward_pushes(channel)
            # The connection is gone: calls wait for the next one.
            self._channel, self.url = None, ""
            self._ready = loop.create_future()
            with contextlib.suppress(Exception):
                await channel.close()
            if self._closed:
                return
            self._set_state(ChannelState.RECONNECTING)
            if loop.time() - up_since > self.backoff.max_delay:
                attempt = 0  # it stayed up: start the backoff again
            attempt += 1
            await asyncio.sleep(self.backoff.delay(attempt, random.random()) if attempt > 1 else 0)

    async def _forward_pushes(self, channel: Channel) -> None:
        """Hand every push of `channel` on until it closes (its iterator ends then)."""
        async for push in channel.pushes():
            for callback in self._callbacks:
                try:
                    callback(push)
                except Exception:
                    logger.exception("push callback %r failed", callback)
            for queue in self._iterators:
                await queue.put(push)

    # -- pushes ------------------------------------------------------------------------

    def on_push(self, callback: Callable[[Message], None]) -> None:
        """Call `callback(message)` for every push of every connection."""
        self._callbacks.append(callback)

    async def pushes(self) -> AsyncIterator[Message]:
        """Every push from now on, across reconnects, until `close`."""
        queue = _PushQueue(self._max_pending)
        self._iterators.append(queue)
        try:
            while True:
                push = await queue.get()
                if push is None:
                    return
                yield push
        finally:
            self._iterators.remove(queue)

    # -- calls: the transport hooks of `Channel`, each on the current connection -------
    #
    # The connection's own channel runs the client interceptors (given to `connect`
    # through the connect options), so this channel has none of its own.

    async def _unary(
        self,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        timeout: float | None,
        info: ClientCallInfo | None,
    ) -> ResponseT:
        channel, left = await self._connection_within(timeout)
        return await channel.unary_unary(route, request, timeout=left, metadata=metadata)

    async def _client_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any], info: ClientCallInfo
    ) -> Message:
        channel, left = await self._connection_within(info.timeout)
        response: Message = await channel.stream_unary(
            info.route, requests, timeout=left, metadata=info.metadata
        )
        return response

    def _open_server_stream(self, request: Message, info: ClientCallInfo) -> ServerStreamCall[Any]:
        return _WaitingCall(
            self,
            info.timeout,
            lambda channel, left: channel.unary_stream(
                info.route, request, timeout=left, metadata=info.metadata
            ),
        )

    def _open_bidi_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any] | None, info: ClientCallInfo
    ) -> BidiStreamCall[Any, Any]:
        return _WaitingCall(
            self,
            info.timeout,
            lambda channel, left: channel.stream_stream(
                info.route, requests, timeout=left, metadata=info.metadata
            ),
        )

    async def _connection_within(self, timeout: float | None) -> tuple[Channel, float | None]:
        """The current connection (waiting for one within `timeout`) and the time left."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        channel = await self.ready(timeout)
        left = None if timeout is None else max(0.0, timeout - (loop.time() - started))
        return channel, left


class _PushQueue:
    """One `pushes` iterator's queue: bounded, so a slow reader holds the connection back."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Message | None] = deque()
        self._limit = limit
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, item: Message) -> None:
        while len(self._items) >= self._limit:
            self._writable.clear()
            await self._writable.wait()
        self._items.append(item)
        self._readable.set()

    def end(self) -> None:
        self._items.append(None)
        self._readable.set()

    async def get(self) -> Message | None:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) < self._limit:
            self._writable.set()
        return item


class _WaitingCall(BidiStreamCall[RequestT, ResponseT]):
    """A stream call that starts once the channel has a connection (within its timeout)."""

    def __init__(
        self,
        channel: ReconnectingChannel,
        timeout: float | None,
        start: Callable[[Channel, float | None], ServerStreamCall[ResponseT]],
    ) -> None:
        self._owner = channel
        self._timeout = timeout
        self._start = start
        self._call: ServerStreamCall[ResponseT] | None = None
        self._starting: asyncio.Task[ServerStreamCall[ResponseT]] | None = None
        self._cancelled = False

    async def _started(self) -> ServerStreamCall[ResponseT]:
        if self._call is not None:
            return self._call
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._begin())
        return await asyncio.shield(self._starting)

    async def _begin(self) -> ServerStreamCall[ResponseT]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        channel = await self._owner.ready(self._timeout)
        if self._cancelled:
            raise RpcError(StatusCode.CANCELLED, "the call was cancelled")
        left = None if self._timeout is None else max(0.0, self._timeout - (loop.time() - started))
        self._call = self._start(channel, left)
        return self._call

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ResponseT]:
        call = await self._started()
        async for response in call:
            yield response

    async def initial_metadata(self) -> Metadata:
        return await (await self._started()).initial_metadata()

    def trailing_metadata(self) -> Metadata:
        return self._call.trailing_metadata() if self._call is not None else Metadata()

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
        elif self._starting is not None:
            self._starting.cancel()

    async def send(self, request: RequestT) -> None:
        call = await self._started()
        if not isinstance(call, BidiStreamCall):
            raise ConfigurationError("send() is for bidirectional calls")
        await call.send(request)

    async def done_writing(self) -> None:
        call = await self._started()
        if not isinstance(call, BidiStreamCall):
            raise ConfigurationError("done_writing() is for bidirectional calls")
        await call.done_writing()


class Reconnecting:
    """What `reconnecting` returns: await it for the channel, or use it with ``async with``."""

    def __init__(self, channel: ReconnectingChannel) -> None:
        self._channel = channel

    def __await__(self) -> Generator[Any, None, ReconnectingChannel]:
        return self._channel.open().__await__()

    async def __aenter__(self) -> ReconnectingChannel:
        return await self._channel.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()


def reconnecting(
    urls: str | Sequence[str],
    *,
    backoff: Backoff | None = None,
    resume: ResumeHook | None = None,
    on_state: Callable[[ChannelState, BaseException | None], None] | None = None,
    open_timeout: float = 10.0,
    shuffle: bool = True,
    **connect_options: Any,
) -> Reconnecting:
    """A `ReconnectingChannel` to any of `urls` (one URL or several; see the module docstring).

    ``channel = await reconnecting(urls, ...)`` or ``async with reconnecting(urls, ...) as
    channel:``. `connect_options` are `flare_runtime.connect`'s (``token=``,
    ``push_tables=``, ``ssl_context=``...), used for every connection.
    """
    return Reconnecting(
        ReconnectingChannel(
            [urls] if isinstance(urls, str) else list(urls),
            backoff=backoff,
            resume=resume,
            on_state=on_state,
            open_timeout=open_timeout,
            shuffle=shuffle,
            **connect_options,
        )
    )
