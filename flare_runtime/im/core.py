"""The IM domain core: transport-free sessions, conversations, delivery and recovery.

`ImCore` holds every rule of docs/im.md and no I/O of its own: durable state
goes through a `Storage`, events leave through each session's `EventSink`.
The service layer (`flare_runtime.im.service`) maps RPCs onto these methods;
tests drive them directly, without sockets.

`ImCore` is the facade over the parts, each in its own module:

* `flare_runtime.im.sessions` - sessions, devices and the multi-device policy;
* `flare_runtime.im.conversations` - rooms and direct conversations,
  membership and roles, the bounded cache of conversations in memory;
* `flare_runtime.im.delivery` - each conversation's sequencer and the fan-out
  of events to devices (gap-free order, bounded steps, slow consumers);
* `flare_runtime.im.history` - send, sync, history, receipts and retention;
* `flare_runtime.im.presence` - the online set, grace timers, watchers and
  their visibility policy, typing notices;
* `flare_runtime.im.limits` - `ImLimits` and the per-user rate limits.

On a cluster (``ImCore(PostgresStorage(...), cluster=node)``) the core of
each node joins the others through `flare_runtime.im.cluster`: sessions,
presence, kicks and every event hold across nodes (docs/cluster.md).

Failures are `RpcError`s with the codes the API documents (NOT_FOUND,
PERMISSION_DENIED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from flare_runtime.cluster import ClusterNode
from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.im.cluster import ClusterSettings, ImCluster
from flare_runtime.im.conversations import (
    Conversations,
    ConversationSummary,
    ConversationView,
)
from flare_runtime.im.delivery import Delivery
from flare_runtime.im.history import (
    History,
    RetentionPolicy,
    SendResult,
    SyncCursor,
    SyncResult,
)
from flare_runtime.im.limits import ImLimits, Rates, check_id
from flare_runtime.im.presence import (
    EveryonePolicy,
    Presence,
    PresencePolicy,
    SharedConversationPolicy,
)
from flare_runtime.im.push import Device, OfflinePush, PushSettings
from flare_runtime.im.sessions import CloseReason, DevicePolicy, Session, Sessions
from flare_runtime.im.sinks import EventSink
from flare_runtime.im.storage.base import ConversationRecord, Receipt, Role, Storage, StoredMessage
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.sharing import sharing_problems
from flare_runtime.status import StatusCode

__all__ = [
    "CloseReason",
    "ConversationSummary",
    "ConversationView",
    "DevicePolicy",
    "EveryonePolicy",
    "ImCore",
    "ImLimits",
    "PresencePolicy",
    "RetentionPolicy",
    "SendResult",
    "Session",
    "SharedConversationPolicy",
    "SyncCursor",
    "SyncResult",
]


class ImCore:
    """Sessions, conversations, delivery, receipts, typing and presence over a `Storage`.

    Call `start` before use and `close` at the end. Every method runs on the
    event loop that called `start`; none blocks it (storage work is awaited,
    fan-outs are cut into steps).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        policy: DevicePolicy = DevicePolicy.ALLOW_ALL,
        limits: ImLimits | None = None,
        retention: RetentionPolicy | None = None,
        presence_policy: PresencePolicy | None = None,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        cluster: ClusterNode | None = None,
        cluster_settings: ClusterSettings | None = None,
        push: PushSettings | None = None,
    ) -> None:
        """`cluster`: this process's node of a cluster (docs/cluster.md); `storage` must then
        be shared by every node (`PostgresStorage`). ConfigurationError otherwise.
        `push`: notify a provider of messages stored for offline users
        (`flare_runtime.im.push`, docs/push-providers.md)."""
        if cluster is not None and not storage.shared:
            raise ConfigurationError(
                f"the IM on a cluster needs storage every node shares (PostgresStorage); "
                f"{type(storage).__name__} belongs to one process: run one process, "
                "or move the IM to PostgreSQL"
            )
        self.storage = storage
        self.limits = limits = limits or ImLimits()
        self._now_ms = wall_clock_ms
        self._rates = rates = Rates(limits)
        self._sessions = Sessions(
            policy, limits, opened=self._user_opened, closed=self._session_closed
        )
        self._delivery = delivery = Delivery(self._sessions, limits)
        self._conversations = conversations = Conversations(
            storage, delivery, limits, rates, wall_clock_ms
        )
        self._history = History(
            storage, conversations, delivery, limits, rates, retention, wall_clock_ms
        )
        self._presence = Presence(
            self._sessions,
            delivery,
            conversations,
            limits,
            rates,
            presence_policy or SharedConversationPolicy(storage),
            wall_clock_ms,
        )
        self._closing = False
        self.cluster: ImCluster | None = None
        """The IM's side of the cluster node (None in a single process)."""
        if cluster is not None:
            assert isinstance(storage, PostgresStorage)
            self.cluster = ImCluster(
                cluster,
                storage,
                self._sessions,
                self._delivery,
                conversations,
                self._presence,
                limits,
                cluster_settings or ClusterSettings(),
            )
        self.push: OfflinePush | None = None
        """Offline push (None unless `push` settings were given)."""
        if push is not None:
            self.push = OfflinePush(push, self._live_devices)
            self._history.on_stored = self.push.message_stored

    @property
    def policy(self) -> DevicePolicy:
        """The multi-device policy applied at each login."""
        return self._sessions.policy

    @property
    def retention(self) -> RetentionPolicy | None:
        """The automatic retention policy (None: history is kept)."""
        return self._history.retention

    # -- lifecycle ---------------------------------------------------------------

    def process_sharing_problem(self) -> str | None:
        """Why copies of this core in several worker processes would not work together
        (`flare_runtime.sharing`): its storage's reason; without a cluster node, its live
        delivery, which reaches only the sessions of its own process; else its node's."""
        problems = sharing_problems(self.storage)
        if problems:
            return problems[0]
        cluster = self.cluster
        if cluster is None:
            return (
                "ImCore without a cluster node delivers live events only to the sessions "
                "of its own process; with several workers run it on a cluster (RedisBroker)"
            )
        problems = sharing_problems(cluster.node)
        return problems[0] if problems else None

    async def start(self) -> None:
        """Open the storage; on a cluster, join it (the node is started if it is not)."""
        await self.storage.open()
        if self.cluster is not None:
            await self.cluster.start()
        if self.push is not None:
            await self.push.start()

    async def _live_devices(self, user_ids: Sequence[str]) -> dict[str, list[Device]]:
        """Who among `user_ids` has live sessions: on a cluster on any node, else here."""
        if self.cluster is not None:
            return await self.cluster.registry.live_devices(user_ids)
        by_user = self._sessions.by_user
        return {
            user: [(session.device_id, session.platform) for session in by_user[user].values()]
            for user in user_ids
            if user in by_user
        }

    async def close(self) -> None:
        """Close every session (REASON_SERVER_SHUTDOWN), leave the cluster, close the storage.

        The `ClusterNode` stays open: its owner closes it.
        """
        self._closing = True
        self._presence.close()
        if self.cluster is not None:
            self.cluster.closing = True
        for session in self._sessions.all():
            self._sessions.end(session, CloseReason.SERVER_SHUTDOWN, "server shutting down")
        await self._history.close()
        if self.push is not None:
            await self.push.close()
        if self.cluster is not None:
            await self.cluster.close()
        await self.storage.close()

    def now_ms(self) -> int:
        """Server wall-clock time in milliseconds since the Unix epoch."""
        return self._now_ms()

    # -- sessions ----------------------------------------------------------------

    def login(
        self,
        user_id: str,
        device_id: str,
        platform: int,
        sink: EventSink,
        *,
        retire: Session | None = None,
    ) -> tuple[Session, list[Session]]:
        """Open a session for `device_id`; returns it and the sessions it replaced.

        Replaced sessions get ``SessionClosed(REASON_REPLACED)`` and their
        sinks are closed. The user is online from now on. `retire` is the
        session this login supersedes on the same connection: it ends quietly,
        and only once the login succeeded (a refused login changes nothing).

        One process only; `open_session` works on a cluster too.
        """
        if self.cluster is not None:
            raise ConfigurationError("on a cluster, sessions open with `await open_session(...)`")
        self._check_login(user_id, device_id)
        return self._sessions.login(user_id, device_id, platform, sink, retire=retire)

    def _check_login(self, user_id: str, device_id: str) -> None:
        check_id(user_id, "user id", self.limits.max_id_chars)
        check_id(device_id, "device id", self.limits.max_id_chars)
        if self._closing:
            raise RpcError(StatusCode.UNAVAILABLE, "server shutting down")
        self._rates.login.take(user_id)

    async def open_session(
        self,
        user_id: str,
        device_id: str,
        platform: int,
        sink: EventSink,
        *,
        retire: Session | None = None,
    ) -> tuple[Session, list[str]]:
        """Open a session, in one process or on a cluster; returns it and the ids it replaced.

        As `login`; on a cluster the device policy counts the user's sessions
        on every node (those replaced elsewhere get ``SessionClosed`` from
        their own node), and this returns once the node receives every live
        event of the user's conversations, so a ``Sync`` right after misses
        nothing.
        """
        self._check_login(user_id, device_id)
        if self.cluster is None:
            session, replaced = self._sessions.login(
                user_id, device_id, platform, sink, retire=retire
            )
            return session, [old.session_id for old in replaced]
        return await self.cluster.login(
            user_id, device_id, platform, sink, policy=self._sessions.policy, retire=retire
        )

    def logout(self, session: Session) -> None:
        """End `session` because its device left (logout or connection closed). Idempotent."""
        self._sessions.drop(session)

    def kick_session(self, session: Session, detail: str = "kicked by the server") -> None:
        """End `session` with ``SessionClosed(REASON_KICKED)`` and close its sink."""
        self._sessions.end(session, CloseReason.KICKED, detail)

    async def kick(self, session_id: str, detail: str = "kicked by the server") -> bool:
        """End the session `session_id` wherever it is (a cluster: on any node) with
        ``SessionClosed(REASON_KICKED)``; False when there is no such session."""
        if self.cluster is not None:
            return await self.cluster.kick(session_id, detail)
        for session in self._sessions.all():
            if session.session_id == session_id:
                self.kick_session(session, detail)
                return True
        return False

    def sessions_of(self, user_id: str) -> list[Session]:
        """The user's open sessions, oldest first."""
        return self._sessions.of(user_id)

    def _user_opened(self, user_id: str) -> None:
        if self.cluster is None:  # on a cluster, the registry tells presence
            self._presence.went_online(user_id)

    def _session_closed(self, session: Session, last: bool) -> None:
        self._presence.forget(session)
        if self.cluster is not None:
            self.cluster.session_closed(session, last)
        elif last:
            self._presence.went_offline_later(session.user_id)

    # -- presence and typing -------------------------------------------------------

    def is_online(self, user_id: str) -> bool:
        """True while the user has a session or is within the offline grace period.

        On a cluster this node knows it for the users its sessions watch.
        """
        return self._presence.is_online(user_id)

    async def watch_presence(
        self, session: Session, user_ids: Sequence[str], *, unwatch: bool = False
    ) -> dict[str, bool]:
        """Start (or stop) pushing `user_ids`' presence changes to `session`.

        Returns the users' presence now. PERMISSION_DENIED for a user the
        presence policy hides; RESOURCE_EXHAUSTED beyond
        `ImLimits.max_watched_users`.
        """
        return await self._presence.watch(session, user_ids, unwatch=unwatch)

    async def online_members(self, session: Session, conversation_id: str) -> list[str]:
        """Members of the conversation online now, sorted."""
        return await self._presence.online_members(session, conversation_id)

    async def set_typing(self, session: Session, conversation_id: str, typing: bool) -> None:
        """Tell the other members' devices that this device is (not) typing. Nothing is stored."""
        await self._presence.set_typing(session, conversation_id, typing)

    # -- conversations -----------------------------------------------------------

    async def create_room(
        self,
        session: Session,
        title: str,
        member_user_ids: Sequence[str],
        *,
        open: bool = False,
        member_limit: int = 0,
    ) -> ConversationView:
        """Create a room owned by the session's user, with the given other members."""
        return await self._conversations.create_room(
            session, title, member_user_ids, open=open, member_limit=member_limit
        )

    async def ensure_room(
        self, conversation_id: str, title: str, *, open: bool = True, owner: str = ""
    ) -> ConversationView:
        """Create a room with a fixed id unless it exists (an operator action, e.g. a lobby).

        `owner`, when given, becomes the first member (OWNER).
        """
        return await self._conversations.ensure_room(conversation_id, title, open=open, owner=owner)

    async def open_direct(self, session: Session, peer_user_id: str) -> ConversationView:
        """The one-to-one conversation of the session's user and `peer_user_id` (created once)."""
        return await self._conversations.open_direct(session, peer_user_id)

    async def get_conversation(self, session: Session, conversation_id: str) -> ConversationView:
        """The conversation and its members (members only)."""
        return await self._conversations.get_conversation(session, conversation_id)

    async def list_conversations(
        self, session: Session, *, after: str = "", limit: int = 0
    ) -> tuple[list[ConversationSummary], bool]:
        """A page of the user's conversations (by id, after `after`) and whether more follow."""
        return await self._conversations.list_conversations(session, after=after, limit=limit)

    async def join_room(self, session: Session, conversation_id: str) -> ConversationView:
        """Join an open room (no-op for a member)."""
        return await self._conversations.join_room(session, conversation_id)

    async def leave_room(self, session: Session, conversation_id: str) -> None:
        """Leave a room. The owner must hand ownership over first (FAILED_PRECONDITION)."""
        await self._conversations.leave_room(session, conversation_id)

    async def add_members(
        self, session: Session, conversation_id: str, user_ids: Sequence[str]
    ) -> ConversationView:
        """Add users to a room (owner or admin); members already in are skipped."""
        return await self._conversations.add_members(session, conversation_id, user_ids)

    async def kick_member(self, session: Session, conversation_id: str, user_id: str) -> None:
        """Remove `user_id` from a room: the owner removes anyone, an admin removes members."""
        await self._conversations.kick_member(session, conversation_id, user_id)

    async def set_member_role(
        self, session: Session, conversation_id: str, user_id: str, role: Role
    ) -> ConversationView:
        """Change a member's role (owner only). Making someone OWNER makes the caller ADMIN."""
        return await self._conversations.set_member_role(session, conversation_id, user_id, role)

    # -- messages ----------------------------------------------------------------

    async def send(
        self, session: Session, conversation_id: str, client_message_id: str, content: bytes
    ) -> SendResult:
        """Store a message durably and push it to every online device of every member.

        `content` is a serialized ``flare.im.v1.Content``. A retry with the
        same `client_message_id` returns the original with ``duplicate=True``
        and pushes nothing. RESOURCE_EXHAUSTED past the user's send rate.
        """
        return await self._history.send(session, conversation_id, client_message_id, content)

    async def sync(
        self, session: Session, cursors: Sequence[SyncCursor], limit: int = 0
    ) -> list[SyncResult]:
        """For each cursor, the messages after it (in order, at most `limit`) or a re-sync."""
        return await self._history.sync(session, cursors, limit)

    async def history(
        self, session: Session, conversation_id: str, before_seq: int = 0, limit: int = 0
    ) -> tuple[list[StoredMessage], bool, ConversationView]:
        """Up to `limit` messages before `before_seq` (0: newest), oldest first, and has_more."""
        return await self._history.history(session, conversation_id, before_seq, limit)

    async def ack(
        self, session: Session, conversation_id: str, delivered_seq: int = 0, read_seq: int = 0
    ) -> tuple[Receipt, int]:
        """Move the user's receipt forward; returns it and the unread count."""
        return await self._history.ack(session, conversation_id, delivered_seq, read_seq)

    # -- retention ---------------------------------------------------------------

    async def apply_retention(
        self, conversation_id: str, *, keep_last: int | None = None, max_age_ms: int | None = None
    ) -> ConversationRecord:
        """Trim a conversation's history by count and/or age (an operator action)."""
        return await self._history.apply_retention(
            conversation_id, keep_last=keep_last, max_age_ms=max_age_ms
        )

    async def reset_history(self, conversation_id: str) -> ConversationRecord:
        """Drop a conversation's history and start a new epoch (clients must re-sync)."""
        return await self._history.reset_history(conversation_id)

    # -- introspection -----------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """What the IM has done so far (metrics and the admin API read them):
        ``sent`` messages stored, ``delivered`` events handed to devices, ``syncs``
        answered, ``slow_consumers`` sessions cut off, ``sessions`` open now, and
        offline push's ``push_notified`` and ``push_dropped`` (0 without push)."""
        return {
            "sent": self._history.sent,
            "delivered": self._delivery.delivered,
            "syncs": self._history.syncs,
            "slow_consumers": self._sessions.slow_consumers,
            "sessions": self._sessions.count(),
            "push_notified": self.push.notified if self.push is not None else 0,
            "push_dropped": self.push.dropped if self.push is not None else 0,
        }

    def sessions(self) -> list[Session]:
        """Every session open on this node."""
        return list(self._sessions.all())

    def state_sizes(self) -> dict[str, int]:
        """Sizes of the per-user state (to check that closed sessions leave nothing behind).

        ``rate_limited_users`` counts per-user rate buckets not yet refilled
        (a full bucket is forgotten); ``cached_rooms`` the conversations in memory.
        """
        return {
            "users_with_sessions": len(self._sessions.by_user),
            "sessions": self._sessions.count(),
            **self._presence.sizes(),
            "rate_limited_users": self._rates.tracked_users(),
            "cached_rooms": self._conversations.cached_count(),
            **(self.cluster.sizes() if self.cluster is not None else {}),
        }
