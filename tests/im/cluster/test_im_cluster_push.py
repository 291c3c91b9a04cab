"""Offline push on a cluster: a device online on another node counts as online.

Cores of one cluster (one PostgreSQL session registry); each has its own
recording provider, so a test sees which node notified whom.
"""

from __future__ import annotations

import asyncio

from flare.im.v1 import im_pb2

from flare_runtime.im.core import ImCore, Session
from flare_runtime.im.push import PushNotification, PushSettings
from flare_runtime.im.sinks import QueueSink
from flare_runtime.testing.cluster import eventually
from flare_runtime.testing.im_cluster import ImNodes
from flare_runtime.testing.timing import UNIT
from tests.im.test_im_push import Recording, text

WEB, MOBILE = im_pb2.PLATFORM_WEB, im_pb2.PLATFORM_MOBILE


async def login(core: ImCore, user: str, device: str, platform: int = WEB) -> Session:
    return (await core.open_session(user, device, platform, QueueSink()))[0]


async def notes(provider: Recording, count: int) -> list[PushNotification]:
    """The provider's notifications once it has `count`, and nothing more came."""
    await eventually(lambda: len(provider.notifications) >= count)
    await asyncio.sleep(UNIT / 5)
    return provider.notifications


async def test_a_user_online_on_another_node_is_not_notified(nodes: ImNodes) -> None:
    on_a, on_b = Recording(), Recording()
    a = await nodes.core(push=PushSettings(on_a))
    b = await nodes.core(push=PushSettings(on_b))
    alice = await login(a, "alice", "laptop")
    bob = await login(b, "bob", "phone")  # online, but only on node b
    room = (await a.create_room(alice, "r", ["bob", "carol"])).record.conversation_id
    sent = (await a.send(alice, room, "c1", text("hi"))).message
    (note,) = await notes(on_a, 1)
    assert (note.user_id, note.message_id, note.seq) == ("carol", sent.message_id, sent.seq)
    assert on_b.notifications == []  # only the node that stored a message notifies for it

    # Bob leaves node b: his session's row is gone from the registry; now he is notified.
    b.logout(bob)
    assert b.cluster is not None
    registry = b.cluster.registry
    for _ in range(500):
        if not await registry.sessions_of("bob"):
            break
        await asyncio.sleep(0.01)
    await a.send(alice, room, "c2", text("again"))
    later = await notes(on_a, 3)
    assert sorted(n.user_id for n in later[1:]) == ["bob", "carol"]
    assert on_b.notifications == []


async def test_per_platform_counts_the_platforms_live_on_every_node(nodes: ImNodes) -> None:
    provider = Recording()
    a = await nodes.core(push=PushSettings(provider, platforms=frozenset({MOBILE})))
    b = await nodes.core()
    alice = await login(a, "alice", "laptop")
    await login(b, "bob", "laptop", WEB)
    room = (await a.create_room(alice, "r", ["bob"])).record.conversation_id
    await a.send(alice, room, "c1", text("hi"))
    (note,) = await notes(provider, 1)
    assert (note.user_id, note.platforms, note.online_platforms) == (
        "bob",
        frozenset({MOBILE}),
        frozenset({WEB}),
    )
    await login(b, "bob", "phone", MOBILE)  # his phone is online on node b: no push
    await a.send(alice, room, "c2", text("hi"))
    assert len(await notes(provider, 1)) == 1
