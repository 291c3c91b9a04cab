"""`ClusterNode`: publish to a topic, a user or one connection anywhere in the cluster.

::

    node = ClusterNode(RedisBroker("redis://10.0.0.5:6379"))   # or ClusterNode(): one process
    await node.start()

    node.join(connection, "scores:match-42")           # a connection's interest in a topic
    node.bind_user(connection, "alice")                # ... and in its user's events
    node.subscribe("room:7", on_event, on_missed=resync)   # an in-process subscriber

    push = PreparedPush(SCORE_CHANGED, score.SerializeToString())
    node.publish("scores:match-42", push)              # every subscriber, every node
    node.publish_to_user("alice", push)                # every connection bound to alice
    node.publish_to_connection(address, push)          # one connection, on whatever node

A *node* is one process of the cluster (one worker); it has a unique
`node_id`, and its connections are addressable cluster-wide by a
`ConnectionAddress` (node id + connection id).

**Interest routing.** A node subscribes to a topic's channel at the broker
only while at least one local subscriber (a connection, or an in-process
callback) needs it, and unsubscribes when the last one leaves, so a node
receives only what its own subscribers need. A connection leaves all its
topics when it closes. A user's channel is subscribed while one of the node's
connections is bound to that user.

**Encode once.** `publish` takes a `PreparedPush` (the payload serialized
once). The publishing node hands that same object to its local subscribers
directly (no round trip through the broker, which never returns it twice)
and publishes one envelope to the broker; each receiving node decodes it
once into one `PreparedPush` whose PUSH frame is built once for all its
local connections (`ServerConnection.push_prepared`).

**Delivery** is live and at most once. Events one node publishes to one topic
reach each subscriber in publish order; events of different publishers are
not ordered relative to each other. Whatever may have been lost is reported,
never silently dropped: after the broker link is restored (every subscriber
is told, since the node received nothing meanwhile), when a publishing node
says it dropped events of a channel (its subscribers are told), and when
another node falls silent without saying goodbye (it may have died with
events never published: every subscriber is told). An in-process subscriber
learns of it through its ``on_missed`` callback; a connection through the
node's ``on_connection_missed`` hook (by default the connection is closed
with a reason, so its client reconnects and resynchronizes). A gap report may
be spurious; it is never missing.

**Membership.** Nodes tell each other they are alive every
`heartbeat_interval` on the cluster's control channel; `members()` lists the
others, `add_member_listener` reports joins, leaves (`close`) and timeouts.

**Slow consumers.** A connection holding more than `max_connection_backlog`
bytes of unread output is closed as a slow consumer instead of growing the
server's memory (it recovers by reconnecting). In-process subscribers
apply their own policy.

Subscriber callbacks run synchronously on the event loop, inside `publish`
for local events: they must not block; they may publish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from flare_runtime.cluster import envelope
from flare_runtime.cluster.broker import Broker, LinkState
from flare_runtime.cluster.envelope import Kind, MalformedEnvelopeError
from flare_runtime.cluster.memory import MemoryBroker
from flare_runtime.errors import ConnectionClosedError, FlareError
from flare_runtime.server_connection import PreparedPush, ServerConnection
from flare_runtime.sharing import sharing_problems

logger = logging.getLogger("flare_runtime.cluster")

MAX_LOST_CHANNELS: Final = 10_000
"""Channels a node remembers having dropped events of; beyond, it reports a loss of all."""

_NODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,255}")


def default_node_id() -> str:
    """``host-pid-random``: unique across hosts, processes and restarts."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:200] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class ConnectionAddress:
    """A connection anywhere in the cluster; ``str(address)`` is ``node_id/connection_id``."""

    node_id: str
    connection_id: int

    def __post_init__(self) -> None:
        if not _NODE_ID.fullmatch(self.node_id) or self.connection_id < 0:
            raise ValueError(f"not a connection address: {self.node_id!r}/{self.connection_id}")

    def __str__(self) -> str:
        return f"{self.node_id}/{self.connection_id}"

    @classmethod
    def parse(cls, text: str) -> ConnectionAddress:
        """The address ``str(address)`` wrote; ValueError on anything else."""
        node_id, slash, number = text.rpartition("/")
        if not slash or not _NODE_ID.fullmatch(node_id) or not number.isdigit():
            raise ValueError(f"not a connection address: {text!r}")
        return cls(node_id, int(number))


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The node's link to the broker went down or came back (`ClusterNode.add_link_listener`).

    ``missed`` is True when events may have been lost: from the moment the link
    went down (DOWN) until it was restored (UP after an outage). Every
    subscriber was told through its own ``on_missed`` as well.
    """

    state: LinkState
    missed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """Another node appeared or went away (`ClusterNode.add_member_listener`).

    ``reason`` is "joined", "left" (it closed; nothing it published is
    missing) or "timed out" (no heartbeat for `ClusterNode.node_timeout`: it
    died or was cut off, and every subscriber was told it may have missed
    events).
    """

    node_id: str
    joined: bool
    reason: str = "joined"


class ClusterEvent:
    """An event as a local subscriber receives it."""

    __slots__ = ("_origin", "push", "topic", "user_id")

    def __init__(
        self, topic: str | None, user_id: str | None, push: PreparedPush, origin: bytes
    ) -> None:
        self.topic = topic
        """The topic it was published to (None for a user's event)."""
        self.user_id = user_id
        """The user it was published to (None for a topic's event)."""
        self.push = push
        """Its push type id and payload; the PUSH frame is built once for all recipients."""
        self._origin = origin

    @property
    def origin_node(self) -> str:
        """The id of the node that published it."""
        return self._origin.decode("ascii")

    def __repr__(self) -> str:
        target = f"topic={self.topic!r}" if self.topic is not None else f"user={self.user_id!r}"
        return f"ClusterEvent({target}, {self.push!r}, origin={self.origin_node!r})"


_Change = TypeVar("_Change", "LinkChanged", "MemberChanged")

EventCallback = Callable[[ClusterEvent], None]
MissedCallback = Callable[["Subscription"], None]


def _connection_subscription_callback(_: object) -> None:
    """Stands in for the callbacks of a connection's subscription (the node pushes instead)."""


class Subscription:
    """One local subscriber's interest in a topic or a user's events.

    Made by `ClusterNode.subscribe` / `subscribe_user` (an in-process callback)
    or `join` / `bind_user` (a connection). `close` ends it.
    """

    __slots__ = ("_interest", "_node", "closed", "connection", "on_event", "on_missed")

    def __init__(
        self,
        node: ClusterNode,
        interest: _Interest,
        on_event: EventCallback,
        on_missed: MissedCallback,
        connection: ServerConnection | None,
    ) -> None:
        self._node = node
        self._interest = interest
        self.on_event = on_event
        self.on_missed = on_missed
        self.connection = connection
        """The subscribed connection (None for an in-process subscriber)."""
        self.closed = False

    @property
    def topic(self) -> str | None:
        """The topic (None for a user's events)."""
        return self._interest.topic

    @property
    def user_id(self) -> str | None:
        """The user (None for a topic)."""
        return self._interest.user_id

    async def ready(self) -> None:
        """Return once the broker delivers this topic's events to the node.

        Events published before then may not arrive: subscribe, await
        `ready`, then read the current state (e.g. `Sync`), and nothing is
        missed in between. Returns at once when the subscription is closed.
        """
        if not self.closed:
            await self._node._broker.wait_subscribed(self._interest.channel)

    def close(self) -> None:
        """Stop receiving; the node unsubscribes at the broker when it was the last. Idempotent."""
        self._node._remove(self)

    def __repr__(self) -> str:
        target = f"topic={self.topic!r}" if self.topic is not None else f"user={self.user_id!r}"
        who = "connection" if self.connection is not None else "callback"
        return f"Subscription({target}, {who}{', closed' if self.closed else ''})"


class _Interest:
    """The local subscribers of one channel; exists while it has at least one."""

    __slots__ = ("_snapshot", "channel", "subscribers", "topic", "user_id")

    def __init__(self, channel: bytes, topic: str | None, user_id: str | None) -> None:
        self.channel = channel
        self.topic = topic
        self.user_id = user_id
        self.subscribers: dict[Subscription, None] = {}
        self._snapshot: tuple[Subscription, ...] | None = None

    def snapshot(self) -> tuple[Subscription, ...]:
        """The subscribers now (one added during a fan-out counts from the next)."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(self.subscribers)
        return snapshot

    def add(self, subscription: Subscription) -> None:
        self.subscribers[subscription] = None
        self._snapshot = None

    def discard(self, subscription: Subscription) -> None:
        self.subscribers.pop(subscription, None)
        self._snapshot = None


class _Local:
    """What the node tracks of one of its connections."""

    __slots__ = ("address", "connection", "subscriptions", "user")

    def __init__(self, connection: ServerConnection, address: ConnectionAddress) -> None:
        self.connection = connection
        self.address = address
        self.subscriptions: dict[bytes, Subscription] = {}
        """Channel -> the connection's subscription to it."""
        self.user: Subscription | None = None


@dataclass(slots=True)
class ChannelCount:
    """Messages and bytes a node received from the broker on one channel."""

    messages: int = 0
    bytes: int = 0


@dataclass(slots=True)
class ClusterStats:
    """What one node's broker link carried, for tests, metrics and benchmarks."""

    received_messages: int = 0
    """Every message the broker handed this node (echoes and notices included)."""
    received_bytes: int = 0
    echoes: int = 0
    """This node's own publishes handed back by the broker (dropped)."""
    unrouted: int = 0
    """Events that arrived after their channel's last local subscriber left (dropped)."""
    malformed: int = 0
    """Messages on the cluster's channels that are not envelopes (dropped)."""
    published: int = 0
    """Envelopes handed to the broker."""
    published_bytes: int = 0
    publish_dropped: int = 0
    """Envelopes the broker dropped (link down); each was reported to its channel's nodes."""
    delivered: int = 0
    """Events handed to local subscribers (one per subscriber)."""
    prepared_pushes: int = 0
    """`PreparedPush` objects built for events from the broker: one per event per node."""
    slow_consumers: int = 0
    """Connections closed for holding more than `max_connection_backlog` unread bytes."""
    gaps: int = 0
    """``on_missed`` calls and ``on_connection_missed`` hooks run."""
    broker_subscribes: int = 0
    broker_unsubscribes: int = 0
    by_channel: dict[bytes, ChannelCount] = field(default_factory=dict)
    """Per channel, when the node counts them (``ClusterNode(count_channels=True)``)."""


class ClusterNode:
    """This process's place in the cluster: local subscribers, publishing, the broker link.

    `start` before use, `close` at the end. Every method runs on the event
    loop that called `start`.
    """

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        node_id: str | None = None,
        namespace: str = "flare",
        max_connection_backlog: int = 4 * 1024 * 1024,
        abort_after: float = 1.0,
        on_connection_missed: Callable[[ServerConnection], None] | None = None,
        count_channels: bool = False,
        heartbeat_interval: float = 1.0,
        node_timeout: float = 5.0,
    ) -> None:
        """`broker`: the bus (default: a private in-process `MemoryBroker`).

        `namespace` prefixes every channel, so clusters can share a Redis.
        `on_connection_missed(connection)` runs when a connection may have
        missed events (default: close it with a reason that says so).
        `abort_after`: seconds a connection closed as a slow consumer may
        take to flush before it is aborted. Every `heartbeat_interval`
        seconds the node tells the others it is alive; a node not heard of
        for `node_timeout` seconds (while this node's link is up) is gone.
        """
        if not 0 < 2 * heartbeat_interval < node_timeout:
            raise ValueError("node_timeout must exceed two heartbeat intervals")
        self.node_id = node_id if node_id is not None else default_node_id()
        if not _NODE_ID.fullmatch(self.node_id):
            raise ValueError(f"node id {self.node_id!r}: 1 to 255 of A-Z a-z 0-9 and . _ : -")
        self._broker = broker if broker is not None else MemoryBroker()
        self._origin = self.node_id.encode("ascii")
        self._prefix = envelope.echo_prefix(self._origin)
        self._namespace = namespace.encode("utf-8") + b":"
        self._node_channel = self.node_channel(self.node_id)
        self._control_channel = self._namespace + b"all"
        self.max_connection_backlog = max_connection_backlog
        self.abort_after = abort_after
        self._on_connection_missed = on_connection_missed
        self._count_channels = count_channels
        self.stats = ClusterStats()
        self._interests: dict[bytes, _Interest] = {}
        self._locals: dict[ServerConnection, _Local] = {}
        self._by_id: dict[int, _Local] = {}
        self._next_connection_id = 1
        self._lost: set[bytes] = set()
        self._lost_all = False
        self._link_listeners: list[Callable[[LinkChanged], None]] = []
        self.heartbeat_interval = heartbeat_interval
        self.node_timeout = node_timeout
        self._members: dict[bytes, float] = {}
        """Other live nodes -> event loop time of their last heartbeat."""
        self._member_listeners: list[Callable[[MemberChanged], None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._up_since = 0.0
        self._state = LinkState.DOWN
        self._was_up = False
        self._started = False
        self._closed = False
        self._logged: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------

    def process_sharing_problem(self) -> str | None:
        """Its broker's answer (`flare_runtime.sharing`): can nodes in several worker
        processes reach each other through it?"""
        problems = sharing_problems(self._broker)
        return problems[0] if problems else None

    async def start(self) -> None:
        """Start the broker link; returns at once (see `wait_up`)."""
        if self._started:
            return
        self._started = True
        self._broker.subscribe(self._node_channel)
        self._broker.subscribe(self._control_channel)
        await self._broker.start(self)
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat(), name=f"flare-cluster-heartbeat {self.node_id}"
        )

    async def wait_up(self) -> None:
        """Return once the link is up and this node's own channels are subscribed."""
        await self._broker.wait_subscribed(self._node_channel)
        await self._broker.wait_subscribed(self._control_channel)

    async def close(self) -> None:
        """Tell the other nodes this one leaves, close the broker link, forget every subscriber.

        Connections stay open. What was published before is handed to the
        broker first (within its own close timeout), so the others learn of a
        gap only when that failed.
        """
        if self._closed:
            return
        self._closed = True
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
        if self._state is LinkState.UP:
            self._broker.publish(self._control_channel, envelope.encode_leaving(self._prefix))
        await self._broker.close()
        self._interests.clear()
        self._locals.clear()
        self._by_id.clear()
        self._state = LinkState.DOWN

    @property
    def state(self) -> LinkState:
        """UP while the broker link carries events both ways."""
        return self._state

    def add_link_listener(self, listener: Callable[[LinkChanged], None]) -> None:
        """Call `listener(LinkChanged)` each time the broker link goes down or comes back."""
        self._link_listeners.append(listener)

    def members(self) -> frozenset[str]:
        """The other nodes alive now (heard of within `node_timeout`)."""
        return frozenset(origin.decode("ascii") for origin in self._members)

    def add_member_listener(self, listener: Callable[[MemberChanged], None]) -> None:
        """Call `listener(MemberChanged)` when another node appears, leaves or times out."""
        self._member_listeners.append(listener)

    @property
    def control_channel(self) -> bytes:
        """The channel every node receives: heartbeats, leaving notices, losses of everything."""
        return self._control_channel

    # -- channels ----------------------------------------------------------------

    def topic_channel(self, topic: str) -> bytes:
        """The broker channel of `topic`."""
        return self._namespace + b"t:" + topic.encode("utf-8")

    def user_channel(self, user_id: str) -> bytes:
        """The broker channel of `user_id`'s events."""
        return self._namespace + b"u:" + user_id.encode("utf-8")

    def node_channel(self, node_id: str) -> bytes:
        """The broker channel of the node `node_id` (pushes to, and closes of, its connections)."""
        return self._namespace + b"n:" + node_id.encode("ascii")

    # -- publishing --------------------------------------------------------------

    def publish(self, topic: str, push: PreparedPush) -> None:
        """Deliver `push` to every subscriber of `topic` in the cluster; never blocks."""
        self._publish(self.topic_channel(topic), push)

    def publish_to_user(self, user_id: str, push: PreparedPush) -> None:
        """Deliver `push` to every connection bound to `user_id` (and its subscribers)."""
        self._publish(self.user_channel(user_id), push)

    def _publish(self, channel: bytes, push: PreparedPush) -> None:
        """Local subscribers directly, then one envelope for the other nodes."""
        interest = self._interests.get(channel)
        if interest is not None:
            self._fan_out(interest, push, self._origin)
        self._send(channel, envelope.encode_event(self._prefix, push.type_id, push.payload))

    def publish_to_connection(self, address: ConnectionAddress, push: PreparedPush) -> None:
        """Push `push` to the connection at `address`, on whatever node it is.

        Nothing happens when that connection is gone.
        """
        if address.node_id == self.node_id:
            local = self._by_id.get(address.connection_id)
            if local is not None:
                self._push(local.connection, push)
            return
        data = envelope.encode_direct(
            self._prefix, address.connection_id, push.type_id, push.payload
        )
        self._send(self.node_channel(address.node_id), data)

    def close_connection(self, address: ConnectionAddress, reason: str) -> None:
        """Close the connection at `address` with `reason`, on whatever node it is."""
        if address.node_id == self.node_id:
            local = self._by_id.get(address.connection_id)
            if local is not None:
                local.connection.close(reason)
            return
        data = envelope.encode_close(self._prefix, address.connection_id, reason)
        self._send(self.node_channel(address.node_id), data)

    def _send(self, channel: bytes, data: bytes) -> None:
        if self._closed:
            return
        stats = self.stats
        if self._broker.publish(channel, data):
            stats.published += 1
            stats.published_bytes += len(data)
            return
        stats.publish_dropped += 1
        self._remember_lost((channel,))

    def _remember_lost(self, channels: Iterable[bytes]) -> None:
        if self._lost_all:
            return
        self._lost.update(channels)
        if len(self._lost) > MAX_LOST_CHANNELS:
            self._lost.clear()
            self._lost_all = True

    # -- subscribing -------------------------------------------------------------

    def subscribe(
        self, topic: str, on_event: EventCallback, *, on_missed: MissedCallback
    ) -> Subscription:
        """Call `on_event(event)` for each event of `topic`; `on_missed(subscription)` on a gap."""
        return self._add(
            self.topic_channel(topic), topic=topic, on_event=on_event, on_missed=on_missed
        )

    def subscribe_user(
        self, user_id: str, on_event: EventCallback, *, on_missed: MissedCallback
    ) -> Subscription:
        """Like `subscribe`, for the events published to `user_id`."""
        return self._add(
            self.user_channel(user_id), user_id=user_id, on_event=on_event, on_missed=on_missed
        )

    def join(self, connection: ServerConnection, topic: str) -> Subscription:
        """Push `topic`'s events to `connection` until it leaves or closes. Idempotent."""
        local = self._local(connection)
        channel = self.topic_channel(topic)
        subscription = local.subscriptions.get(channel)
        if subscription is None:
            subscription = self._add(channel, topic=topic, connection=connection)
            local.subscriptions[channel] = subscription
        return subscription

    def leave(self, connection: ServerConnection, topic: str) -> None:
        """Stop pushing `topic`'s events to `connection`. Idempotent."""
        local = self._locals.get(connection)
        if local is not None:
            subscription = local.subscriptions.get(self.topic_channel(topic))
            if subscription is not None:
                self._remove(subscription)

    def topics_of(self, connection: ServerConnection) -> list[str]:
        """The topics `connection` has joined."""
        local = self._locals.get(connection)
        if local is None:
            return []
        return [s.topic for s in local.subscriptions.values() if s.topic is not None]

    def bind_user(self, connection: ServerConnection, user_id: str) -> Subscription:
        """Make `connection` receive `user_id`'s events (`publish_to_user`) until it closes.

        A connection is bound to one user at a time: binding it again moves it.
        """
        local = self._local(connection)
        if local.user is not None:
            if local.user.user_id == user_id:
                return local.user
            self._remove(local.user)
        channel = self.user_channel(user_id)
        subscription = self._add(channel, user_id=user_id, connection=connection)
        local.subscriptions[channel] = subscription
        local.user = subscription
        return subscription

    def address(self, connection: ServerConnection) -> ConnectionAddress:
        """`connection`'s cluster-wide address (assigned on first use, until it closes)."""
        return self._local(connection).address

    def connection(self, address: ConnectionAddress) -> ServerConnection | None:
        """The local connection at `address` (None: another node's, or closed)."""
        if address.node_id != self.node_id:
            return None
        local = self._by_id.get(address.connection_id)
        return local.connection if local is not None else None

    def subscribed_channels(self) -> set[bytes]:
        """Channels with local subscribers (the node's interest at the broker)."""
        return set(self._interests)

    def _local(self, connection: ServerConnection) -> _Local:
        local = self._locals.get(connection)
        if local is None:
            if connection.closed:
                raise ConnectionClosedError("connection closed")
            connection_id = self._next_connection_id
            self._next_connection_id += 1
            local = _Local(connection, ConnectionAddress(self.node_id, connection_id))
            self._locals[connection] = local
            self._by_id[connection_id] = local
            connection.add_close_callback(self._connection_closed)
        return local

    def _connection_closed(self, connection: ServerConnection) -> None:
        local = self._locals.pop(connection, None)
        if local is None:
            return
        del self._by_id[local.address.connection_id]
        for subscription in list(local.subscriptions.values()):
            self._remove(subscription)

    def _add(
        self,
        channel: bytes,
        *,
        topic: str | None = None,
        user_id: str | None = None,
        on_event: EventCallback = _connection_subscription_callback,
        on_missed: MissedCallback = _connection_subscription_callback,
        connection: ServerConnection | None = None,
    ) -> Subscription:
        if self._closed:
            raise ConnectionClosedError("the cluster node is closed")
        interest = self._interests.get(channel)
        if interest is None:
            interest = self._interests[channel] = _Interest(channel, topic, user_id)
            self._broker.subscribe(channel)
            self.stats.broker_subscribes += 1
        subscription = Subscription(self, interest, on_event, on_missed, connection)
        interest.add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription.closed:
            return
        subscription.closed = True
        interest = subscription._interest
        connection = subscription.connection
        if connection is not None:
            local = self._locals.get(connection)
            if local is not None:
                local.subscriptions.pop(interest.channel, None)
                if local.user is subscription:
                    local.user = None
        interest.discard(subscription)
        if not interest.subscribers and self._interests.get(interest.channel) is interest:
            del self._interests[interest.channel]
            if not self._closed:
                self._broker.unsubscribe(interest.channel)
                self.stats.broker_unsubscribes += 1

    # -- delivery ----------------------------------------------------------------

    def _fan_out(self, interest: _Interest, push: PreparedPush, origin: bytes) -> None:
        event: ClusterEvent | None = None
        limit = self.max_connection_backlog
        slow: list[ServerConnection] | None = None
        delivered = 0
        for subscription in interest.snapshot():
            if subscription.closed:  # closed by an earlier subscriber of this fan-out
                continue
            connection = subscription.connection
            if connection is not None:
                if connection.buffered_bytes > limit:
                    if slow is None:
                        slow = []
                    slow.append(connection)
                    continue
                try:
                    connection.push_prepared(push)
                except ConnectionClosedError:
                    continue  # its close callback ends its subscriptions
                except FlareError as error:  # e.g. beyond the client's max message size
                    self._log_once(f"push:{type(error).__name__}", "push refused: %s", error)
                    connection.close(f"cluster: push refused ({error})")
                    continue
            else:
                if event is None:
                    event = ClusterEvent(interest.topic, interest.user_id, push, origin)
                try:
                    subscription.on_event(event)
                except Exception:
                    self._log_once(
                        f"callback:{id(subscription)}",
                        "cluster subscriber %r failed",
                        subscription,
                        exc_info=True,
                    )
            delivered += 1
        self.stats.delivered += delivered
        if slow:
            for connection in slow:
                self._cut_off(connection)

    def _push(self, connection: ServerConnection, push: PreparedPush) -> None:
        if connection.buffered_bytes > self.max_connection_backlog:
            self._cut_off(connection)
            return
        try:
            connection.push_prepared(push)
        except ConnectionClosedError:
            return
        except FlareError as error:
            connection.close(f"cluster: push refused ({error})")
            return
        self.stats.delivered += 1

    def _cut_off(self, connection: ServerConnection) -> None:
        """Close a slow consumer; abort it if it does not read even the close."""
        if connection.closed:
            return
        self.stats.slow_consumers += 1
        reason = f"slow_consumer: more than {self.max_connection_backlog} bytes of events not read"
        connection.close(reason)
        asyncio.get_running_loop().call_later(self.abort_after, connection.abort, reason)

    # -- BrokerListener ----------------------------------------------------------

    def message_received(self, channel: bytes, data: bytes) -> None:
        stats = self.stats
        stats.received_messages += 1
        stats.received_bytes += len(data)
        if self._count_channels:
            count = stats.by_channel.get(channel)
            if count is None:
                count = stats.by_channel[channel] = ChannelCount()
            count.messages += 1
            count.bytes += len(data)
        if data.startswith(self._prefix):
            stats.echoes += 1
            return
        try:
            message = envelope.decode(data)
        except MalformedEnvelopeError as error:
            stats.malformed += 1
            self._log_once("malformed", "dropped a message on %r: %s", channel, error)
            return
        kind = message.kind
        if kind is Kind.EVENT:
            interest = self._interests.get(channel)
            if interest is None:
                stats.unrouted += 1
                return
            stats.prepared_pushes += 1
            self._fan_out(interest, PreparedPush(message.type_id, message.payload), message.origin)
        elif kind is Kind.DIRECT or kind is Kind.CLOSE:
            local = (
                self._by_id.get(message.connection_id) if channel == self._node_channel else None
            )
            if local is None:
                stats.unrouted += 1
            elif kind is Kind.DIRECT:
                stats.prepared_pushes += 1
                self._push(local.connection, PreparedPush(message.type_id, message.payload))
            else:
                local.connection.close(message.payload.decode("utf-8", "replace"))
        elif kind is Kind.HEARTBEAT:
            self._heard(message.origin)
        elif kind is Kind.LEAVING:
            self._member_gone(message.origin, "left", missed=False)
        elif kind is Kind.LOST:
            if channel == self._node_channel:  # pushes to any of our connections
                self._missed((), [local.connection for local in self._locals.values()])
            else:
                interest = self._interests.get(channel)
                if interest is not None:
                    self._missed(interest.snapshot())
        else:
            self._missed_everything()

    def link_lost(self, reason: str) -> None:
        if self._closed:
            return
        self._state = LinkState.DOWN
        logger.warning("cluster node %s: broker link lost (%s)", self.node_id, reason)
        self._tell(self._link_listeners, LinkChanged(LinkState.DOWN, missed=True, reason=reason))

    def publishes_lost(self, channels: Iterable[bytes]) -> None:
        self._remember_lost(channels)

    def link_restored(self) -> None:
        if self._closed:
            return
        self._state = LinkState.UP
        # Heartbeats missed during the outage do not count against the others.
        self._up_since = asyncio.get_running_loop().time()
        reconnected = self._was_up
        self._was_up = True
        # Tell the other nodes first which of our publishes they may have missed.
        lost, lost_all = self._lost, self._lost_all
        self._lost, self._lost_all = set(), False
        if lost_all:
            self._send(self._control_channel, envelope.encode_lost(self._prefix, everything=True))
        else:
            notice = envelope.encode_lost(self._prefix)
            for channel in lost:
                self._send(channel, notice)
        if reconnected:
            logger.warning(
                "cluster node %s: broker link restored; subscribers told of a possible gap",
                self.node_id,
            )
            self._missed_everything()
        self._tell(self._link_listeners, LinkChanged(LinkState.UP, missed=reconnected))

    # -- membership --------------------------------------------------------------

    async def _beat(self) -> None:
        heartbeat = envelope.encode_heartbeat(self._prefix)
        loop = asyncio.get_running_loop()
        while True:
            if self._state is LinkState.UP:
                self._broker.publish(self._control_channel, heartbeat)
                deadline = loop.time() - self.node_timeout
                if self._up_since < deadline:
                    for origin, seen in list(self._members.items()):
                        if seen < deadline:
                            self._member_gone(origin, "timed out", missed=True)
            await asyncio.sleep(self.heartbeat_interval)

    def _heard(self, origin: bytes) -> None:
        joined = origin not in self._members
        self._members[origin] = asyncio.get_running_loop().time()
        if joined:
            self._tell(self._member_listeners, MemberChanged(origin.decode("ascii"), joined=True))

    def _member_gone(self, origin: bytes, reason: str, *, missed: bool) -> None:
        if self._members.pop(origin, None) is None:
            return
        node_id = origin.decode("ascii")
        if missed:
            # It may have died with events accepted but never published, on any channel.
            logger.warning(
                "cluster node %s: node %s %s; subscribers told of a possible gap",
                self.node_id,
                node_id,
                reason,
            )
            self._missed_everything()
        self._tell(self._member_listeners, MemberChanged(node_id, joined=False, reason=reason))

    # -- gaps --------------------------------------------------------------------

    def _missed_everything(self) -> None:
        subscriptions = [s for interest in self._interests.values() for s in interest.snapshot()]
        unsubscribed = [
            local.connection for local in self._locals.values() if not local.subscriptions
        ]
        self._missed(subscriptions, unsubscribed)

    def _missed(
        self, subscriptions: Iterable[Subscription], connections: Iterable[ServerConnection] = ()
    ) -> None:
        """Tell each subscriber, and each connection once, that events may be missing."""
        told: set[ServerConnection] = set()
        for subscription in subscriptions:
            if subscription.closed:
                continue
            connection = subscription.connection
            if connection is not None:
                told.add(connection)
                continue
            self.stats.gaps += 1
            try:
                subscription.on_missed(subscription)
            except Exception:
                self._log_once(
                    f"missed:{id(subscription)}",
                    "cluster subscriber %r failed in on_missed",
                    subscription,
                    exc_info=True,
                )
        told.update(connections)
        for connection in told:
            if connection.closed:
                continue
            self.stats.gaps += 1
            try:
                if self._on_connection_missed is not None:
                    self._on_connection_missed(connection)
                else:
                    connection.close("cluster: live events may have been missed; reconnect")
            except Exception:
                self._log_once("connection_missed", "on_connection_missed failed", exc_info=True)

    def _tell(self, listeners: list[Callable[[_Change], None]], change: _Change) -> None:
        """Call each listener; one that raises is logged once and the others still run."""
        for listener in list(listeners):
            try:
                listener(change)
            except Exception:
                self._log_once(
                    f"listener:{id(listener)}", "listener %r failed", listener, exc_info=True
                )

    def _log_once(self, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Log a failure the first time it happens (a broken subscriber must not flood logs)."""
        if key in self._logged:
            logger.debug(message, *args, exc_info=exc_info)
            return
        if len(self._logged) < 1000:
            self._logged.add(key)
        logger.error(message, *args, exc_info=exc_info)

    def __repr__(self) -> str:
        return (
            f"ClusterNode({self.node_id!r}, {self._state.value}, "
            f"{len(self._interests)} channels, {len(self._locals)} connections)"
        )
