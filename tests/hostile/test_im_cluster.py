"""Hostile input on the IM's cluster channels: well-formed cluster envelopes whose IM payload
is not one (another program, or a node of an incompatible version, on the same Redis).

Each such event is dropped, the failure is logged once, and the conversation's
messages keep reaching the devices in order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import pytest
from flare.im.v1 import content_pb2, events_pb2

from flare_runtime.im import events
from flare_runtime.im.cluster.envelope import CONTROL
from flare_runtime.im.cluster.relay import conversation_topic
from flare_runtime.im.sinks import QueueSink
from flare_runtime.server_connection import PreparedPush
from flare_runtime.testing.cluster import eventually
from flare_runtime.testing.im_cluster import POSTGRES_DSN, ImNodes


@pytest.fixture
async def nodes() -> AsyncIterator[ImNodes]:
    import asyncpg

    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        reason = f"PostgreSQL is not reachable at {POSTGRES_DSN} ({error})"
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip("SKIPPED LOUDLY: " + reason)
    await connection.close()
    rig = ImNodes(POSTGRES_DSN)
    try:
        yield rig
    finally:
        await rig.close()


async def test_malformed_im_events_on_a_conversation_channel_are_dropped_and_logged_once(
    nodes: ImNodes, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: on a followed conversation's channel, 50 events of each IM push type (and the
    control type) whose payloads are shorter than their header, between two real messages.
    Outcome: the device gets both messages (seq 1, 2) and nothing else; one warning per
    node in the log, not 200."""
    a, b = await nodes.core(), await nodes.core()
    sink = QueueSink()
    bob, _ = await b.open_session("bob", "phone", 1, sink)
    alice, _ = await a.open_session("alice", "laptop", 1, QueueSink())
    room_id = (await a.create_room(alice, "r", ["bob"])).record.conversation_id
    assert b.cluster is not None and a.cluster is not None
    await eventually(lambda: room_id in b.cluster.followed())  # type: ignore[union-attr]
    body = content_pb2.Content(text=content_pb2.TextContent(text="x")).SerializeToString()
    received: list[events_pb2.Event] = []

    def messages() -> list[int]:
        received.extend(events.to_event(t, p) for t, p in sink.take())
        return [e.message_received.message.seq for e in received if e.HasField("message_received")]

    await a.send(alice, room_id, "m1", body)
    await eventually(lambda: messages() == [1])
    before = len(received)
    with caplog.at_level(logging.DEBUG, "flare_runtime.im.cluster"):
        hostile = a.cluster.node
        for n in range(50):
            for type_id in (CONTROL, events.MESSAGE_RECEIVED, events.RECEIPT_UPDATED,
                            events.MEMBERSHIP_CHANGED):  # fmt: skip
                hostile.publish(
                    conversation_topic(room_id), PreparedPush(type_id, os.urandom(n % 5))
                )
        await a.send(alice, room_id, "m2", body)
        await eventually(lambda: messages() == [1, 2])
    assert len(received) == before + 1 and not bob.closed  # m2, nothing else
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "malformed" in r.message
    ]
    assert len(warnings) == 2  # once on each node that received them (a and b)
