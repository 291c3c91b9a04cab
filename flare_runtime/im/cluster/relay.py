"""`ImCluster`: the IM core of one node, joined to the others through a `ClusterNode`.

Built by `ImCore(storage, cluster=node)`; the core's parts call it instead of
their own fan-out and presence (the `Relay`, `PresenceBoard` and
`Conversations.attach` seams), so everything docs/im.md promises holds across
nodes. docs/cluster.md ("The IM on a cluster") is the user's view; here is how.

**Channels** (all subscribed by in-process callbacks of this module, by interest):

* ``im:c:<conversation>`` - every event of a conversation (messages with their
  seq, receipts, typing, membership changes). A node follows a conversation
  while one of its local users with a session is a member: it subscribes,
  waits until the broker delivers the channel, *then* reads the conversation
  from storage (so nothing committed after the read can be missed), and keeps
  the room cached while it follows it. A node that follows nothing of a
  conversation receives none of its traffic.
* the user channel of each local user with a session - the user's own events:
  its receipts with unread counts, its membership changes (which make its
  nodes follow or leave the conversation), and session control (ended
  elsewhere: replaced by the device policy, kicked).
* ``im:p:<user>`` - the user's presence changes, followed while a local
  session watches the user.

**One path.** Each node, the publishing one included, delivers an event when it
receives it on its channel (`ClusterNode` hands a node its own publishes
directly), through the same sequencer and fan-out as a single process.

**Order.** Each node's sequencer orders a conversation's messages by seq,
whoever stored them. A gap that does not close within `gap_timeout` is filled
from storage: a message is committed before it is published, and PostgreSQL
assigns seqs under the conversation's row lock, so every seq below one seen is
committed (or was trimmed).

**Gaps.** When the cluster layer reports that events may have been lost on a
channel (the broker link restored, a publisher's loss, a node that went
silent), this node re-reads what it caches (the conversation's epoch, last
seq and members; the user's sessions and conversations; the presence
states), moves its sequencer past what it could not have received live, and
pushes ``SyncRequired`` to each affected device (after re-reading, so the
device's ``Sync`` starts after everything this node will not deliver live).
Connections stay open: no reconnect storm after a broker restart.

**Sessions and presence** are in the `ClusterRegistry` (PostgreSQL): see its
module for why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flare.im.v1 import events_pb2
from google.protobuf.message import DecodeError

from flare_runtime.cluster import ClusterEvent, ClusterNode, LinkChanged, LinkState, Subscription
from flare_runtime.im import events
from flare_runtime.im.cluster import envelope
from flare_runtime.im.cluster.envelope import CONTROL, MalformedEventError
from flare_runtime.im.cluster.registry import ClusterRegistry, RegisteredSession
from flare_runtime.im.conversations import Conversations, Room
from flare_runtime.im.delivery import Channel, Delivery, Fanout, Outbox
from flare_runtime.im.limits import ImLimits
from flare_runtime.im.presence import Presence
from flare_runtime.im.sessions import (
    CloseReason,
    DevicePolicy,
    Session,
    Sessions,
    new_session_id,
)
from flare_runtime.im.sinks import EventSink
from flare_runtime.im.storage.base import Role, StoredMessage
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.server_connection import PreparedPush

logger = logging.getLogger("flare_runtime.im.cluster")

_CHANGE = events_pb2.MembershipChanged
_ENDED_EARLY_SECONDS = 60.0
MAX_EARLY_EVENTS = 10_000
"""Events held for a conversation still being read; beyond, they are dropped and its
devices told to Sync once it is read (a database too slow to answer must not cost
unbounded memory)."""


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Timing of the IM on a cluster (docs/cluster.md, "Tuning")."""

    gap_timeout: float = 0.5
    """Seconds a conversation's sequencer waits for a missing seq before reading it from
    storage (messages of different nodes may arrive out of order)."""
    lease_interval: float = 1.0
    """Seconds between renewals of this node's lease in the registry (and sweeps)."""
    node_timeout: float = 5.0
    """A node whose lease is this old is dead: its sessions are forgotten."""
    load_concurrency: int = 8
    """Conversations read from storage at once when a user's are followed or re-read."""


def conversation_topic(conversation_id: str) -> str:
    """The cluster topic of a conversation's events."""
    return f"im:c:{conversation_id}"


def presence_topic(user_id: str) -> str:
    """The cluster topic of a user's presence changes."""
    return f"im:p:{user_id}"


def _message_push(message: StoredMessage) -> PreparedPush:
    return PreparedPush(events.MESSAGE_RECEIVED, events.message_received(message))


class _Followed:
    """This node's interest in one conversation."""

    __slots__ = (
        "catch_up",
        "conversation_id",
        "early",
        "gap_timer",
        "loading",
        "overflowed",
        "room",
        "subscription",
        "synthesized",
        "users",
    )

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.users: set[str] = set()
        """Local users with a session who are members."""
        self.subscription: Subscription | None = None
        self.room: Room | None = None
        """The cached room, once read after the subscription was ready."""
        self.loading: asyncio.Task[None] | None = None
        self.early: list[ClusterEvent] = []
        """Events received before the room was read (replayed after)."""
        self.overflowed = False
        """More than `MAX_EARLY_EVENTS` arrived before the room was read (some dropped)."""
        self.catch_up: dict[str, tuple[int, list[str], str]] = {}
        """Users who joined before the room was read: (seq at the join, who joined with
        them, who added them); they get the messages after that seq from storage."""
        self.synthesized: dict[str, set[str]] = {}
        """While early events are replayed: user -> users whose JOINED it got by catch-up."""
        self.gap_timer: asyncio.TimerHandle | None = None


class _LocalUser:
    """A user with sessions (or a login under way) on this node."""

    __slots__ = ("conversations", "following", "logins", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.conversations: set[str] = set()
        """Conversations followed for this user."""
        self.following: asyncio.Task[None] | None = None
        """Reading the user's conversations and following them (once, at its first login)."""
        self.logins = 0
        """Logins under way."""


class _Watched:
    __slots__ = ("changed_at_ms", "count", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.count = 0
        self.changed_at_ms = -1
        """When the state this node applied changed (-1: none yet)."""


class ImCluster:
    """The IM's side of one node; made and driven by `ImCore` (``ImCore(..., cluster=node)``)."""

    def __init__(  # noqa: PLR0917 - built in one place, by ImCore
        self,
        node: ClusterNode,
        storage: PostgresStorage,
        sessions: Sessions,
        delivery: Delivery,
        conversations: Conversations,
        presence: Presence,
        limits: ImLimits,
        settings: ClusterSettings,
    ) -> None:
        self.node = node
        self.storage = storage
        self.settings = settings
        self.registry = ClusterRegistry(
            storage,
            node.node_id,
            lease_interval=settings.lease_interval,
            node_timeout=settings.node_timeout,
        )
        self._sessions = sessions
        self._delivery = delivery
        self._conversations = conversations
        self._presence = presence
        self._limits = limits
        self._followed: dict[str, _Followed] = {}
        self._users: dict[str, _LocalUser] = {}
        self._watched: dict[str, _Watched] = {}
        self._user_outbox = Outbox()
        """Events of a user's own channel (receipts, membership) for its local devices."""
        self._ended_early: dict[str, tuple[float, CloseReason, str, str]] = {}
        """Sessions ended elsewhere before their login finished here (session id ->
        (when, reason, detail, replaced by))."""
        self._rereads: dict[str, dict[str, _Followed]] = {}
        """Conversations to re-read, by the reason their devices will be told."""
        self._reread_scheduled = False
        self._resync: dict[Session, set[str] | None] = {}
        self._resync_reason = ""
        self._resync_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lease: asyncio.Task[None] | None = None
        self._unregister_later: set[str] = set()
        self._loads = asyncio.Semaphore(settings.load_concurrency)
        self._logged: set[str] = set()
        self._link_was_up = node.state is LinkState.UP
        self._link_down: asyncio.Future[None] | None = None
        self.closing = False
        node.add_link_listener(self._link_changed)
        delivery.relay = self
        conversations.attach = self.attach
        presence.board = self

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the cluster node (if its owner has not), register this node, renew its lease."""
        await self.node.start()
        await self.registry.open()
        self._lease = asyncio.get_running_loop().create_task(
            self._keep_lease(), name=f"flare-im-lease {self.node.node_id}"
        )

    async def close(self) -> None:
        """Forget this node's sessions in the registry and leave every channel.

        Call after the local sessions ended. Their users go offline on the
        other nodes after the grace period. The `ClusterNode` stays open (its
        owner closes it).
        """
        self.closing = True
        if self._lease is not None:
            self._lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for followed in self._followed.values():
            if followed.gap_timer is not None:
                followed.gap_timer.cancel()
            if followed.subscription is not None:
                followed.subscription.close()
        for local in self._users.values():
            local.subscription.close()
        for watched in self._watched.values():
            watched.subscription.close()
        self._followed.clear()
        self._users.clear()
        self._watched.clear()
        try:
            await self.registry.close()
        except Exception:
            logger.warning("could not remove node %s from the registry", self.node.node_id)

    def _link_changed(self, change: LinkChanged) -> None:
        if change.state is LinkState.UP:
            self._link_was_up = True
            return
        down, self._link_down = self._link_down, None
        if down is not None and not down.done():
            down.set_result(None)

    async def _subscribed(self, subscription: Subscription) -> None:
        """Until the broker delivers the channel to this node, or its link is down.

        While the link is down nothing is waited for: when it is back, every
        subscription is told of a possible gap, and the devices to Sync. So
        logins and follows go on during a broker outage. (Before the link was
        ever up, they wait: there is no gap report for a first connection.)
        """
        if self.node.state is LinkState.DOWN and self._link_was_up:
            return
        if self._link_down is None:
            self._link_down = asyncio.get_running_loop().create_future()
        ready = asyncio.ensure_future(subscription.ready())
        try:
            await asyncio.wait({ready, self._link_down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log_once(task.get_name(), "%s failed", task.get_name(), exc=task.exception())

    def _log_once(
        self, key: str, message: str, *args: object, exc: BaseException | None = None
    ) -> None:
        """Log a failure the first time (a broken database must not flood the logs)."""
        first = key not in self._logged
        if first and len(self._logged) < 1000:
            self._logged.add(key)
        (logger.warning if first else logger.debug)(message, *args, exc_info=exc)

    # -- sessions ----------------------------------------------------------------------

    async def login(
        self,
        user_id: str,
        device_id: str,
        platform: int,
        sink: EventSink,
        *,
        policy: DevicePolicy,
        retire: Session | None,
    ) -> tuple[Session, list[str]]:
        """Open a session: registered cluster-wide (the device policy applied to every node's
        sessions), the user's conversations followed; returns it and the ids it replaced.

        Returns once this node receives every event of the user and of its
        conversations: a ``Sync`` after the login misses nothing.
        """
        local = self._local_user(user_id)
        local.logins += 1
        try:
            await self._subscribed(local.subscription)  # control for the session must reach us
            session_id = new_session_id()
            row = RegisteredSession(session_id, user_id, device_id, platform, self.node.node_id)
            try:
                registered = await self.registry.register(
                    row,
                    policy,
                    self._limits.max_sessions_per_user,
                    retire=retire.session_id if retire is not None else "",
                )
            except BaseException:  # cancelled (the client left) after it committed, maybe
                self._spawn(self._unregister(session_id), f"unregister {session_id}")
                raise
            mine = self._sessions.by_user.get(user_id, {})
            replace = [
                mine[old.session_id] for old in registered.replaced if old.session_id in mine
            ]
            elsewhere = [old for old in registered.replaced if old.session_id not in mine]
            try:
                session, _ = self._sessions.login(
                    user_id,
                    device_id,
                    platform,
                    sink,
                    retire=retire,
                    session_id=session_id,
                    replace=replace,
                )
            except BaseException:
                self._spawn(self._unregister(session_id), f"unregister {session_id}")
                raise
            for old in elsewhere:
                self._tell_ended(user_id, old.session_id, old.ended, old.detail, old.replaced_by)
            if registered.came_online:
                self._announce(user_id, online=True, changed_at_ms=registered.changed_at_ms)
            if local.following is None:
                local.following = asyncio.ensure_future(self._follow_memberships(user_id, local))
            try:
                await asyncio.shield(local.following)
            except BaseException:  # failed, or cancelled: nobody will hold this session
                if local.following.done():
                    local.following = None  # the next login follows again
                self._sessions.drop(session)
                raise
            early = self._ended_early.pop(session_id, None)
            if early is not None:
                _, reason, detail, replaced_by = early
                self._sessions.end(session, reason, detail, replaced_by=replaced_by)
            return session, [old.session_id for old in registered.replaced]
        finally:
            local.logins -= 1
            self._release_user(user_id)

    def session_closed(self, session: Session, last: bool) -> None:
        """A local session ended (logout, connection gone, replaced, kicked)."""
        if self.closing:
            return
        self._spawn(self._unregister(session.session_id), f"unregister {session.session_id}")
        if last:
            self._release_user(session.user_id)

    async def _unregister(self, session_id: str) -> None:
        try:
            ended = await self.registry.unregister(session_id)
        except Exception as error:
            self._unregister_later.add(session_id)  # retried with the next lease renewal
            self._log_once("unregister", "could not unregister a session: %s", error)
            return
        if ended is not None and ended.user_idle:
            self._offline_after(ended.session.user_id, self._limits.presence_grace_seconds)

    async def kick(self, session_id: str, detail: str) -> bool:
        """End a session on whatever node holds it (``REASON_KICKED``); False when unknown."""
        for devices in self._sessions.by_user.values():
            session = devices.get(session_id)
            if session is not None:
                self._sessions.end(session, CloseReason.KICKED, detail)
                return True
        ended = await self.registry.end(session_id, CloseReason.KICKED, detail)
        if ended is None:
            return False
        self._tell_ended(ended.session.user_id, session_id, CloseReason.KICKED, detail, "")
        if ended.user_idle:
            self._offline_after(ended.session.user_id, self._limits.presence_grace_seconds)
        return True

    def _tell_ended(
        self,
        user_id: str,
        session_id: str,
        reason: CloseReason | None,
        detail: str,
        replaced_by: str,
    ) -> None:
        control = envelope.encode_control(
            op="end",
            session=session_id,
            reason=int(reason or CloseReason.KICKED),
            detail=detail,
            replaced_by=replaced_by,
        )
        self.node.publish_to_user(user_id, PreparedPush(CONTROL, control))

    def _end_local(
        self, session_id: str, reason: CloseReason, detail: str, replaced_by: str
    ) -> None:
        for devices in self._sessions.by_user.values():
            session = devices.get(session_id)
            if session is not None:
                self._sessions.end(session, reason, detail, replaced_by=replaced_by)
                return
        # Its login has not finished here yet: it ends as soon as it does.
        now = time.monotonic()
        for stale in [k for k, v in self._ended_early.items() if v[0] < now - _ENDED_EARLY_SECONDS]:
            del self._ended_early[stale]
        self._ended_early[session_id] = (now, reason, detail, replaced_by)

    def _local_user(self, user_id: str) -> _LocalUser:
        local = self._users.get(user_id)
        if local is None:
            subscription = self.node.subscribe_user(
                user_id,
                lambda event: self._user_event(user_id, event),
                on_missed=lambda _: self._user_missed(user_id),
            )
            local = self._users[user_id] = _LocalUser(subscription)
        return local

    def _release_user(self, user_id: str) -> None:
        """Stop following a user and its conversations once it has no session nor login here."""
        local = self._users.get(user_id)
        if local is None or local.logins or self._sessions.has(user_id):
            return
        del self._users[user_id]
        local.subscription.close()
        if local.following is not None and not local.following.done():
            local.following.cancel()
        for conversation_id in local.conversations:
            self._unfollow(user_id, conversation_id)

    # -- following conversations -------------------------------------------------------

    async def _follow_memberships(self, user_id: str, local: _LocalUser) -> None:
        """Follow every conversation of the user (its first login on this node)."""
        memberships = await self.storage.memberships(user_id)
        followed = [self._follow(user_id, m.conversation.conversation_id) for m in memberships]
        await self._loaded(followed)

    @staticmethod
    async def _loaded(followed: Iterable[_Followed | None]) -> None:
        loading = {f.loading for f in followed if f is not None and f.loading is not None}
        if loading:
            await asyncio.wait(loading)

    def _follow(
        self, user_id: str, conversation_id: str, catch_up: tuple[int, list[str], str] | None = None
    ) -> _Followed | None:
        """Follow a conversation for a local user (None when the user has left this node)."""
        local = self._users.get(user_id)
        if local is None:
            return None
        followed = self._followed.get(conversation_id)
        if followed is None:
            followed = self._followed[conversation_id] = _Followed(conversation_id)
            followed.subscription = self.node.subscribe(
                conversation_topic(conversation_id),
                lambda event: self._conversation_event(followed, event),
                on_missed=lambda _: self._conversation_missed(followed),
            )
            followed.loading = asyncio.get_running_loop().create_task(
                self._load(followed), name=f"flare-im-follow {conversation_id}"
            )
        followed.users.add(user_id)
        local.conversations.add(conversation_id)
        if catch_up is not None and followed.loading is not None:
            followed.catch_up[user_id] = catch_up
        return followed

    def _unfollow(self, user_id: str, conversation_id: str) -> None:
        followed = self._followed.get(conversation_id)
        if followed is None:
            return
        followed.users.discard(user_id)
        followed.catch_up.pop(user_id, None)
        local = self._users.get(user_id)
        if local is not None:
            local.conversations.discard(conversation_id)
        if followed.users:
            return
        del self._followed[conversation_id]
        if followed.subscription is not None:
            followed.subscription.close()
        if followed.gap_timer is not None:
            followed.gap_timer.cancel()
        loading = followed.loading
        if loading is not None and loading is not asyncio.current_task():
            loading.cancel()
        if (
            followed.room is not None
            and self._conversations.cached(conversation_id) is followed.room
        ):
            self._conversations.forget(conversation_id)

    async def attach(self, conversation_id: str) -> Room | None:
        """The cached room of a conversation this node follows (`Conversations.attach`)."""
        followed = self._followed.get(conversation_id)
        if followed is None:
            return None
        if followed.loading is not None:
            await asyncio.wait((followed.loading,))
        return followed.room if self._followed.get(conversation_id) is followed else None

    async def _load(self, followed: _Followed) -> None:
        """Read a newly followed conversation once its channel is subscribed, then catch up.

        Events received meanwhile wait in `followed.early` and are replayed
        once the room is read and the users who joined meanwhile caught up.
        """
        conversation_id = followed.conversation_id
        delay = 0.1
        while True:
            try:
                assert followed.subscription is not None
                await self._subscribed(followed.subscription)
                async with self._loads:
                    room = await self._conversations.read(conversation_id)
                break
            except Exception as error:  # the database is down: keep trying while followed
                self._log_once("load", "could not read %s (retrying): %s", conversation_id, error)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)
        if room is None:
            for user in list(followed.users):
                self._unfollow(user, conversation_id)
            return
        for user in [u for u in followed.users if u not in room.members]:
            self._unfollow(user, conversation_id)  # it left before the read
        if self._followed.get(conversation_id) is not followed:
            return
        self._conversations.remember(room)
        followed.room = room
        while followed.catch_up:
            user, (seq, joined_with, actor) = followed.catch_up.popitem()
            try:
                await self._catch_up(room, user, seq, joined_with, actor)
            except Exception as error:
                self._log_once("catch-up", "could not catch up %s: %s", conversation_id, error)
                self._resync_users([user], [conversation_id], "could not catch up")
            followed.synthesized[user] = set(joined_with)
        followed.loading = None
        early, followed.early = followed.early, []
        for event in early:
            self._conversation_event(followed, event)
        followed.synthesized.clear()
        if followed.overflowed:
            followed.overflowed = False
            self._reread([followed], "too many events while the conversation was read")

    async def _catch_up(
        self, room: Room, user_id: str, seq: int, joined_with: list[str], actor: str
    ) -> None:
        """A user joined before this node read the conversation: what it missed meanwhile."""
        for other in joined_with:
            role = room.members.get(other)
            if role is None:
                continue
            payload = _CHANGE(
                conversation_id=room.conversation_id,
                user_id=other,
                change=_CHANGE.CHANGE_JOINED,
                role=int(role),  # type: ignore[arg-type]
                actor_user_id=actor,
            ).SerializeToString()
            push = PreparedPush(events.MEMBERSHIP_CHANGED, payload)
            self._delivery.publish(room, Fanout(push, (user_id,)))
        if room.last_seq <= seq:
            return
        page = self._limits.sync_page_max
        messages = await self.storage.read_after(room.conversation_id, seq, page)
        for message in messages:
            if message.epoch == room.epoch and message.seq <= room.last_seq:
                self._delivery.publish(room, Fanout(_message_push(message), (user_id,)))
        if len(messages) == page:
            self._resync_users([user_id], [room.conversation_id], "joined a busy conversation")

    # -- events received -----------------------------------------------------------------

    def _conversation_event(self, followed: _Followed, event: ClusterEvent) -> None:
        room = followed.room
        if room is None or followed.loading is not None:
            if len(followed.early) < MAX_EARLY_EVENTS:
                followed.early.append(event)
            else:
                followed.overflowed = True
            return
        push = event.push
        type_id = push.type_id
        try:
            if type_id == events.MESSAGE_RECEIVED:
                epoch, seq, payload = envelope.decode_message(push.payload)
                if epoch > room.epoch:
                    self._reread([followed], "")  # the reset's notice is on its way, or lost
                    return
                self._delivery.sequence(room, epoch, seq, PreparedPush(type_id, payload))
            elif type_id == CONTROL:
                if envelope.decode_control(push.payload)["op"] == "reset":
                    self._reread([followed], "")
            else:
                exclude, skip_user, skip_session, payload = envelope.decode_routed(push.payload)
                users: Collection[str] = room.members
                if type_id == events.MEMBERSHIP_CHANGED:
                    change = _CHANGE.FromString(payload)
                    self._apply_membership(room, change)
                    if followed.synthesized and change.change == _CHANGE.CHANGE_JOINED:
                        # Replayed after a catch-up: not twice to whom it was told already.
                        told = {
                            u for u, got in followed.synthesized.items() if change.user_id in got
                        }
                        users = [u for u in room.members if u not in told]
                skip = (
                    self._sessions.by_user.get(skip_user, {}).get(skip_session)
                    if skip_session
                    else None
                )
                fanout = Fanout(PreparedPush(type_id, payload), users, exclude=exclude, skip=skip)
                self._delivery.publish(room, fanout)
        except (MalformedEventError, ValueError, KeyError) as error:
            self._log_once(
                "malformed", "dropped a malformed IM event on %s: %s", event.topic, error
            )

    @staticmethod
    def _apply_membership(room: Room, change: events_pb2.MembershipChanged) -> None:
        if change.change in (_CHANGE.CHANGE_LEFT, _CHANGE.CHANGE_KICKED):
            room.members.pop(change.user_id, None)
        elif change.role:
            room.members[change.user_id] = Role(change.role)

    def _user_event(self, user_id: str, event: ClusterEvent) -> None:
        push = event.push
        type_id = push.type_id
        try:
            if type_id == CONTROL:
                control = envelope.decode_control(push.payload)
                if control["op"] == "end":
                    self._end_local(
                        str(control["session"]),
                        CloseReason(int(control["reason"])),
                        str(control["detail"]),
                        str(control["replaced_by"]),
                    )
                elif control["op"] == "follow":
                    catch_up: tuple[int, list[str], str] = (int(control["seq"]), [], "")
                    self._follow(user_id, str(control["conversation"]), catch_up)
            elif type_id == events.MEMBERSHIP_CHANGED:
                seq, joined_with, payload = envelope.decode_membership(push.payload)
                change = _CHANGE.FromString(payload)
                conversation_id = change.conversation_id
                room = self._conversations.cached(conversation_id)
                if room is not None:
                    self._apply_membership(room, change)
                self._delivery.publish(
                    room or self._user_outbox, Fanout(PreparedPush(type_id, payload), (user_id,))
                )
                if change.change == _CHANGE.CHANGE_JOINED:
                    self._follow(user_id, conversation_id, (seq, joined_with, change.actor_user_id))
                elif change.change == _CHANGE.CHANGE_ROLE_CHANGED:
                    self._follow(user_id, conversation_id)
                else:
                    self._unfollow(user_id, conversation_id)
            else:
                _, _, _, payload = envelope.decode_routed(push.payload)
                self._delivery.publish(
                    self._user_outbox, Fanout(PreparedPush(type_id, payload), (user_id,))
                )
        except (MalformedEventError, DecodeError, ValueError, KeyError) as error:
            self._log_once("malformed", "dropped a malformed IM event for %r: %s", user_id, error)

    # -- events published (the `Relay` of `Delivery`) -----------------------------------------

    def message_stored(self, channel: Channel, epoch: int, seq: int, push: PreparedPush) -> None:
        payload = envelope.encode_message(epoch, seq, push.payload)
        self.node.publish(
            conversation_topic(channel.conversation_id), PreparedPush(push.type_id, payload)
        )

    def conversation_event(
        self,
        channel: Channel,
        push: PreparedPush,
        *,
        exclude: str = "",
        skip: Session | None = None,
    ) -> None:
        payload = envelope.encode_routed(
            push.payload,
            exclude=exclude,
            skip_user=skip.user_id if skip is not None else "",
            skip_session=skip.session_id if skip is not None else "",
        )
        self.node.publish(
            conversation_topic(channel.conversation_id), PreparedPush(push.type_id, payload)
        )

    def user_event(self, user_id: str, push: PreparedPush) -> None:
        self.node.publish_to_user(
            user_id, PreparedPush(push.type_id, envelope.encode_routed(push.payload))
        )

    def membership_changed(
        self, channel: Channel, changes: Sequence[tuple[str, PreparedPush]]
    ) -> None:
        topic = conversation_topic(channel.conversation_id)
        joined = [
            user
            for user, push in changes
            if _CHANGE.FromString(push.payload).change == _CHANGE.CHANGE_JOINED
        ]
        for user, push in changes:
            routed = envelope.encode_routed(push.payload, exclude=user)
            self.node.publish(topic, PreparedPush(push.type_id, routed))
            joined_with = [other for other in joined if other != user] if user in joined else []
            own = envelope.encode_membership(channel.last_seq, joined_with, push.payload)
            self.node.publish_to_user(user, PreparedPush(push.type_id, own))

    def history_reset(self, channel: Channel) -> None:
        control = PreparedPush(CONTROL, envelope.encode_control(op="reset"))
        self.node.publish(conversation_topic(channel.conversation_id), control)

    def direct_opened(self, conversation_id: str, user_ids: Sequence[str]) -> None:
        """A direct conversation was created: its users' nodes follow it."""
        control = PreparedPush(
            CONTROL, envelope.encode_control(op="follow", conversation=conversation_id, seq=0)
        )
        for user in user_ids:
            self.node.publish_to_user(user, control)

    # -- the sequencer's gaps ------------------------------------------------------------------

    def gap_opened(self, channel: Channel) -> None:
        followed = self._followed.get(channel.conversation_id)
        if followed is None or followed.room is not channel or followed.gap_timer is not None:
            return
        followed.gap_timer = asyncio.get_running_loop().call_later(
            self.settings.gap_timeout, self._gap_expired, followed
        )

    def _gap_expired(self, followed: _Followed) -> None:
        followed.gap_timer = None
        if self._followed.get(followed.conversation_id) is followed:
            self._spawn(self._fill(followed), f"fill {followed.conversation_id}")

    async def _fill(self, followed: _Followed) -> None:
        """Read the messages a gap is missing from storage (they are committed)."""
        room = followed.room
        if room is None or not room.pending:
            return
        start, upto = room.next_delivery_seq, min(room.pending)
        if upto > start:
            count = min(upto - start, self._limits.sync_page_max)
            messages = await self.storage.read_after(room.conversation_id, start - 1, count)
            for message in messages:
                self._delivery.sequence(room, message.epoch, message.seq, _message_push(message))
            if room.pending and room.next_delivery_seq < min(room.pending):
                # Trimmed meanwhile, or more than a page missing: the devices Sync those.
                self._delivery.skip_to(room, min(room.pending))
                self._resync_users(followed.users, [room.conversation_id], "messages missed")
        if room.pending:
            self.gap_opened(room)

    # -- gaps reported by the cluster ------------------------------------------------------

    def _conversation_missed(self, followed: _Followed) -> None:
        if self._followed.get(followed.conversation_id) is followed:
            self._reread([followed], "cluster: live events may have been missed")

    def _reread(self, followed: list[_Followed], reason: str) -> None:
        """Re-read these conversations soon (the gaps reported in one loop turn together)."""
        batch = self._rereads.setdefault(reason, {})
        for each in followed:
            batch[each.conversation_id] = each
        if not self._reread_scheduled:
            self._reread_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_rereads)

    def _start_rereads(self) -> None:
        self._reread_scheduled = False
        batches, self._rereads = self._rereads, {}
        for reason, batch in batches.items():
            self._spawn(self._reread_now(list(batch.values()), reason), "reread conversations")

    async def _reread_now(self, followed: list[_Followed], reason: str) -> None:
        """Re-read cached conversations after a gap; then tell their devices to Sync.

        Their devices are told only once this node has moved its sequencer past
        what it read: their ``Sync`` then starts after everything this node
        will not deliver live.
        """
        done = await asyncio.gather(*(self._reread_one(each) for each in followed))
        if reason:
            for each, reread in zip(followed, done, strict=True):
                if reread:
                    self._resync_users(each.users, [each.conversation_id], reason)

    async def _reread_one(self, followed: _Followed) -> bool:
        if followed.loading is not None:
            await asyncio.wait((followed.loading,))
        room = followed.room
        if room is None or self._followed.get(followed.conversation_id) is not followed:
            return False
        async with self._loads:
            stored = await self._conversations.read(followed.conversation_id)
        if stored is None:
            return False
        record = stored.record
        room.members.clear()
        room.members.update(stored.members)
        reset = record.epoch != room.epoch
        room.record = record
        if reset:
            self._delivery.reset(room, record.last_seq)
        else:
            # What this node did not receive live is for the devices' Sync.
            self._delivery.skip_to(room, record.last_seq + 1)
        return True

    def _user_missed(self, user_id: str) -> None:
        self._spawn(self._reconcile(user_id), f"reconcile {user_id}")

    async def _reconcile(self, user_id: str) -> None:
        """After a gap on a user's channel: end sessions ended elsewhere, re-read its
        conversations, tell its devices to Sync."""
        local = self._users.get(user_id)
        if local is None:
            return
        mine = self._sessions.of(user_id)
        rows = await self.registry.sessions([session.session_id for session in mine])
        for session in mine:
            row = rows.get(session.session_id)
            if row is None:
                self._sessions.end(
                    session, CloseReason.KICKED, "the session was ended elsewhere in the cluster"
                )
            elif row.ended is not None:
                self._sessions.end(session, row.ended, row.detail, replaced_by=row.replaced_by)
        if self._users.get(user_id) is not local or not self._sessions.has(user_id):
            return
        memberships = await self.storage.memberships(user_id)
        current = {m.conversation.conversation_id for m in memberships}
        for conversation_id in local.conversations - current:
            self._unfollow(user_id, conversation_id)
        await self._loaded([self._follow(user_id, c) for c in current - local.conversations])
        self._resync_users([user_id], None, "cluster: live events may have been missed")

    def _resync_users(
        self, user_ids: Iterable[str], conversation_ids: Sequence[str] | None, reason: str
    ) -> None:
        """Push ``SyncRequired`` to the users' devices here (one push per device per loop turn)."""
        for user in user_ids:
            for session in self._sessions.of(user):
                known = self._resync.get(session, set())
                if known is None or conversation_ids is None:
                    self._resync[session] = None
                else:
                    known.update(conversation_ids)
                    self._resync[session] = known
        self._resync_reason = reason
        if self._resync and not self._resync_scheduled:
            self._resync_scheduled = True
            asyncio.get_running_loop().call_soon(self._push_resync)

    def _push_resync(self) -> None:
        self._resync_scheduled = False
        pending, self._resync = self._resync, {}
        every: list[Session] = []
        for session, conversation_ids in pending.items():
            if session.closed:
                continue
            if conversation_ids is None:
                every.append(session)
                continue
            payload = events_pb2.SyncRequired(
                conversation_ids=sorted(conversation_ids), reason=self._resync_reason
            ).SerializeToString()
            push = PreparedPush(events.SYNC_REQUIRED, payload)
            self._delivery.publish(self._user_outbox, Fanout(push, sessions=[session]))
        if every:
            payload = events_pb2.SyncRequired(reason=self._resync_reason).SerializeToString()
            push = PreparedPush(events.SYNC_REQUIRED, payload)
            self._delivery.publish(self._user_outbox, Fanout(push, sessions=every))

    # -- presence (the `PresenceBoard` of `Presence`) ----------------------------------------------

    async def watch(self, user_ids: Sequence[str]) -> None:
        new = []
        for user in user_ids:
            watched = self._watched.get(user)
            if watched is None:
                subscription = self.node.subscribe(
                    presence_topic(user),
                    functools.partial(self._presence_event, user),
                    on_missed=functools.partial(self._presence_missed, user),
                )
                watched = self._watched[user] = _Watched(subscription)
            watched.count += 1
            if watched.changed_at_ms < 0:
                new.append(user)
        if new:
            for user in new:
                await self._subscribed(self._watched[user].subscription)
            await self._presence_read(new)

    def unwatch(self, user_id: str) -> None:
        watched = self._watched.get(user_id)
        if watched is None:
            return
        watched.count -= 1
        if watched.count <= 0:
            del self._watched[user_id]
            watched.subscription.close()

    async def online(self, user_ids: Sequence[str]) -> set[str]:
        states = await self.registry.presence(user_ids)
        return {user for user, (online, _) in states.items() if online}

    async def _presence_read(self, user_ids: Sequence[str]) -> None:
        for user, (online, changed_at_ms) in (await self.registry.presence(user_ids)).items():
            self._presence_seen(user, online, changed_at_ms)

    def _presence_seen(self, user_id: str, online: bool, changed_at_ms: int) -> None:
        """Apply a presence state unless this node has applied a newer one."""
        watched = self._watched.get(user_id)
        if watched is None or changed_at_ms < watched.changed_at_ms:
            return
        watched.changed_at_ms = changed_at_ms
        self._presence.set_online(user_id, online, changed_at_ms)

    def _presence_event(self, user_id: str, event: ClusterEvent) -> None:
        try:
            change = events_pb2.PresenceChanged.FromString(event.push.payload)
        except DecodeError as error:
            self._log_once("malformed", "dropped a malformed presence event: %s", error)
            return
        self._presence_seen(user_id, change.online, change.changed_at_ms)

    def _presence_missed(self, user_id: str, _: Subscription) -> None:
        self._spawn(self._presence_read([user_id]), f"presence {user_id}")

    def _announce(self, user_id: str, *, online: bool, changed_at_ms: int) -> None:
        """Tell every node watching the user (this one too) of a transition the registry made."""
        payload = events_pb2.PresenceChanged(
            user_id=user_id, online=online, changed_at_ms=changed_at_ms
        ).SerializeToString()
        self.node.publish(presence_topic(user_id), PreparedPush(events.PRESENCE_CHANGED, payload))

    def _offline_after(self, user_id: str, delay: float) -> None:
        if not self.closing:
            asyncio.get_running_loop().call_later(
                delay, lambda: self._spawn(self._check_offline(user_id), f"offline {user_id}")
            )

    async def _check_offline(self, user_id: str) -> None:
        if self.closing:
            return
        changed_at_ms, left = await self.registry.go_offline(
            user_id, self._limits.presence_grace_seconds
        )
        if changed_at_ms is not None:
            self._announce(user_id, online=False, changed_at_ms=changed_at_ms)
        elif left is not None:
            self._offline_after(user_id, left)

    # -- the node's lease ----------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        interval = self.settings.lease_interval
        grace = self._limits.presence_grace_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.registry.renew():
                    logger.error(
                        "node %s lost its registration (its lease expired): ending its sessions",
                        self.node.node_id,
                    )
                    for session in self._sessions.all():
                        self._sessions.end(
                            session,
                            CloseReason.SERVER_SHUTDOWN,
                            "this server lost its place in the cluster; reconnect",
                        )
                swept = await self.registry.sweep(grace)
                for user, changed_at_ms in swept.offline_users:
                    self._announce(user, online=False, changed_at_ms=changed_at_ms)
                retry, self._unregister_later = self._unregister_later, set()
                for session_id in retry:
                    await self._unregister(session_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._log_once("lease", "registry upkeep failed (retried): %s", error)

    # -- introspection ----------------------------------------------------------------------

    def followed(self) -> dict[str, set[str]]:
        """Conversation id -> the local users this node follows it for."""
        return {c: set(f.users) for c, f in self._followed.items()}

    def sizes(self) -> dict[str, int]:
        """Sizes of the per-user cluster state (for `ImCore.state_sizes`)."""
        return {
            "followed_conversations": len(self._followed),
            "cluster_users": len(self._users),
            "watched_presence": len(self._watched),
        }
