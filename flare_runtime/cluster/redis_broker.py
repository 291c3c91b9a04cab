"""`RedisBroker`: the cluster's bus on Redis pub/sub (redis-py's asyncio client).

::

    node = ClusterNode(RedisBroker("redis://10.0.0.5:6379/0"))

Needs ``pip install 'flare-rpc[redis]'`` (redis-py, and hiredis, its C
reply parser, which halves the CPU per delivery). Why pub/sub (not streams, not
sharded pub/sub): docs/cluster.md, "The Redis mechanism".

Each node holds two connections to Redis: one in subscribed mode that
receives the node's channels (SUBSCRIBE/UNSUBSCRIBE as its interest changes),
one that publishes. Publishes are queued without blocking and written in
pipelined batches, in call order, so one node's messages to a channel reach
every subscriber in publish order. Redis routes each message only to the
connections subscribed to its channel: interest routing is done by Redis.

Failures. Either connection failing (an error, Redis gone, a silent Redis
found by the PING watchdog, or a publish backlog over
`max_publish_backlog` bytes, which means Redis does not keep up) takes the
whole link down: the node is told (`link_lost`), every queued or
unacknowledged publish is reported lost (`publishes_lost`) and dropped, and
publishes are refused until the link is back. The broker reconnects with
exponential backoff and jitter, resubscribes every wanted channel, and
reports `link_restored` once Redis has confirmed them all. Nothing is
replayed: live delivery is at most once, recovery belongs to the application
(e.g. the IM's ``Sync``).

redis-py is used at the connection level (``Connection``: connect, RESP
packing and parsing, AUTH, TLS, SELECT), with its own retries off, so that
this module alone decides when the link is down and what was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from flare_runtime.cluster.broker import Broker, BrokerListener, LinkState

logger = logging.getLogger("flare_runtime.cluster.redis")

_SUBSCRIBE_CHUNK = 1000
"""Channels per SUBSCRIBE command when resubscribing after a reconnect."""


class _Connection(Protocol):
    """The part of ``redis.asyncio.Connection`` this module uses."""

    async def connect(self) -> None: ...

    async def disconnect(self, nowait: bool = False) -> None: ...

    def pack_command(self, *args: bytes | str) -> list[bytes]: ...

    def pack_commands(self, commands: Iterable[Iterable[bytes | str]]) -> list[bytes]: ...

    async def send_packed_command(
        self, command: Iterable[bytes], check_health: bool = True
    ) -> None: ...

    async def read_response(
        self, disable_decoding: bool = False, timeout: float | None = None
    ) -> Any: ...


class _LinkDownError(Exception):
    """Ends the current link (the reason is the message)."""


class RedisBroker(Broker):
    """One node's link to Redis. See the module docstring."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        reconnect_delay: float = 0.05,
        max_reconnect_delay: float = 5.0,
        ping_interval: float = 5.0,
        connect_timeout: float = 5.0,
        max_publish_backlog: int = 16 * 1024 * 1024,
        client_name: str | None = None,
    ) -> None:
        """`url`: ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS).

        `reconnect_delay` doubles after each failed attempt up to
        `max_reconnect_delay` (with ±25 % jitter). A subscriber connection
        that carries nothing for `ping_interval` seconds is PINGed, and the
        link is declared down when nothing came back one interval later (so
        within 2-3 intervals); likewise when PUBLISH replies stop for two.
        `max_publish_backlog` bounds the bytes queued and not yet written.
        `client_name` names both connections in Redis's ``CLIENT LIST``.
        """
        self.url = url
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.ping_interval = ping_interval
        self.max_publish_backlog = max_publish_backlog
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name=client_name,
            # RESP2: in subscribed mode every message is a reply this module
            # reads itself (under RESP3, redis-py 8 routes them to its own
            # push handlers).
            protocol=2,
        )
        # redis-py leaves make_connection unannotated; _Connection says what is used.
        self._make_connection = cast(Callable[[], _Connection], self._pool.make_connection)
        self._listener: BrokerListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = LinkState.DOWN
        self._closed = False
        # Interest: what the node wants, and what this link has told Redis.
        self._wanted: set[bytes] = set()
        self._dirty: set[bytes] = set()
        self._sent: dict[bytes, bool] = {}
        """Channel -> whether the last command sent for it on this link was SUBSCRIBE."""
        self._in_flight: dict[bytes, int] = {}
        """Channel -> (UN)SUBSCRIBE commands sent and not yet confirmed."""
        self._active: set[bytes] = set()
        """Channels Redis confirmed subscribed, with no command in flight."""
        self._restoring: set[bytes] | None = None
        """Channels to confirm before the link counts as restored."""
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._control = asyncio.Event()
        self._ping_requested = False
        # Publishing.
        self._queue: list[tuple[bytes, bytes, bytes]] = []
        """PUBLISH commands not yet written: (b"PUBLISH", channel, data)."""
        self._queued_bytes = 0
        self._in_flight_publishes: list[tuple[bytes, bytes, bytes]] = []
        # Progress counters the watchdog reads (cheaper than a timeout per read).
        self._subscriber_reads = 0
        self._publisher_reads = 0
        self._awaiting_replies = False
        self._publish_wakeup = asyncio.Event()
        self._abort: asyncio.Future[str] | None = None
        """Set with a reason to take the current link down."""
        self.connect_timeout = connect_timeout

    # -- Broker ------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    async def start(self, listener: BrokerListener) -> None:
        if self._task is not None:
            raise RuntimeError("RedisBroker.start called twice")
        self._listener = listener
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"flare-cluster-redis {self.url}"
        )

    def subscribe(self, channel: bytes) -> None:
        self._wanted.add(channel)
        self._dirty.add(channel)
        self._control.set()

    def unsubscribe(self, channel: bytes) -> None:
        self._wanted.discard(channel)
        self._dirty.add(channel)
        self._control.set()
        if self._restoring is not None:
            self._restoring.discard(channel)
            asyncio.get_running_loop().call_soon(self._check_restored)
        self._wake(channel)

    async def wait_subscribed(self, channel: bytes) -> None:
        if channel in self._active or channel not in self._wanted or self._closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        await waiter

    def publish(self, channel: bytes, data: bytes) -> bool:
        if self._state is not LinkState.UP:
            return False
        size = len(data)
        if self._queued_bytes + size > self.max_publish_backlog:
            abort = self._abort
            if abort is not None and not abort.done():
                abort.set_result(
                    f"publish backlog over {self.max_publish_backlog} bytes: Redis does not keep up"
                )
            return False
        self._queue.append((b"PUBLISH", channel, data))
        self._queued_bytes += size
        self._publish_wakeup.set()
        return True

    async def close(self) -> None:
        """Hand what is queued to Redis (for up to `connect_timeout` s), then close the link."""
        if self._state is LinkState.UP:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    while self._queue or self._awaiting_replies:
                        await asyncio.sleep(0.005)
        self._closed = True
        self._listener = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._state = LinkState.DOWN
        for channel in list(self._waiters):
            self._wake(channel)
        await self._pool.disconnect()

    @property
    def active_channels(self) -> frozenset[bytes]:
        """Channels Redis has confirmed subscribed on the current link."""
        return frozenset(self._active)

    # -- the link ----------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.reconnect_delay
        failures = 0
        while not self._closed:
            subscriber = self._make_connection()
            publisher = self._make_connection()
            reason = ""
            try:
                async with asyncio.timeout(self.connect_timeout):  # a stalled handshake too
                    await subscriber.connect()
                    await publisher.connect()
                failures = 0
                delay = self.reconnect_delay
                await self._serve(subscriber, publisher)
            except asyncio.CancelledError:
                raise
            except _LinkDownError as error:
                reason = str(error)
            except (RedisError, OSError) as error:  # TimeoutError is an OSError
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            except Exception as error:  # a bug must not end the link for good
                logger.exception("cluster redis link failed")
                reason = f"{type(error).__name__}: {error}"
            finally:
                for connection in (subscriber, publisher):
                    with contextlib.suppress(Exception):
                        await connection.disconnect(nowait=True)
            self._link_down(reason)
            failures += 1
            if failures & (failures - 1) == 0:  # attempts 1, 2, 4, 8...: no log flood
                logger.warning(
                    "cluster redis %s: link down (%s); reconnecting (attempt %d)",
                    self.url,
                    reason,
                    failures,
                )
            await asyncio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _serve(self, subscriber: _Connection, publisher: _Connection) -> None:
        """Run the link until one of its loops fails; raises why."""
        self._sent.clear()
        self._in_flight.clear()
        self._active.clear()
        self._dirty = set(self._wanted)
        self._restoring = set(self._wanted)
        self._ping_requested = False
        self._abort = asyncio.get_running_loop().create_future()
        self._control.set()
        self._check_restored()
        # Not a TaskGroup: on 3.11 one whose child failed can swallow a
        # cancellation of this task, which would then never end.
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._read(subscriber)),
            loop.create_task(self._control_loop(subscriber)),
            loop.create_task(self._publish_loop(publisher)),
            loop.create_task(self._until_aborted(self._abort)),
            loop.create_task(self._watchdog()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._abort = None
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise cast(BaseException, task.exception())
        raise _LinkDownError("link loop ended")

    @staticmethod
    async def _until_aborted(abort: asyncio.Future[str]) -> None:
        raise _LinkDownError(await abort)

    def _link_down(self, reason: str) -> None:
        was_up = self._state is LinkState.UP
        self._state = LinkState.DOWN
        self._restoring = None
        self._active.clear()
        lost = {command[1] for command in self._in_flight_publishes}
        lost.update(command[1] for command in self._queue)
        self._in_flight_publishes = []
        self._queue = []
        self._queued_bytes = 0
        listener = self._listener
        if listener is None or self._closed:
            return
        if was_up:
            listener.link_lost(reason)
        if lost:
            listener.publishes_lost(lost)

    def _check_restored(self) -> None:
        if self._restoring is None or self._restoring:
            return
        self._restoring = None
        self._state = LinkState.UP
        if self._listener is not None and not self._closed:
            self._listener.link_restored()

    # -- subscriber connection ---------------------------------------------------

    async def _read(self, connection: _Connection) -> None:
        listener = self._listener
        while True:
            response = await connection.read_response()
            self._subscriber_reads += 1
            kind = response[0]
            if kind == b"message":
                if listener is not None:
                    listener.message_received(response[1], response[2])
            elif kind in {b"subscribe", b"unsubscribe"}:
                self._confirmed(response[1])

    async def _watchdog(self) -> None:
        """Find a Redis that stopped answering (a half-open link) from the progress counters.

        Every `ping_interval`: a subscriber connection that received nothing
        gets a PING, and if it still received nothing one interval later the
        link is down; a publisher connection whose replies are due and made no
        progress for two intervals is down too.
        """
        subscriber_reads = self._subscriber_reads
        publisher_reads = self._publisher_reads
        ping_pending = False
        stalled = 0
        while True:
            await asyncio.sleep(self.ping_interval)
            if self._subscriber_reads != subscriber_reads:
                subscriber_reads = self._subscriber_reads
                ping_pending = False
            elif ping_pending:
                raise _LinkDownError(f"no answer to PING within {self.ping_interval} s")
            else:
                ping_pending = True
                self._ping_requested = True
                self._control.set()
            if self._awaiting_replies and self._publisher_reads == publisher_reads:
                stalled += 1
                if stalled >= 2:
                    raise _LinkDownError(f"no reply to PUBLISH within {2 * self.ping_interval} s")
            else:
                stalled = 0
            publisher_reads = self._publisher_reads

    def _confirmed(self, channel: bytes) -> None:
        """Redis confirmed one (UN)SUBSCRIBE of `channel` (they come back in order)."""
        left = self._in_flight.get(channel, 0) - 1
        if left > 0:
            self._in_flight[channel] = left
            return
        self._in_flight.pop(channel, None)
        if self._sent.get(channel):
            self._active.add(channel)
            if self._restoring is not None:
                self._restoring.discard(channel)
                self._check_restored()
            self._wake(channel)
        else:
            self._sent.pop(channel, None)
            self._active.discard(channel)

    def _wake(self, channel: bytes) -> None:
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def _control_loop(self, connection: _Connection) -> None:
        """Send (UN)SUBSCRIBE for every channel whose wanted state changed, and PINGs."""
        while True:
            await self._control.wait()
            self._control.clear()
            subscribe: list[bytes] = []
            unsubscribe: list[bytes] = []
            dirty, self._dirty = self._dirty, set()
            for channel in dirty:
                wanted = channel in self._wanted
                if wanted == self._sent.get(channel, False):
                    continue
                (subscribe if wanted else unsubscribe).append(channel)
                self._sent[channel] = wanted
                self._in_flight[channel] = self._in_flight.get(channel, 0) + 1
                self._active.discard(channel)
            commands: list[list[bytes | str]] = []
            for start in range(0, len(unsubscribe), _SUBSCRIBE_CHUNK):
                commands.append(["UNSUBSCRIBE", *unsubscribe[start : start + _SUBSCRIBE_CHUNK]])
            for start in range(0, len(subscribe), _SUBSCRIBE_CHUNK):
                commands.append(["SUBSCRIBE", *subscribe[start : start + _SUBSCRIBE_CHUNK]])
            if self._ping_requested:
                self._ping_requested = False
                commands.append(["PING"])
            if commands:
                await connection.send_packed_command(
                    connection.pack_commands(commands), check_health=False
                )

    # -- publisher connection ----------------------------------------------------

    async def _publish_loop(self, connection: _Connection) -> None:
        """Write queued publishes in batches, in order; one batch's replies before the next."""
        while True:
            if not self._queue:
                self._publish_wakeup.clear()
                await self._publish_wakeup.wait()
            batch = self._in_flight_publishes = self._queue
            self._queue = []
            self._queued_bytes = 0
            self._awaiting_replies = True
            await connection.send_packed_command(
                connection.pack_commands(batch), check_health=False
            )
            for _ in batch:
                await connection.read_response()
                self._publisher_reads += 1
            self._awaiting_replies = False
            self._in_flight_publishes = []

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, {self._state.value}, {len(self._wanted)} channels)"
