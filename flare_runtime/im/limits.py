"""What one client may ask of the IM core: `ImLimits`, and the per-user `RateLimit`.

Every request's cost is bounded: lists in a request have a maximum length,
replies are paged (by count and by bytes), every route that changes state or
fans events out is rate-limited per user, and fan-outs are cut into steps of
`ImLimits.fanout_batch` recipients so that no request holds the event loop
for long. A breach is a typed `RpcError` (INVALID_ARGUMENT for a request that
is too large, RESOURCE_EXHAUSTED past a rate), never a slow server.

Rate limits belong to the user, not to a session or a connection: logging in
again, on the same connection or another one, continues from the tokens the
user had left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flare_runtime.errors import RpcError
from flare_runtime.status import StatusCode


@dataclass(frozen=True, slots=True)
class ImLimits:
    """Limits the core enforces; each breach is a typed `RpcError`. docs/im.md lists them."""

    max_content_bytes: int = 64 * 1024
    """Largest serialized ``Content`` of one message (INVALID_ARGUMENT beyond)."""
    max_id_chars: int = 128
    """Longest device, client message, conversation or user id."""
    max_title_chars: int = 256
    """Longest room title."""
    max_member_limit: int = 10_000
    """Largest member limit a room may have (also the default)."""
    max_members_per_request: int = 1000
    """Most user ids one ``CreateRoom`` or ``AddMembers`` may name (INVALID_ARGUMENT beyond)."""
    outbound_buffer_bytes: int = 4 * 1024 * 1024
    """A device's backlog beyond this disconnects it as a slow consumer."""
    fanout_batch: int = 4096
    """Recipients one step of a fan-out visits before the event loop runs other work."""
    sync_page_default: int = 100
    """Messages per conversation a ``Sync`` returns when the request names no page size."""
    sync_page_max: int = 1000
    """Most messages per conversation one ``Sync`` returns."""
    history_page_default: int = 50
    """Messages a history page returns when the request names no page size."""
    max_sync_cursors: int = 1000
    """Most cursors in one ``Sync`` (INVALID_ARGUMENT beyond)."""
    max_reply_bytes: int = 1024 * 1024
    """Message bytes one ``Sync`` or ``GetHistory`` reply carries at most (``has_more`` beyond).

    A reply always carries at least one message when there is one, so a
    message of any allowed size can be read."""
    conversations_page_max: int = 1000
    """Most conversations one ``ListConversations`` reply lists (also the default page)."""
    presence_grace_seconds: float = 5.0
    """A user whose last session closed stays online this long (absorbs reconnects)."""
    max_watched_users: int = 1000
    """Users one session may watch for presence."""
    max_sessions_per_user: int = 32
    """Under ALLOW_ALL, the oldest session is replaced beyond this."""
    max_cached_rooms: int = 10_000
    """Conversations kept in memory; idle ones beyond this are dropped (and reloaded on use)."""
    room_idle_seconds: float = 60.0
    """A conversation unused this long may be dropped from memory."""
    # Per-user rates (token buckets: `*_rate_per_second` sustained, `*_burst` at once).
    send_rate_per_second: float = 50.0
    """``Send`` calls per user (retries count too: they cost a storage round trip)."""
    send_burst: int = 100
    """Calls at once before `send_rate_per_second` applies."""
    typing_rate_per_second: float = 5.0
    """``SetTyping`` calls per user."""
    typing_burst: int = 10
    """Calls at once before `typing_rate_per_second` applies."""
    ack_rate_per_second: float = 20.0
    """``Ack`` calls per user."""
    ack_burst: int = 100
    """Calls at once before `ack_rate_per_second` applies."""
    create_rate_per_second: float = 1.0
    """New conversations per user (``CreateRoom``, and ``OpenDirect`` when it creates one)."""
    create_burst: int = 20
    """Calls at once before `create_rate_per_second` applies."""
    membership_rate_per_second: float = 5.0
    """``JoinRoom``, ``LeaveRoom``, ``AddMembers``, ``KickMember``, ``SetMemberRole`` per user."""
    membership_burst: int = 50
    """Calls at once before `membership_rate_per_second` applies."""
    watch_rate_per_second: float = 2.0
    """``WatchPresence`` calls per user."""
    watch_burst: int = 20
    """Calls at once before `watch_rate_per_second` applies."""
    login_rate_per_second: float = 1.0
    """``Login`` calls per user."""
    login_burst: int = 20
    """Calls at once before `login_rate_per_second` applies."""

    def __post_init__(self) -> None:
        for name in (
            "max_members_per_request",
            "fanout_batch",
            "max_sync_cursors",
            "max_reply_bytes",
            "conversations_page_max",
            "max_cached_rooms",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ImLimits.{name} must be at least 1")


class RateLimit:
    """A token bucket per user: `rate` tokens a second, at most `burst` saved up.

    A user's bucket is forgotten once it has filled up again (it then equals a
    fresh one), so memory follows the users active in the last ``burst / rate``
    seconds. Forgetting is amortised: a sweep runs when the table has doubled.
    """

    __slots__ = ("_buckets", "_burst", "_rate", "_sweep_at", "what")

    def __init__(self, what: str, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"{what}: the rate must be positive and the burst at least 1")
        self.what = what
        """What is limited, for the error message ("send", "typing", ...)."""
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, list[float]] = {}
        """user id -> [tokens, when they were counted]."""
        self._sweep_at = 1024

    def take(self, user_id: str) -> None:
        """Spend one of `user_id`'s tokens; RESOURCE_EXHAUSTED when none is left."""
        now = time.monotonic()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            self._buckets[user_id] = [self._burst - 1.0, now]
            return
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        tokens = min(tokens, self._burst)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"{self.what} rate limit: {self._rate:g}/s per user (burst {self._burst:g})",
            )
        bucket[0] = tokens - 1.0

    def _sweep(self, now: float) -> None:
        rate, burst = self._rate, self._burst
        full = [
            user
            for user, (tokens, counted) in self._buckets.items()
            if tokens + (now - counted) * rate >= burst
        ]
        for user in full:
            del self._buckets[user]
        self._sweep_at = max(1024, 2 * len(self._buckets))

    def tracked_users(self) -> int:
        """Users whose bucket is not full (after forgetting the full ones)."""
        self._sweep(time.monotonic())
        return len(self._buckets)


class Rates:
    """The per-user rate limits of every route that changes state or fans events out."""

    __slots__ = ("ack", "create", "login", "membership", "send", "typing", "watch")

    def __init__(self, limits: ImLimits) -> None:
        self.send = RateLimit("send", limits.send_rate_per_second, limits.send_burst)
        self.typing = RateLimit("typing", limits.typing_rate_per_second, limits.typing_burst)
        self.ack = RateLimit("ack", limits.ack_rate_per_second, limits.ack_burst)
        self.create = RateLimit(
            "conversation creation", limits.create_rate_per_second, limits.create_burst
        )
        self.membership = RateLimit(
            "membership change", limits.membership_rate_per_second, limits.membership_burst
        )
        self.watch = RateLimit("presence watch", limits.watch_rate_per_second, limits.watch_burst)
        self.login = RateLimit("login", limits.login_rate_per_second, limits.login_burst)

    def tracked_users(self) -> int:
        """Entries held by every limit together (users with a bucket not yet refilled)."""
        return sum(
            limit.tracked_users()
            for limit in (
                self.send,
                self.typing,
                self.ack,
                self.create,
                self.membership,
                self.watch,
                self.login,
            )
        )


def check_id(value: str, what: str, limit: int) -> None:
    """INVALID_ARGUMENT unless `value` has 1 to `limit` characters."""
    if not value or len(value) > limit:
        raise RpcError(StatusCode.INVALID_ARGUMENT, f"{what} must be 1-{limit} characters")


def check_count(count: int, what: str, limit: int) -> None:
    """INVALID_ARGUMENT when a request lists more than `limit` items."""
    if count > limit:
        raise RpcError(StatusCode.INVALID_ARGUMENT, f"at most {limit} {what} per request")


def page_size(limit: int, default: int, maximum: int) -> int:
    """The page a request asks for: `default` for 0, INVALID_ARGUMENT beyond `maximum`."""
    if limit < 0:
        raise RpcError(StatusCode.INVALID_ARGUMENT, "limit must not be negative")
    if limit > maximum:
        raise RpcError(StatusCode.INVALID_ARGUMENT, f"limit is at most {maximum}")
    return limit or default
