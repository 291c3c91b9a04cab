"""Hostile input on the cluster's broker channels: messages that are not envelopes.

Another program (or a node of an incompatible version) publishing on a
cluster's Redis channels must not disturb a node: each such message is
dropped and counted, the failure is logged once, and delivery goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import pytest

from flare_runtime.cluster import ClusterEvent, ClusterNode, Subscription, envelope
from flare_runtime.server_connection import PreparedPush
from flare_runtime.testing.cluster import REDIS_URL, Cluster, eventually, redis_ping


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    problem = await redis_ping(REDIS_URL)
    if problem is not None:
        reason = f"Redis is not reachable at {REDIS_URL} ({problem})"
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip("SKIPPED LOUDLY: " + reason)
    rig = Cluster("redis")
    try:
        yield rig
    finally:
        await rig.close()


async def subscribed(node: ClusterNode, topic: str) -> list[ClusterEvent]:
    events: list[ClusterEvent] = []

    def missed(subscription: Subscription) -> None:
        raise AssertionError(f"no gap expected on {subscription}")

    await node.subscribe(topic, events.append, on_missed=missed).ready()
    return events


async def test_garbage_on_a_topic_channel_is_dropped_counted_and_logged_once(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: 100 messages of random bytes published on a topic's channel by a foreign
    client, between two real events. Outcome: both events arrive; the garbage is dropped
    and counted as malformed; one error line in the log, not 100."""
    a, b = await cluster.node(), await cluster.node()
    events = await subscribed(b, "t")
    assert cluster.admin is not None
    a.publish("t", PreparedPush(1, b"first"))
    for n in range(100):
        await cluster.admin.publish(b.topic_channel("t"), os.urandom(n % 40))
    a.publish("t", PreparedPush(1, b"second"))
    await eventually(lambda: len(events) == 2)
    assert [event.push.payload for event in events] == [b"first", b"second"]
    await eventually(lambda: b.stats.malformed == 100)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "dropped a message" in errors[0].getMessage()


async def test_forged_envelopes_for_unknown_connections_change_nothing(cluster: Cluster) -> None:
    """Input: well-formed DIRECT and CLOSE envelopes on a node's channel for connection ids
    it never gave out, and a DIRECT on a topic channel. Outcome: counted as unrouted; no
    error, nothing delivered, the node keeps working."""
    a, b = await cluster.node(), await cluster.node()
    events = await subscribed(b, "t")
    assert cluster.admin is not None
    forged = envelope.echo_prefix(b"forger")
    node_channel = b.node_channel(b.node_id)
    await cluster.admin.publish(node_channel, envelope.encode_direct(forged, 99, 1, b"x"))
    await cluster.admin.publish(node_channel, envelope.encode_close(forged, 0, "bye"))
    await cluster.admin.publish(b.topic_channel("t"), envelope.encode_direct(forged, 1, 1, b"x"))
    a.publish("t", PreparedPush(1, b"real"))
    await eventually(lambda: len(events) == 1)
    assert b.stats.unrouted == 3
    assert b.stats.malformed == 0
