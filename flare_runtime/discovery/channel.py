"""`BalancingChannel`: one `Channel` over every endpoint of a service.

::

    channel = await flare.connect("etcd://10.0.0.5:2379/examples.chat.v1.ChatService")
    channel = await flare.connect("static:ws://a:8080,ws://b:8080", retry=RetryPolicy(...))
    channel = await flare.connect(Resolver(registry, "examples.chat.v1.ChatService", zone="eu-1a"))

What `flare_runtime.connect` returns for a service address
(`flare_runtime.discovery.resolver`): the same `Channel` API as a channel to
one server, over any transport (each endpoint's URL picks it), spreading
calls over the service's endpoints as the registry lists them, live.

* **Subchannels.** One connection per endpoint, opened when the endpoint
  appears (``connect(url)`` with the options `connect` was given), closed
  when it leaves the set (after its calls in flight end). Calls go only to
  *ready* subchannels: connected, not draining, not ejected.
* **Policies.** ``p2c`` (default): two ready subchannels drawn at random, the
  one with fewer calls outstanding from this client wins (ties: the lower
  registry load). ``round_robin``: each in turn. With a client zone (or
  region), only endpoints of that zone (then region) are chosen while one is
  ready; the others take over when none is.
* **Draining.** A subchannel whose server sent GOAWAY takes no new call; its
  calls in flight finish on it; a new connection is opened beside it (which
  the draining server refuses, so it is ejected until it leaves the set).
* **Health** (`HealthPolicy`). *Passive*: a connection that cannot be
  opened, or `eject_after` consecutive calls failing with UNAVAILABLE, ejects
  the endpoint for a backoff (1 s doubling to 30 s), after which a new
  connection is tried. *Active*: every `interval` seconds a subchannel that
  completed no call since the last check is probed -- gRPC's
  ``grpc.health.v1.Health/Check`` on gRPC, a reflection ``ListServices`` call
  on the Flare wire transports (any answer, even UNIMPLEMENTED, is alive); a
  probe unanswered within `timeout`, or NOT_SERVING, ejects the endpoint and
  closes its connection, failing the calls stuck on it with UNAVAILABLE.
  An endpoint whose URL no transport takes (``gopher://``) is left out, with
  one warning, until the registry lists it with another URL.
* **Retries** (`flare_runtime.discovery.retry`): a call that was not
  processed is sent again to another endpoint; a call that may have run only
  when its route is ``idempotent``, within the retry budget; never past its
  deadline. Server streams are retried the same way, but only before their
  first response; client-streaming and bidi calls only when nothing of them
  was sent. Optional hedging of idempotent unary calls.
* **Streams stay put.** A stream runs on one subchannel to its end. If that
  endpoint dies, the stream fails with UNAVAILABLE (the connection's loss,
  a keepalive timeout, or a failed health probe closes it): it never hangs.

Pushes are per connection, so a balancing channel has none: for a session
that subscribes and receives pushes, use ``flare.reconnecting`` with the
service's server URLs (one server at a time, a ``resume`` hook on each new
connection: the session learns of every endpoint change there).

Client interceptors given to `connect` run once per call on this channel,
around every attempt together; the subchannels have none.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import replace
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from flare_runtime.calls import BidiStreamCall, ServerStreamCall
from flare_runtime.client import Channel, ConnectOptions, connect
from flare_runtime.discovery.address import parse_address
from flare_runtime.discovery.endpoint import Endpoint
from flare_runtime.discovery.health import HealthPolicy, probe
from flare_runtime.discovery.resolver import Resolver
from flare_runtime.discovery.retry import RetryPolicy
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError, describe
from flare_runtime.interceptors import ClientCallInfo
from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.routing import Route
from flare_runtime.status import StatusCode

__all__ = ["BalancingChannel", "SubchannelState", "open_balancing_channel"]

logger = logging.getLogger("flare_runtime.discovery")

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

RETIRE_AFTER = 60.0
"""Seconds a connection that left rotation (draining, endpoint gone) may keep running its
calls before it is closed."""

_OWN_OPTIONS = frozenset({"retry", "health", "zone", "region", "policy", "schemes"})


class SubchannelState(enum.Enum):
    """Where one endpoint's subchannel stands."""

    CONNECTING = "connecting"
    READY = "ready"
    EJECTED = "ejected"
    REMOVED = "removed"


class Subchannel:
    """One endpoint's connection, its calls outstanding and its health (see the module
    docstring). Owned by a `BalancingChannel`."""

    def __init__(self, owner: BalancingChannel, endpoint: Endpoint, url: str) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.url = url
        self.channel: Channel | None = None
        self.state = SubchannelState.CONNECTING
        self.outstanding = 0
        """Calls (and streams) this client has running on it now."""
        self.failures = 0
        """Consecutive calls that failed with UNAVAILABLE."""
        self.ejections = 0
        """Consecutive ejections (the backoff doubles with each)."""
        self.answered = False
        """A call completed on it since the last health check."""
        self.calls = 0
        """Calls started on it (every attempt), for tests and benchmarks."""
        self._lost = asyncio.Event()
        self._ejected_for = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed_by_us: set[int] = set()

    @property
    def removed(self) -> bool:
        """True once the endpoint left the set."""
        return self.state is SubchannelState.REMOVED

    def __repr__(self) -> str:
        return f"<Subchannel {self.url} {self.state.value} outstanding={self.outstanding}>"

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._maintain(), name=f"flare-subchannel {self.url}"
        )

    async def _maintain(self) -> None:
        """Keep one connection open while the endpoint is in the set; eject on failure."""
        owner = self.owner
        while self.state is not SubchannelState.REMOVED:
            if self._ejected_for:
                self._set_state(SubchannelState.EJECTED)
                await asyncio.sleep(self._ejected_for)
                self._ejected_for = 0.0
            self._set_state(SubchannelState.CONNECTING)
            try:
                channel = await connect(self.url, **owner.subchannel_options)
            except ConfigurationError as error:
                # No retry mends this (a scheme no transport takes, options it refuses):
                # out of rotation until the registry lists the endpoint differently.
                logger.warning("endpoint %s is unusable: %s", self.url, describe(error))
                self._set_state(SubchannelState.EJECTED)
                return
            except (ConnectionClosedError, RpcError, OSError) as error:
                logger.info("cannot connect to %s: %s", self.url, describe(error))
                self.eject(f"cannot connect: {describe(error)}")
                continue
            if self.removed:
                await channel.close()
                return
            self.channel = channel
            self.failures = 0
            self._lost.clear()
            self._set_state(SubchannelState.READY)
            await self._lost.wait()

    def _set_state(self, state: SubchannelState) -> None:
        if self.state is state or self.state is SubchannelState.REMOVED:
            return
        self.state = state
        self.owner.subchannel_changed()

    def lost(self, *, close: bool = False) -> None:
        """The connection stopped taking calls: take it out of rotation, connect again.

        Its calls in flight finish on it, unless `close` (a failed health probe):
        then it is closed now and they fail with UNAVAILABLE.
        """
        channel, self.channel = self.channel, None
        if channel is not None:
            self.owner.retire(channel, self, close=close)
        if self.state is SubchannelState.READY:
            self._set_state(SubchannelState.CONNECTING)
        self._lost.set()

    def eject(self, why: str, *, close: bool = False) -> None:
        """Out of rotation for the ejection backoff; then a new connection is tried."""
        policy = self.owner.health
        self._ejected_for = min(policy.max_ejection, policy.ejection * 2**self.ejections)
        self.ejections += 1
        logger.info("ejecting %s for %.1f s: %s", self.url, self._ejected_for, why)
        self.lost(close=close)
        self._set_state(SubchannelState.EJECTED)

    def remove(self) -> None:
        """The endpoint left the set: no new calls; close once its calls end."""
        channel, self.channel = self.channel, None
        self.state = SubchannelState.REMOVED
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
        if channel is not None:
            self.owner.retire(channel, self, close=False)

    # -- calls --------------------------------------------------------------------------

    def usable(self) -> Channel | None:
        """The channel if a call may start on it now, else None (noting why)."""
        channel = self.channel
        if channel is None or self.state is not SubchannelState.READY:
            return None
        if not channel.accepting_calls:
            self.lost()  # GOAWAY, or the connection closed under us
            return None
        return channel

    def succeeded(self) -> None:
        self.failures = 0
        self.ejections = 0
        self.answered = True

    def failed(self, error: RpcError, channel: Channel) -> RpcError:
        """Note a failed call (passive health); return the error the caller should see."""
        if id(channel) in self._closed_by_us and error.code is StatusCode.CANCELLED:
            # We closed the connection (a failed health probe): the call did not fail
            # by the caller's wish, and may have run.
            error = RpcError(StatusCode.UNAVAILABLE, f"{self.url} stopped answering")
        if error.code is not StatusCode.UNAVAILABLE:
            self.answered = True
            return error
        if self.channel is channel and not channel.accepting_calls:
            self.lost()
        elif not error.not_processed:
            self.failures += 1
            if self.failures >= self.owner.health.eject_after and self.channel is channel:
                self.eject(f"{self.failures} calls failed in a row ({error.message})")
        return error

    def closed_by_us(self, channel: Channel) -> None:
        self._closed_by_us.add(id(channel))


class BalancingChannel(Channel):
    """A `Channel` spreading calls over a service's endpoints (see the module docstring).

    Made by `open_balancing_channel` (``flare_runtime.connect`` with a service address).
    """

    def __init__(
        self,
        resolver: Resolver,
        options: ConnectOptions,
        *,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
    ) -> None:
        super().__init__(interceptors=options.interceptors)
        self.resolver = resolver
        self.retry = retry or RetryPolicy()
        self.health = health or HealthPolicy()
        self.subchannel_options: dict[str, Any] = _subchannel_options(options)
        self.subchannels: dict[str, Subchannel] = {}
        """Instance id -> subchannel, for the endpoints in the set now."""
        self._tiers: tuple[list[Subchannel], ...] = ([],)
        self._next = 0
        self._changed: asyncio.Event | None = None
        self._resolved = False
        self._watch_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._retiring: dict[int, tuple[Channel, Subchannel, asyncio.TimerHandle | None]] = {}
        self._closed = False
        self._pick = self._pick_p2c if resolver.policy == "p2c" else self._pick_round_robin

    # -- life ---------------------------------------------------------------------------

    async def start(self, open_timeout: float) -> None:
        """Follow the resolver; return once a subchannel is ready.

        Raises `ConnectionClosedError` when none is within `open_timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._watch_task = loop.create_task(self._follow(), name="flare-balancer-watch")
        if self.health.interval is not None:
            self._health_task = loop.create_task(self._check_health(), name="flare-health")
        try:
            async with asyncio.timeout(open_timeout):
                while not any(self._tiers):
                    await self._wait_change()
        except TimeoutError:
            known = ", ".join(s.url for s in self.subchannels.values()) or "none listed"
            await self.close()
            raise ConnectionClosedError(
                f"no endpoint of {self.resolver.service} could be reached within "
                f"{open_timeout:g} s (endpoints: {known})"
            ) from None

    async def _follow(self) -> None:
        try:
            async for endpoints in self.resolver.watch():
                self._update(endpoints)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("following the endpoints of %s failed", self.resolver.service)

    def _update(self, endpoints: Iterable[Endpoint]) -> None:
        """The registry's new endpoint set: add, update and remove subchannels."""
        wanted: dict[str, tuple[Endpoint, str]] = {}
        for endpoint in endpoints:
            url = endpoint.url_for(self.resolver.schemes)
            if url is not None:
                wanted[endpoint.instance] = (endpoint, url)
        for instance, subchannel in list(self.subchannels.items()):
            entry = wanted.get(instance)
            if entry is None or entry[1] != subchannel.url:
                del self.subchannels[instance]
                subchannel.remove()
        for instance, (endpoint, url) in wanted.items():
            known = self.subchannels.get(instance)
            if known is None:
                added = self.subchannels[instance] = Subchannel(self, endpoint, url)
                added.start()
            else:
                known.endpoint = endpoint
        self._resolved = True
        self.subchannel_changed()

    def subchannel_changed(self) -> None:
        """Recompute who is ready (zone tiers) and wake calls waiting for a subchannel."""
        ready = [s for s in self.subchannels.values() if s.state is SubchannelState.READY]
        zone, region = self.resolver.zone, self.resolver.region
        tiers: list[list[Subchannel]] = []
        if zone:
            tiers.append([s for s in ready if s.endpoint.zone == zone])
        if region:
            tiers.append([s for s in ready if s.endpoint.region == region])
        tiers.append(ready)
        self._tiers = tuple(tiers)
        if self._changed is not None:
            self._changed.set()

    async def _wait_change(self) -> None:
        changed = self._changed
        assert changed is not None, "start() the channel first"
        changed.clear()
        await changed.wait()

    def retire(self, channel: Channel, subchannel: Subchannel, *, close: bool) -> None:
        """Let `channel` finish its calls (at most `RETIRE_AFTER` s), then close it."""
        if close or subchannel.outstanding == 0:
            if close:
                subchannel.closed_by_us(channel)
            asyncio.get_running_loop().create_task(_close_quietly(channel))
            return
        timer = asyncio.get_running_loop().call_later(
            RETIRE_AFTER, self._close_retired, id(channel)
        )
        self._retiring[id(channel)] = (channel, subchannel, timer)

    def _close_retired(self, key: int) -> None:
        entry = self._retiring.pop(key, None)
        if entry is not None:
            channel, _, timer = entry
            if timer is not None:
                timer.cancel()
            asyncio.get_running_loop().create_task(_close_quietly(channel))

    def _call_ended(self, subchannel: Subchannel, channel: Channel) -> None:
        subchannel.outstanding -= 1
        if self._retiring and id(channel) in self._retiring and subchannel.outstanding <= 0:
            self._close_retired(id(channel))

    async def close(self) -> None:
        """Stop following the registry; close every connection (calls running fail CANCELLED)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._watch_task, self._health_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        channels: list[Channel] = []
        for subchannel in self.subchannels.values():
            if subchannel.channel is not None:
                channels.append(subchannel.channel)
            subchannel.channel = None
            subchannel.remove()
        self.subchannels.clear()
        for channel, _, timer in self._retiring.values():
            if timer is not None:
                timer.cancel()
            channels.append(channel)
        self._retiring.clear()
        await asyncio.gather(*(_close_quietly(channel) for channel in channels))
        await self.resolver.close()
        self.subchannel_changed()

    @property
    def accepting_calls(self) -> bool:
        return not self._closed

    # -- picking ------------------------------------------------------------------------

    def _candidates(self, exclude: set[Subchannel] | None) -> list[Subchannel]:
        for tier in self._tiers:
            candidates = [s for s in tier if s not in exclude] if exclude else tier
            if candidates:
                return candidates
        return []

    def _pick_round_robin(self, exclude: set[Subchannel] | None) -> Subchannel | None:
        for _ in range(4):  # a stale subchannel found here is dropped; draw again
            tier = self._candidates(exclude)
            if not tier:
                return None
            self._next += 1
            subchannel = tier[self._next % len(tier)]
            if subchannel.usable() is not None:
                return subchannel
        return None

    def _pick_p2c(self, exclude: set[Subchannel] | None) -> Subchannel | None:
        for _ in range(4):
            tier = self._candidates(exclude)
            if not tier:
                return None
            count = len(tier)
            if count == 1:
                subchannel = tier[0]
            else:
                # Two distinct draws (random.sample costs several times more per call).
                i = int(random.random() * count)
                j = int(random.random() * (count - 1))
                first, second = tier[i], tier[j + 1 if j >= i else j]
                if first.outstanding != second.outstanding:
                    subchannel = first if first.outstanding < second.outstanding else second
                else:
                    subchannel = first if first.endpoint.load <= second.endpoint.load else second
            if subchannel.usable() is not None:
                return subchannel
        return None

    async def _choose(
        self, exclude: set[Subchannel] | None, deadline: float | None
    ) -> tuple[Subchannel, Channel]:
        """A ready subchannel (waiting for one while any is connecting, within `deadline`).

        Raises `RpcError`: UNAVAILABLE (not processed) when none is ready and none
        is connecting, DEADLINE_EXCEEDED when the deadline passes first.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RpcError(StatusCode.CANCELLED, "the channel is closed", not_processed=True)
            subchannel = self._pick(exclude)
            if subchannel is not None:
                channel = subchannel.channel
                assert channel is not None
                return subchannel, channel
            connecting = not self._resolved or any(
                s.state is SubchannelState.CONNECTING and s not in (exclude or ())
                for s in self.subchannels.values()
            )
            if not connecting:
                if exclude:
                    exclude = None  # every other endpoint failed too: any ready one will do
                    continue
                raise RpcError(
                    StatusCode.UNAVAILABLE,
                    f"no endpoint of {self.resolver.service} is available "
                    f"({_describe_states(self.subchannels.values())})",
                    not_processed=True,
                )
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise RpcError(
                    StatusCode.DEADLINE_EXCEEDED,
                    f"no endpoint of {self.resolver.service} became ready within the deadline",
                )
            try:
                async with asyncio.timeout(left):
                    await self._wait_change()
            except TimeoutError:
                pass

    # -- calls --------------------------------------------------------------------------

    def _retry_after(
        self, route: Route[Any, Any], error: RpcError, attempt: int, retries: int
    ) -> float | None:
        """Seconds to wait before sending the call again, or None not to."""
        policy = self.retry
        if attempt >= policy.max_attempts:
            return None
        if error.not_processed:
            return 0.0
        if (
            route.options.idempotent
            and error.code in policy.retryable_codes
            and policy.budget.try_withdraw()
        ):
            return policy.backoff(retries + 1)
        return None

    async def _unary(
        self,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        timeout: float | None,
        info: ClientCallInfo | None,
    ) -> ResponseT:
        if timeout is None:
            timeout = route.options.default_timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self.retry.budget.deposit()
        if self.retry.hedge_delay is not None and route.options.idempotent:
            return await self._hedged(route, request, metadata, deadline, info)
        tried: set[Subchannel] | None = None
        attempt = retries = 0
        while True:
            attempt += 1
            picked = self._pick(tried) if not self._closed else None
            if picked is not None and picked.channel is not None:
                subchannel, channel = picked, picked.channel  # the common case: no waiting
            else:
                subchannel, channel = await self._choose(tried, deadline)
            try:
                return await self._attempt(
                    subchannel, channel, route, request, metadata, deadline, info
                )
            except RpcError as error:
                wait = self._retry_after(route, error, attempt, retries)
                if wait is None:
                    raise
                if not error.not_processed:
                    retries += 1
                if tried is None:
                    tried = set()
                tried.add(subchannel)
                if wait:
                    if deadline is not None and loop.time() + wait >= deadline:
                        raise
                    await asyncio.sleep(wait)

    async def _attempt(  # noqa: PLR0917 -- the call's parts, passed on as they are
        self,
        subchannel: Subchannel,
        channel: Channel,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        deadline: float | None,
        info: ClientCallInfo | None,
    ) -> ResponseT:
        left = None
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise RpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        subchannel.outstanding += 1
        subchannel.calls += 1
        try:
            # The subchannel's transport hook: this channel already ran the interceptors.
            response = await channel._unary(route, request, metadata, left, info)
        except RpcError as error:
            raise subchannel.failed(error, channel) from None
        except ConnectionClosedError as error:  # a channel closed under the call's start
            subchannel.lost()
            raise RpcError(StatusCode.UNAVAILABLE, describe(error), not_processed=True) from None
        finally:
            self._call_ended(subchannel, channel)
        subchannel.succeeded()
        return response

    async def _hedged(
        self,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        deadline: float | None,
        info: ClientCallInfo | None,
    ) -> ResponseT:
        """An idempotent unary call, sent again elsewhere if the first is slow to answer."""
        hedge_delay = self.retry.hedge_delay
        assert hedge_delay is not None
        loop = asyncio.get_running_loop()
        first, first_channel = await self._choose(None, deadline)
        attempts = {
            loop.create_task(
                self._attempt(first, first_channel, route, request, metadata, deadline, info)
            )
        }
        hedged = False
        last_error: BaseException | None = None
        try:
            while attempts:
                wait = None if hedged else hedge_delay
                done, attempts = await asyncio.wait(
                    attempts, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    last_error = task.exception()
                if not hedged and (done or self.retry.budget.try_withdraw()):
                    hedged = True
                    if done and not attempts:
                        assert isinstance(last_error, RpcError)
                        if self._retry_after(route, last_error, 1, 0) is None:
                            break
                    try:
                        second, channel = await self._choose({first}, deadline)
                    except RpcError as error:
                        last_error = last_error or error
                        continue
                    attempts.add(
                        loop.create_task(
                            self._attempt(second, channel, route, request, metadata, deadline, None)
                        )
                    )
        finally:
            for task in attempts:
                task.cancel()
        assert last_error is not None
        raise last_error

    async def _client_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any], info: ClientCallInfo
    ) -> Message:
        loop = asyncio.get_running_loop()
        timeout = info.timeout if info.timeout is not None else info.route.options.default_timeout
        deadline = None if timeout is None else loop.time() + timeout
        counted = _Counted(requests)
        tried: set[Subchannel] | None = None
        attempt = 0
        while True:
            attempt += 1
            subchannel, channel = await self._choose(tried, deadline)
            left = None if deadline is None else max(0.0, deadline - loop.time())
            subchannel.outstanding += 1
            subchannel.calls += 1
            try:
                info.timeout = left
                response = await channel._client_stream(counted, info)
            except RpcError as error:
                error = subchannel.failed(error, channel)
                # Sent again only when nothing of it left: its requests are consumed.
                if not (error.not_processed and counted.taken == 0) or (
                    attempt >= self.retry.max_attempts
                ):
                    raise error from None
                tried = (tried or set()) | {subchannel}
                continue
            finally:
                self._call_ended(subchannel, channel)
            subchannel.succeeded()
            return response

    def _open_server_stream(self, request: Message, info: ClientCallInfo) -> ServerStreamCall[Any]:
        return _BalancedStream(self, info, lambda ch, i: ch._open_server_stream(request, i), True)

    def _open_bidi_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any] | None, info: ClientCallInfo
    ) -> BidiStreamCall[Any, Any]:
        return _BalancedStream(
            self,
            info,
            lambda ch, i: ch._open_bidi_stream(requests, i),
            False,
        )

    # -- health -------------------------------------------------------------------------

    async def _check_health(self) -> None:
        interval = self.health.interval
        assert interval is not None
        while True:
            await asyncio.sleep(interval)
            checks = []
            for subchannel in list(self.subchannels.values()):
                if subchannel.state is not SubchannelState.READY:
                    continue
                if subchannel.answered:
                    subchannel.answered = False
                    continue
                checks.append(self._probe(subchannel))
            if checks:
                await asyncio.gather(*checks)

    async def _probe(self, subchannel: Subchannel) -> None:
        channel = subchannel.channel
        if channel is None:
            return
        verdict = await probe(channel, subchannel.url, self.health.timeout)
        if verdict is None or subchannel.channel is not channel:
            return
        subchannel.eject(f"health check: {verdict}", close=True)

    # -- pushes -------------------------------------------------------------------------

    def pushes(self) -> AsyncIterator[Message]:
        raise ConfigurationError(
            "a balancing channel has no pushes (they belong to one connection): use "
            "flare.reconnecting([url, ...]) with the service's server URLs for a session "
            "that receives pushes"
        )

    def on_push(self, callback: Callable[[Message], None]) -> None:
        self.pushes()


class _Counted:
    """A request iterable that counts the requests taken from it."""

    def __init__(self, requests: AsyncIterable[Any] | Iterable[Any]) -> None:
        self._requests = requests
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[Any]:
        if isinstance(self._requests, AsyncIterable):
            async for request in self._requests:
                self.taken += 1
                yield request
        else:
            for request in self._requests:
                self.taken += 1
                yield request


class _BalancedStream(BidiStreamCall[RequestT, ResponseT], Generic[RequestT, ResponseT]):
    """A stream call on one subchannel, chosen (and re-chosen before its first response,
    where allowed) when it is first used."""

    def __init__(
        self,
        owner: BalancingChannel,
        info: ClientCallInfo,
        open_call: Callable[[Channel, ClientCallInfo], ServerStreamCall[ResponseT]],
        retry_before_first: bool,
    ) -> None:
        self._owner = owner
        self._info = info
        self._open_call = open_call
        self._retry_before_first = retry_before_first
        loop = asyncio.get_running_loop()
        timeout = info.timeout if info.timeout is not None else info.route.options.default_timeout
        self._deadline = None if timeout is None else loop.time() + timeout
        self._call: ServerStreamCall[ResponseT] | None = None
        self._subchannel: Subchannel | None = None
        self._channel: Channel | None = None
        self._starting: asyncio.Task[ServerStreamCall[ResponseT]] | None = None
        self._received = 0
        self._sent = 0
        self._attempt = 0
        self._tried: set[Subchannel] = set()
        self._cancelled = False
        self._ended = False

    async def _started(self) -> ServerStreamCall[ResponseT]:
        if self._call is not None:
            return self._call
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._starting)

    async def _open(self) -> ServerStreamCall[ResponseT]:
        owner = self._owner
        loop = asyncio.get_running_loop()
        while True:
            self._attempt += 1
            subchannel, channel = await owner._choose(self._tried or None, self._deadline)
            if self._cancelled:
                raise RpcError(StatusCode.CANCELLED, "the call was cancelled")
            left = None if self._deadline is None else max(0.0, self._deadline - loop.time())
            subchannel.outstanding += 1
            subchannel.calls += 1
            try:
                self._info.timeout = left
                call = self._open_call(channel, self._info)
            except RpcError as error:
                owner._call_ended(subchannel, channel)
                error = subchannel.failed(error, channel)
                if not error.not_processed or self._attempt >= owner.retry.max_attempts:
                    raise error from None
                self._tried.add(subchannel)
                continue
            self._call, self._subchannel, self._channel = call, subchannel, channel
            return call

    def _finish(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._subchannel is not None and self._channel is not None:
            self._owner._call_ended(self._subchannel, self._channel)

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ResponseT]:
        owner = self._owner
        retries = 0
        while True:
            call = await self._started()
            try:
                async for response in call:
                    self._received += 1
                    yield response
            except RpcError as error:
                subchannel, channel = self._subchannel, self._channel
                assert subchannel is not None and channel is not None
                error = subchannel.failed(error, channel)
                self._finish()
                wait = None
                if self._retry_before_first and self._received == 0 and not self._cancelled:
                    wait = owner._retry_after(self._info.route, error, self._attempt, retries)
                if wait is None:
                    raise error from None
                if not error.not_processed:
                    retries += 1
                loop = asyncio.get_running_loop()
                if self._deadline is not None and loop.time() + wait >= self._deadline:
                    raise error from None
                await asyncio.sleep(wait)
                self._tried.add(subchannel)
                self._call = self._starting = None
                self._ended = False
                continue
            except BaseException:
                self._finish()
                raise
            if self._subchannel is not None:
                self._subchannel.succeeded()
            self._finish()
            return

    async def initial_metadata(self) -> Metadata:
        return await (await self._started()).initial_metadata()

    def trailing_metadata(self) -> Metadata:
        return self._call.trailing_metadata() if self._call is not None else Metadata()

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
            self._finish()
        elif self._starting is not None:
            self._starting.cancel()

    async def send(self, request: RequestT) -> None:
        call = await self._started()
        if not isinstance(call, BidiStreamCall):
            raise ConfigurationError("send() is for bidirectional calls")
        self._sent += 1
        await call.send(request)

    async def done_writing(self) -> None:
        call = await self._started()
        if not isinstance(call, BidiStreamCall):
            raise ConfigurationError("done_writing() is for bidirectional calls")
        await call.done_writing()


async def _close_quietly(channel: Channel) -> None:
    with contextlib.suppress(Exception):
        await channel.close()


def _describe_states(subchannels: Iterable[Subchannel]) -> str:
    states = [f"{s.url} {s.state.value}" for s in subchannels]
    return ", ".join(states) if states else "none listed"


def _subchannel_options(options: ConnectOptions) -> dict[str, Any]:
    """`connect` keywords for each subchannel: the balancing channel's, less its interceptors
    (they run once, on the balancing channel) and its own options."""
    extra = {k: v for k, v in options.extra.items() if k not in _OWN_OPTIONS}
    keywords: dict[str, Any] = {
        "token": options.token,
        "metadata": options.metadata,
        "push_tables": options.push_tables,
        "ssl_context": options.ssl_context,
        "open_timeout": options.open_timeout,
        "max_pending_pushes": options.max_pending_pushes,
        "compression": options.compression,
        **extra,
    }
    if options.protocol is not None:
        keywords["protocol"] = options.protocol
    return keywords


async def open_balancing_channel(address: str | Resolver, options: ConnectOptions) -> Channel:
    """What `flare_runtime.connect` calls for a service address (see the module docstring).

    Options of its own, given to `connect` as keywords: ``retry=`` (`RetryPolicy`),
    ``health=`` (`HealthPolicy`), and -- overriding the address's query --
    ``zone=``, ``region=``, ``policy=``, ``schemes=``. Raises
    `ConnectionClosedError` when no endpoint is ready within ``open_timeout``.
    """
    resolver = parse_address(address) if isinstance(address, str) else address
    extra = options.extra
    overrides = {key: extra[key] for key in ("zone", "region", "policy") if key in extra}
    if "schemes" in extra:
        overrides["schemes"] = tuple(extra["schemes"])
    if overrides:
        resolver = replace(resolver, **overrides)
    retry = extra.get("retry")
    health = extra.get("health")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError("retry= takes a flare_runtime.discovery.RetryPolicy")
    if health is not None and not isinstance(health, HealthPolicy):
        raise ConfigurationError("health= takes a flare_runtime.discovery.HealthPolicy")
    channel = BalancingChannel(resolver, options, retry=retry, health=health)
    await channel.start(options.open_timeout)
    return channel
