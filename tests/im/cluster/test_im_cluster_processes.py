"""The IM on a cluster of real node processes, from real clients' point of view.

Three IM node processes (`flare_runtime.testing.im_cluster` run as a program:
WebSocket, a shared PostgreSQL schema, a Redis of the test's own) and
`ImClient`s over real sockets. Faults are real: Redis is killed and started
again, a node is SIGKILLed. Afterwards: every acknowledged message is in the
history, seqs are gap-free, no message twice once deduplicated by seq, and
every client that stayed up or reconnected has every message (live + Sync).
"""

from __future__ import annotations

import asyncio

import redis.asyncio
from flare.im.v1 import content_pb2, events_pb2, im_pb2

from flare_runtime.im.client import ImClient
from flare_runtime.reconnect import Backoff
from flare_runtime.testing.cluster import eventually
from flare_runtime.testing.im_cluster import FAST
from flare_runtime.testing.im_cluster import ProcessRig as Rig


async def has_all(record: dict[str, list[int]], conversations: list[str], count: int) -> None:
    """Wait until `record` holds `count` messages of each conversation."""
    await eventually(
        lambda: all(len(record.get(c, [])) >= count for c in conversations), timeout=15
    )


def text(body: str) -> content_pb2.Content:
    return content_pb2.Content(text=content_pb2.TextContent(text=body))


async def history(client: ImClient, conversation_id: str) -> list[events_pb2.Message]:
    """The whole log, read from scratch."""
    messages: list[events_pb2.Message] = []
    cursor = im_pb2.SyncCursor(conversation_id=conversation_id)
    while True:
        reply = await client.im.sync(im_pb2.SyncRequest(cursors=[cursor], limit=1000), timeout=10)
        (result,) = reply.conversations
        messages.extend(result.messages)
        if not result.has_more:
            return messages
        cursor = im_pb2.SyncCursor(
            conversation_id=conversation_id, epoch=result.epoch, last_seq=messages[-1].seq
        )


async def test_devices_on_three_nodes_exchange_messages_presence_typing_receipts(
    rig: Rig,
) -> None:
    """Alice on nodes 0 and 1, Bob on node 2: a room and a direct conversation."""
    seen: dict[str, dict[str, list[int]]] = {name: {} for name in ("laptop", "phone", "bob")}
    alice_events: list[events_pb2.Event] = []
    laptop = await rig.client(
        "alice", "laptop", [rig.urls[0]], record=seen["laptop"], events=alice_events
    )
    phone = await rig.client("alice", "phone", [rig.urls[1]], record=seen["phone"])
    bob = await rig.client("bob", "phone", [rig.urls[2]], record=seen["bob"])
    room = await laptop.im.create_room(im_pb2.CreateRoomRequest(title="r", member_user_ids=["bob"]))
    direct = await bob.im.open_direct(im_pb2.OpenDirectRequest(peer_user_id="alice"))
    watched = await laptop.im.watch_presence(im_pb2.WatchPresenceRequest(user_ids=["bob"]))
    assert [(u.user_id, u.online) for u in watched.users] == [("bob", True)]
    await asyncio.sleep(0.3)  # every node follows both conversations

    async def talk(client: ImClient, conversation: str, prefix: str) -> None:
        for n in range(15):
            await client.send(conversation, text(f"{prefix}{n}"))

    await asyncio.gather(
        talk(laptop, room.conversation_id, "l"),
        talk(bob, room.conversation_id, "b"),
        talk(phone, direct.conversation_id, "p"),
        talk(bob, direct.conversation_id, "d"),
    )
    for name, client in (("laptop", laptop), ("phone", phone), ("bob", bob)):
        await has_all(seen[name], [room.conversation_id, direct.conversation_id], 30)
        for conversation in (room.conversation_id, direct.conversation_id):
            assert seen[name][conversation] == list(range(1, 31)), (name, conversation)
        assert client.stats.duplicates == 0 and client.stats.gaps == 0
    # Typing and receipts cross nodes.
    await bob.im.set_typing(
        im_pb2.SetTypingRequest(conversation_id=room.conversation_id, typing=True)
    )
    await bob.im.ack(im_pb2.AckRequest(conversation_id=room.conversation_id, read_seq=30))
    await eventually(lambda: any(e.WhichOneof("event") == "typing_changed" for e in alice_events))
    await eventually(
        lambda: any(
            e.WhichOneof("event") == "receipt_updated" and e.receipt_updated.user_id == "bob"
            for e in alice_events
        )
    )
    # The same device logging in on another node replaces the session on node 2.
    bob_again = await rig.client("bob", "phone", [rig.urls[0]])
    await eventually(lambda: bob.ended is not None)
    assert bob.ended is not None
    assert bob.ended.reason == events_pb2.SessionClosed.REASON_REPLACED
    # Bob leaves: offline on Alice's node once the grace period is over.
    await bob_again.close()
    await eventually(
        lambda: any(
            e.WhichOneof("event") == "presence_changed" and not e.presence_changed.online
            for e in alice_events
        ),
        timeout=10,
    )


async def test_a_node_without_a_member_does_not_subscribe_to_the_room(rig: Rig) -> None:
    laptop = await rig.client("alice", "laptop", [rig.urls[0]])
    await rig.client("bob", "phone", [rig.urls[1]])
    await rig.client("carol", "phone", [rig.urls[2]])
    room = await laptop.im.create_room(im_pb2.CreateRoomRequest(title="r", member_user_ids=["bob"]))
    channel = f"{rig.owner.namespace}:t:im:c:{room.conversation_id}".encode()
    admin = redis.asyncio.Redis.from_url(rig.redis.url)
    try:

        async def subscribers() -> int:
            ((_, count),) = await admin.pubsub_numsub(channel)
            return int(count)

        async with asyncio.timeout(10):
            while await subscribers() != 2:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert await subscribers() == 2  # nodes 0 and 1; never node 2
    finally:
        await admin.aclose()


async def _chaos(rig: Rig, fault: str) -> None:
    """Senders on two nodes while `fault` strikes; then check every promise."""
    seen: dict[str, dict[str, list[int]]] = {}
    clients = []
    for index, (user, device) in enumerate(
        [("alice", "a0"), ("bob", "b1"), ("carol", "c2"), ("alice", "a1")]
    ):
        home = index % 3
        urls = rig.urls[home:] + rig.urls[:home]
        seen[f"{user}/{device}"] = {}
        clients.append(await rig.client(user, device, urls, record=seen[f"{user}/{device}"]))
    room = await clients[0].im.create_room(
        im_pb2.CreateRoomRequest(title="chaos", member_user_ids=["bob", "carol"])
    )
    room_id = room.conversation_id
    await asyncio.sleep(0.3)
    acknowledged: list[im_pb2.SendReply] = []

    async def sender(client: ImClient, prefix: str) -> None:
        for n in range(40):
            acknowledged.append(await client.send(room_id, text(f"{prefix}{n}"), timeout=30))
            await asyncio.sleep(0.01)

    senders = [asyncio.ensure_future(sender(c, f"s{i}")) for i, c in enumerate(clients[:3])]
    await asyncio.sleep(0.3)
    if fault == "redis":
        rig.redis.kill()
        await asyncio.sleep(1.0)
        await rig.redis.start()
    else:
        rig.nodes[1].kill()  # Bob's node: Bob's client moves to node 2
        await rig.nodes[1].wait()
    await asyncio.gather(*senders)
    # Every acknowledged message is in the history, seq gap-free, each once.
    log = await history(clients[0], room_id)
    seqs = [m.seq for m in log]
    assert seqs == list(range(1, len(log) + 1))
    assert {(r.seq, r.message_id) for r in acknowledged} <= {(m.seq, m.message_id) for m in log}
    assert len(acknowledged) == 120 and len(log) == 120  # retries stored nothing twice
    # Every client has every message, once, in order (live + Sync).
    for name, client in zip(seen, clients, strict=True):
        await client.synced()
        await has_all(seen[name], [room_id], 120)
        assert seen[name][room_id] == seqs, name


async def test_chaos_redis_restarts_while_nodes_send(rig: Rig) -> None:
    await _chaos(rig, "redis")
    told = sum(client.stats.sync_required for client in rig.clients)
    assert told > 0  # devices were told to Sync, not left with a silent gap


async def test_chaos_a_node_is_sigkilled_while_nodes_send(rig: Rig) -> None:
    # A watcher of a user whose only device was on the killed node and cannot come back.
    watcher_events: list[events_pb2.Event] = []
    watcher = await rig.client("alice", "watcher", [rig.urls[0]], events=watcher_events)
    stuck = await rig.client("dave", "d", [rig.urls[1]], backoff=Backoff(60, 60))
    await stuck.im.open_direct(im_pb2.OpenDirectRequest(peer_user_id="alice"))
    await watcher.im.watch_presence(im_pb2.WatchPresenceRequest(user_ids=["dave"]))
    await _chaos(rig, "node")
    # Dave's node died: he goes offline on the other nodes after the grace period.
    await eventually(
        lambda: any(
            e.WhichOneof("event") == "presence_changed"
            and e.presence_changed.user_id == "dave"
            and not e.presence_changed.online
            for e in watcher_events
        ),
        timeout=FAST.node_timeout + FAST.presence_grace + 10,
    )
    moved = [c for c in rig.clients if c.stats.logins > 1]
    assert moved  # Bob's client logged in again on another node
