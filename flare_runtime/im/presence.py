"""Presence: who is online, the grace period, who may watch whom, typing notices.

A user is online while it has a session. When its last session closes it
stays online for `ImLimits.presence_grace_seconds`, so a quick reconnect does
not flap; then its watchers get ``PresenceChanged(online=false)``.

Who may watch whom is a `PresencePolicy`, asked when a watch starts. The
default, `SharedConversationPolicy`, lets users see each other's presence
when they share a conversation; `EveryonePolicy` lets anyone see anyone (a
directory-style application); an application may pass its own (friends
lists, organisations...). A watch lasts as long as the watching session.

Presence changes go to the watching devices through one outbox (`Delivery`),
so each watcher sees a user's changes in the order they happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from flare.im.v1 import events_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im import events
from flare_runtime.im.conversations import Conversations
from flare_runtime.im.delivery import Delivery, Fanout, Outbox
from flare_runtime.im.limits import ImLimits, Rates, check_id
from flare_runtime.im.sessions import Session, Sessions, require_open
from flare_runtime.im.storage.base import Storage
from flare_runtime.server_connection import PreparedPush
from flare_runtime.status import StatusCode


class PresencePolicy(Protocol):
    """Decides whose presence a user may watch."""

    async def visible(self, watcher_user_id: str, user_ids: Sequence[str]) -> set[str]:
        """The users among `user_ids` whose presence `watcher_user_id` may see."""


class PresenceBoard(Protocol):
    """Where a cluster keeps presence (`flare_runtime.im.cluster`): the users' states as every
    node reports them, instead of this process's sessions and timers."""

    async def watch(self, user_ids: Sequence[str]) -> None:
        """Follow these users' presence (once per watching session); their states are
        known (`Presence.set_online`) when this returns."""

    def unwatch(self, user_id: str) -> None:
        """One watching session less for `user_id`."""

    async def online(self, user_ids: Sequence[str]) -> set[str]:
        """Those of `user_ids` online now."""


class SharedConversationPolicy:
    """Users see each other's presence when they share a conversation (the default)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def visible(self, watcher_user_id: str, user_ids: Sequence[str]) -> set[str]:
        others = [user for user in user_ids if user != watcher_user_id]
        shared = await self._storage.peers(watcher_user_id, others) if others else set()
        return shared | ({watcher_user_id} & set(user_ids))


class EveryonePolicy:
    """Anyone may watch anyone's presence (opt in: it tells strangers when a user is online)."""

    async def visible(self, watcher_user_id: str, user_ids: Sequence[str]) -> set[str]:
        return set(user_ids)


class Presence:
    """The online set, the grace timers, the watchers, and typing notices."""

    def __init__(  # noqa: PLR0917 - built in one place, by ImCore
        self,
        sessions: Sessions,
        delivery: Delivery,
        conversations: Conversations,
        limits: ImLimits,
        rates: Rates,
        policy: PresencePolicy,
        now_ms: Callable[[], int],
    ) -> None:
        self._sessions = sessions
        self._delivery = delivery
        self._conversations = conversations
        self._limits = limits
        self._rates = rates
        self.policy = policy
        self._now_ms = now_ms
        self._online: set[str] = set()
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        self._watchers: dict[str, set[Session]] = {}
        """user id -> sessions watching its presence."""
        self._outbox = Outbox()
        self.closing = False
        """Set at shutdown: users going offline then are not announced."""
        self.board: PresenceBoard | None = None
        """Set on a cluster: presence comes from it (`set_online`), not from local sessions;
        `is_online` then knows the users watched on this node."""

    # -- online and offline --------------------------------------------------------

    def is_online(self, user_id: str) -> bool:
        """True while the user has a session or is within the offline grace period."""
        return user_id in self._online

    def went_online(self, user_id: str) -> None:
        """The user's first session opened."""
        timer = self._offline_timers.pop(user_id, None)
        if timer is not None:
            timer.cancel()  # reconnected within the grace period: no flap
            return
        if user_id not in self._online:
            self._online.add(user_id)
            self._changed(user_id, online=True)

    def went_offline_later(self, user_id: str) -> None:
        """The user's last session closed: offline after the grace period."""
        if self.closing or user_id not in self._online:
            return
        loop = asyncio.get_running_loop()
        self._offline_timers[user_id] = loop.call_later(
            self._limits.presence_grace_seconds, self._grace_expired, user_id
        )

    def _grace_expired(self, user_id: str) -> None:
        self._offline_timers.pop(user_id, None)
        if self._sessions.has(user_id):
            return
        self._online.discard(user_id)
        self._changed(user_id, online=False)

    def set_online(self, user_id: str, online: bool, changed_at_ms: int) -> None:
        """The user's presence as the cluster reports it: tell the watchers when it changed."""
        if (user_id in self._online) == online:
            return
        if online:
            self._online.add(user_id)
        else:
            self._online.discard(user_id)
        self._changed(user_id, online=online, changed_at_ms=changed_at_ms)

    def _changed(self, user_id: str, *, online: bool, changed_at_ms: int = 0) -> None:
        watchers = self._watchers.get(user_id)
        if not watchers:
            return
        payload = events_pb2.PresenceChanged(
            user_id=user_id, online=online, changed_at_ms=changed_at_ms or self._now_ms()
        ).SerializeToString()
        event = PreparedPush(events.PRESENCE_CHANGED, payload)
        self._delivery.publish(self._outbox, Fanout(event, sessions=list(watchers)))

    def close(self) -> None:
        """Stop the grace timers (shutdown)."""
        self.closing = True
        for timer in self._offline_timers.values():
            timer.cancel()
        self._offline_timers.clear()

    # -- watching ----------------------------------------------------------------------

    def forget(self, session: Session) -> None:
        """Drop every watch of a session that ended."""
        for watched in session.watching:
            self._unwatch(session, watched)
        session.watching.clear()

    def _unwatch(self, session: Session, user_id: str) -> None:
        watchers = self._watchers.get(user_id)
        if watchers is not None and session in watchers:
            watchers.discard(session)
            if not watchers:
                del self._watchers[user_id]
            if self.board is not None:
                self.board.unwatch(user_id)
                if not watchers:
                    self._online.discard(user_id)  # no longer followed: unknown here

    async def watch(
        self, session: Session, user_ids: Sequence[str], *, unwatch: bool = False
    ) -> dict[str, bool]:
        """Start (or stop) pushing `user_ids`' presence changes to `session`.

        Returns the users' presence now (for `unwatch`, of those it watched).
        PERMISSION_DENIED, watching nothing, when the policy hides one of the
        users; RESOURCE_EXHAUSTED beyond `ImLimits.max_watched_users`.
        """
        require_open(session)
        limits = self._limits
        if len(user_ids) > limits.max_watched_users:
            raise self._too_many()
        for user_id in user_ids:
            check_id(user_id, "user id", limits.max_id_chars)
        if unwatch:
            watched = [user for user in user_ids if user in session.watching]
            for user_id in watched:
                session.watching.discard(user_id)
                self._unwatch(session, user_id)
            return {user: user in self._online for user in watched}
        self._rates.watch.take(session.user_id)
        new = [user for user in dict.fromkeys(user_ids) if user not in session.watching]
        if len(session.watching) + len(new) > limits.max_watched_users:
            raise self._too_many()
        if new:
            visible = await self.policy.visible(session.user_id, new)
            hidden = [user for user in new if user not in visible]
            if hidden:
                raise RpcError(
                    StatusCode.PERMISSION_DENIED,
                    f"the presence of {hidden[0]!r} is not visible to {session.user_id!r}",
                )
            require_open(session)  # it may have ended while the policy was asked
            if self.board is not None:
                await self.board.watch(new)
                if session.closed or len(session.watching | set(new)) > limits.max_watched_users:
                    for user_id in new:
                        self.board.unwatch(user_id)
                    require_open(session)
                    raise self._too_many()
            elif len(session.watching | set(new)) > limits.max_watched_users:
                raise self._too_many()
            for user_id in new:
                if user_id in session.watching:  # a concurrent request watched it meanwhile
                    if self.board is not None:
                        self.board.unwatch(user_id)
                    continue
                session.watching.add(user_id)
                self._watchers.setdefault(user_id, set()).add(session)
        return {user: user in self._online for user in user_ids}

    def _too_many(self) -> RpcError:
        return RpcError(
            StatusCode.RESOURCE_EXHAUSTED,
            f"a session may watch at most {self._limits.max_watched_users} users",
        )

    # -- conversations ---------------------------------------------------------------

    async def online_members(self, session: Session, conversation_id: str) -> list[str]:
        """Members of the conversation online now, sorted."""
        room = await self._conversations.member_room(session, conversation_id)
        if self.board is not None:
            return sorted(await self.board.online(list(room.members)))
        online = self._online
        return sorted(user for user in room.members if user in online)

    async def set_typing(self, session: Session, conversation_id: str, typing: bool) -> None:
        """Tell the other members' devices that this device is (not) typing. Nothing is stored."""
        self._rates.typing.take(session.user_id)
        room = await self._conversations.member_room(session, conversation_id)
        payload = events_pb2.TypingChanged(
            conversation_id=conversation_id,
            user_id=session.user_id,
            device_id=session.device_id,
            typing=typing,
        ).SerializeToString()
        event = PreparedPush(events.TYPING_CHANGED, payload)
        relay = self._delivery.relay
        if relay is not None:
            relay.conversation_event(room, event, skip=session)
        else:
            self._delivery.publish(room, Fanout(event, room.members, skip=session))

    def sizes(self) -> dict[str, int]:
        """Sizes of the per-user presence state."""
        return {
            "watched_users": len(self._watchers),
            "online_users": len(self._online),
            "offline_timers": len(self._offline_timers),
        }
