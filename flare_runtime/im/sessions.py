"""Sessions and devices: who is logged in where, and the multi-device policy.

`Sessions` is the registry of open sessions (user id -> session id -> `Session`,
in login order). It decides which older sessions a login replaces
(`DevicePolicy`), and ends sessions with a reason: the device gets
``SessionClosed`` and its sink is closed. It owns no presence and no delivery;
it tells its owner when a user's first session opens and when any session
closes (the `opened` / `closed` callbacks), and the core wires presence to them.
"""

from __future__ import annotations

import contextlib
import enum
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from flare.im.v1 import events_pb2

from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.im import events
from flare_runtime.im.limits import ImLimits
from flare_runtime.im.sinks import EventSink
from flare_runtime.server_connection import PreparedPush
from flare_runtime.status import StatusCode


class DevicePolicy(enum.Enum):
    """How many sessions one user may hold at once. The newest login always wins.

    Under every policy a login from a device id that already has a session
    replaces that session.
    """

    ALLOW_ALL = "allow_all"
    ONE_PER_PLATFORM = "one_per_platform"
    ONE_IN_TOTAL = "one_in_total"


class CloseReason(enum.IntEnum):
    """Why the server ended a session; values equal ``SessionClosed.Reason``."""

    REPLACED = 1
    SLOW_CONSUMER = 2
    KICKED = 3
    SERVER_SHUTDOWN = 4


class Session:
    """One logged-in device of a user, bound to the sink its events go to."""

    __slots__ = ("closed", "device_id", "platform", "session_id", "sink", "user_id", "watching")

    def __init__(
        self, session_id: str, user_id: str, device_id: str, platform: int, sink: EventSink
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.device_id = device_id
        self.platform = platform
        self.sink = sink
        self.closed = False
        self.watching: set[str] = set()
        """Users whose presence this session watches (kept by `Presence`)."""

    def __repr__(self) -> str:
        return f"Session({self.session_id!r}, user={self.user_id!r}, device={self.device_id!r})"


def require_open(session: Session) -> None:
    """FAILED_PRECONDITION once `session` has ended."""
    if session.closed:
        raise RpcError(StatusCode.FAILED_PRECONDITION, "the session is closed")


def new_session_id() -> str:
    """An unguessable session id (128 random bits): on gRPC it names the session."""
    return secrets.token_urlsafe(16)


class Device(Protocol):
    """What the multi-device policy looks at: a session's device id and platform."""

    @property
    def device_id(self) -> str: ...

    @property
    def platform(self) -> int: ...


DeviceT = TypeVar("DeviceT", bound=Device)


def replaced_by_policy(
    policy: DevicePolicy,
    existing: Sequence[DeviceT],
    device_id: str,
    platform: int,
    max_sessions: int,
) -> list[DeviceT]:
    """The sessions among `existing` (oldest first) that a login of `device_id` replaces.

    One rule for a process and for a cluster (where the session registry
    applies it to the user's sessions on every node, docs/cluster.md).
    """
    if policy is DevicePolicy.ONE_IN_TOTAL:
        return list(existing)
    if policy is DevicePolicy.ONE_PER_PLATFORM:
        return [s for s in existing if s.platform == platform or s.device_id == device_id]
    replaced = [s for s in existing if s.device_id == device_id]
    overflow = len(existing) - len(replaced) + 1 - max_sessions
    if overflow > 0:
        replaced += [s for s in existing if s not in replaced][:overflow]
    return replaced


class Sessions:
    """The open sessions of every user, and the multi-device policy applied at login.

    `opened(user_id)` is called when a user's first session opens;
    `closed(session, last)` after a session closed, `last` telling whether it
    was the user's last one.
    """

    def __init__(
        self,
        policy: DevicePolicy,
        limits: ImLimits,
        *,
        opened: Callable[[str], None],
        closed: Callable[[Session, bool], None],
    ) -> None:
        self.policy = policy
        self._limits = limits
        self.slow_consumers = 0
        """Sessions ended because their device did not read its events."""
        self._opened = opened
        self._closed = closed
        self.by_user: dict[str, dict[str, Session]] = {}
        """user id -> session id -> session, in login order (read by the fan-out)."""

    def login(
        self,
        user_id: str,
        device_id: str,
        platform: int,
        sink: EventSink,
        *,
        retire: Session | None = None,
        session_id: str | None = None,
        replace: Sequence[Session] | None = None,
    ) -> tuple[Session, list[Session]]:
        """Open a session; returns it and the sessions the policy replaced.

        Replaced sessions get ``SessionClosed(REASON_REPLACED)`` and their
        sinks are closed. `retire` (the session this login supersedes on the
        same connection) ends quietly instead: its sink stays open for the new
        session. Validate the request before calling: this never fails.

        On a cluster the registry decides for every node: it passes the new
        session's `session_id` and the local sessions to `replace` (the
        policy is then not applied here).
        """
        session = Session(session_id or new_session_id(), user_id, device_id, platform, sink)
        devices = self.by_user.get(user_id)
        if replace is None:
            existing = [s for s in devices.values() if s is not retire] if devices else []
            replaced = replaced_by_policy(
                self.policy, existing, device_id, platform, self._limits.max_sessions_per_user
            )
        else:
            replaced = [s for s in replace if s is not retire and not s.closed]
        first = not devices
        self.by_user.setdefault(user_id, {})[session.session_id] = session
        if first:
            self._opened(user_id)
        for old in replaced:
            self.end(
                old,
                CloseReason.REPLACED,
                f"replaced by a newer session of device {device_id!r}",
                replaced_by=session.session_id,
            )
        if retire is not None:
            self.drop(retire)
        return session, replaced

    def end(
        self, session: Session, reason: CloseReason, detail: str, *, replaced_by: str = ""
    ) -> None:
        """End `session`: push ``SessionClosed`` (not to a slow consumer) and close its sink."""
        if session.closed:
            return
        if not session.sink.closed:
            notice = events_pb2.SessionClosed(
                reason=int(reason),  # type: ignore[arg-type]
                detail=detail,
                replaced_by_session_id=replaced_by,
            )
            # A slow consumer's backlog is already full: do not add to it.
            if reason is not CloseReason.SLOW_CONSUMER:
                with contextlib.suppress(ConnectionClosedError):
                    session.sink.offer(
                        PreparedPush(events.SESSION_CLOSED, notice.SerializeToString()),
                        sys.maxsize,
                    )
            session.sink.close(f"{reason.name.lower()}: {detail}")
        self.drop(session)

    def drop(self, session: Session) -> None:
        """Forget `session` without telling its device (logout, connection gone). Idempotent."""
        if session.closed:
            return
        session.closed = True
        devices = self.by_user.get(session.user_id)
        last = False
        if devices is not None:
            devices.pop(session.session_id, None)
            if not devices:
                del self.by_user[session.user_id]
                last = True
        self._closed(session, last)

    def cut_off(self, failed: list[Session]) -> None:
        """End the sessions a fan-out could not deliver to (slow, or already closing)."""
        for session in failed:
            if session.sink.closed:
                self.drop(session)
            else:
                self.slow_consumers += 1
                self.end(
                    session,
                    CloseReason.SLOW_CONSUMER,
                    f"more than {self._limits.outbound_buffer_bytes} bytes of events not read",
                )

    def of(self, user_id: str) -> list[Session]:
        """The user's open sessions, oldest first."""
        return list(self.by_user.get(user_id, {}).values())

    def has(self, user_id: str) -> bool:
        """True while the user has an open session."""
        return user_id in self.by_user

    def all(self) -> list[Session]:
        """Every open session."""
        return [session for devices in self.by_user.values() for session in devices.values()]

    def count(self) -> int:
        """The number of open sessions."""
        return sum(len(devices) for devices in self.by_user.values())
