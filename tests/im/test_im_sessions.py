"""The session registry: the multi-device policy, quiet retirement, ending with a reason."""

from __future__ import annotations

import base64

from flare.im.v1 import events_pb2

from flare_runtime.im import events
from flare_runtime.im.limits import ImLimits
from flare_runtime.im.sessions import CloseReason, DevicePolicy, Session, Sessions
from flare_runtime.im.sinks import QueueSink

WEB, MOBILE = 1, 3


class Registry:
    """`Sessions` with its callbacks recorded."""

    def __init__(self, policy: DevicePolicy = DevicePolicy.ALLOW_ALL, **limits: int) -> None:
        self.opened: list[str] = []
        self.closed: list[tuple[str, bool]] = []
        self.sessions = Sessions(
            policy,
            ImLimits(**limits),
            opened=self.opened.append,
            closed=lambda session, last: self.closed.append((session.device_id, last)),
        )

    def login(
        self, user: str, device: str, platform: int = WEB, retire: Session | None = None
    ) -> tuple[Session, QueueSink, list[Session]]:
        sink = QueueSink()
        session, replaced = self.sessions.login(user, device, platform, sink, retire=retire)
        return session, sink, replaced


def closed_notices(sink: QueueSink) -> list[events_pb2.SessionClosed]:
    return [
        events_pb2.SessionClosed.FromString(payload)
        for type_id, payload in sink.take()
        if type_id == events.SESSION_CLOSED
    ]


def test_the_same_device_replaces_its_session_with_a_reason() -> None:
    registry = Registry()
    old, old_sink, _ = registry.login("alice", "phone")
    new, _, replaced = registry.login("alice", "phone")
    assert replaced == [old] and old.closed and old_sink.closed
    (notice,) = closed_notices(old_sink)
    assert notice.reason == events_pb2.SessionClosed.REASON_REPLACED
    assert notice.replaced_by_session_id == new.session_id
    assert registry.sessions.of("alice") == [new]
    assert registry.opened == ["alice"]  # the user never went without a session
    assert registry.closed == [("phone", False)]


def test_one_per_platform_and_the_session_cap() -> None:
    per_platform = Registry(DevicePolicy.ONE_PER_PLATFORM)
    phone, _, _ = per_platform.login("alice", "phone", MOBILE)
    web, _, _ = per_platform.login("alice", "web", WEB)
    tablet, _, replaced = per_platform.login("alice", "tablet", MOBILE)
    assert replaced == [phone] and per_platform.sessions.of("alice") == [web, tablet]

    capped = Registry(max_sessions_per_user=3)
    devices = [capped.login("alice", f"device-{index}")[0] for index in range(5)]
    assert capped.sessions.of("alice") == devices[2:]  # the oldest gave way


def test_a_retired_session_ends_quietly_and_its_sink_stays_open() -> None:
    """A second Login on one connection: the connection (sink) carries the new session."""
    registry = Registry()
    first, sink, _ = registry.login("alice", "phone")
    second, _, replaced = registry.login("alice", "phone", retire=first)
    assert replaced == [] and first.closed and not sink.closed
    assert closed_notices(sink) == []
    assert registry.sessions.of("alice") == [second]
    assert registry.closed == [("phone", False)] and registry.opened == ["alice"]


def test_ending_is_idempotent_and_a_slow_consumer_gets_no_notice() -> None:
    registry = Registry()
    slow, slow_sink, _ = registry.login("alice", "phone")
    kicked, kicked_sink, _ = registry.login("bob", "web")
    registry.sessions.end(slow, CloseReason.SLOW_CONSUMER, "behind")
    registry.sessions.end(slow, CloseReason.KICKED, "again")
    assert closed_notices(slow_sink) == [] and slow_sink.close_reason == "slow_consumer: behind"
    registry.sessions.end(kicked, CloseReason.KICKED, "bye")
    (notice,) = closed_notices(kicked_sink)
    assert notice.reason == events_pb2.SessionClosed.REASON_KICKED
    assert registry.closed == [("phone", True), ("web", True)]
    assert not registry.sessions.has("alice") and registry.sessions.count() == 0


def test_cut_off_drops_closed_sinks_and_ends_slow_ones() -> None:
    registry = Registry()
    gone, gone_sink, _ = registry.login("alice", "phone")
    slow, slow_sink, _ = registry.login("alice", "web")
    gone_sink.close("connection lost")
    registry.sessions.cut_off([gone, slow])
    assert gone.closed and slow.closed
    assert slow_sink.close_reason.startswith("slow_consumer: more than")


def test_session_ids_are_unguessable() -> None:
    registry = Registry(max_sessions_per_user=1000)
    ids = [registry.login("alice", f"d{index}")[0].session_id for index in range(200)]
    assert len(set(ids)) == 200
    for session_id in ids:
        assert len(base64.urlsafe_b64decode(session_id + "==")) == 16  # 128 random bits
