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
import functools
from collections.abc import Awaitable, Callable

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


def got(events: list[events_pb2.Event], kind: str, **fields: object) -> bool:
    """Whether `events` holds an event of `kind` whose fields have these values."""
    return any(
        event.WhichOneof("event") == kind
        and all(getattr(getattr(event, kind), name) == value for name, value in fields.items())
        for event in events
    )


async def test_devices_on_three_nodes_of_two_workers_exchange_messages(
    worker_rig: Rig,
) -> None:
    """Three nodes of two workers each (`flare serve --workers 2`): Alice on nodes 0 and 1,
    Bob on nodes 2 and 0; a room and a direct conversation; presence, typing, receipts, and
    a kick (the same device logging in on another node)."""
    rig = worker_rig
    names = {"laptop": ("alice", 0), "phone": ("alice", 1), "bob": ("bob", 2), "tab": ("bob", 0)}
    seen: dict[str, dict[str, list[int]]] = {name: {} for name in names}
    told: dict[str, list[events_pb2.Event]] = {name: [] for name in names}
    devices = {
        name: await rig.client(user, name, [rig.urls[node]], record=seen[name], events=told[name])
        for name, (user, node) in names.items()
    }
    laptop, phone, bob, tab = devices.values()
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
        talk(tab, direct.conversation_id, "t"),
    )
    conversations = [room.conversation_id, direct.conversation_id]
    for name, client in devices.items():
        await has_all(seen[name], conversations, 30)
        for conversation in conversations:
            assert seen[name][conversation] == list(range(1, 31)), (name, conversation)
        assert client.stats.duplicates == 0 and client.stats.gaps == 0, name
    # Typing and receipts cross nodes and workers.
    await bob.im.set_typing(
        im_pb2.SetTypingRequest(conversation_id=room.conversation_id, typing=True)
    )
    await bob.im.ack(im_pb2.AckRequest(conversation_id=room.conversation_id, read_seq=30))
    for name in ("laptop", "phone", "tab"):
        await eventually(functools.partial(got, told[name], "typing_changed", user_id="bob"))
    for name in ("laptop", "phone"):
        await eventually(functools.partial(got, told[name], "receipt_updated", user_id="bob"))
    # The same device logging in on another node replaces (kicks) the session on node 2.
    bob_again = await rig.client("bob", "bob", [rig.urls[1]])
    await eventually(lambda: bob.ended is not None)
    assert bob.ended is not None
    assert bob.ended.reason == events_pb2.SessionClosed.REASON_REPLACED
    assert bob.ended.replaced_by_session_id == bob_again.session_id
    assert not got(told["laptop"], "presence_changed", online=False)  # no flap
    # Bob's devices leave: offline on Alice's node once the grace period is over.
    await bob_again.close()
    await tab.close()
    await eventually(
        lambda: got(told["laptop"], "presence_changed", user_id="bob", online=False), timeout=10
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


async def _chaos(
    rig: Rig, strike: Callable[[list[ImClient]], Awaitable[None]], device_count: int = 4
) -> list[ImClient]:
    """Senders on three nodes while `strike(clients)` runs; then check every promise.

    Device i is user i % 3's, homed on node i % 3 (its other URLs after it).
    """
    users = ["alice", "bob", "carol"]
    seen: list[dict[str, list[int]]] = []
    clients = []
    for index in range(device_count):
        home = index % 3
        urls = rig.urls[home:] + rig.urls[:home]
        seen.append({})
        clients.append(await rig.client(users[home], f"d{index}", urls, record=seen[-1]))
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
    await strike(clients)
    await asyncio.gather(*senders)
    # Every acknowledged message is in the history, seq gap-free, each once.
    log = await history(clients[0], room_id)
    seqs = [m.seq for m in log]
    assert seqs == list(range(1, len(log) + 1))
    assert {(r.seq, r.message_id) for r in acknowledged} <= {(m.seq, m.message_id) for m in log}
    assert len(acknowledged) == 120 and len(log) == 120  # retries stored nothing twice
    # Every client has every message, once, in order (live + Sync).
    for index, client in enumerate(clients):
        await client.synced()
        await has_all(seen[index], [room_id], 120)
        assert seen[index][room_id] == seqs, index  # once each, after dedup by seq
    return clients


async def test_chaos_redis_restarts_while_nodes_send(rig: Rig) -> None:
    async def restart_redis(_: list[ImClient]) -> None:
        rig.redis.kill()
        await asyncio.sleep(1.0)
        await rig.redis.start()

    await _chaos(rig, restart_redis)
    told = sum(client.stats.sync_required for client in rig.clients)
    assert told > 0  # devices were told to Sync, not left with a silent gap


async def test_chaos_a_node_is_sigkilled_while_nodes_send(rig: Rig) -> None:
    # A watcher of a user whose only device was on the killed node and cannot come back.
    watcher_events: list[events_pb2.Event] = []
    watcher = await rig.client("alice", "watcher", [rig.urls[0]], events=watcher_events)
    stuck = await rig.client("dave", "d", [rig.urls[1]], backoff=Backoff(60, 60))
    await stuck.im.open_direct(im_pb2.OpenDirectRequest(peer_user_id="alice"))
    await watcher.im.watch_presence(im_pb2.WatchPresenceRequest(user_ids=["dave"]))

    async def kill_node(_: list[ImClient]) -> None:
        await rig.nodes[1].kill()  # Bob's node: Bob's client moves to node 2

    await _chaos(rig, kill_node)
    # Dave's node died: he goes offline on the other nodes after the grace period.
    await eventually(
        lambda: got(watcher_events, "presence_changed", user_id="dave", online=False),
        timeout=FAST.node_timeout + FAST.presence_grace + 10,
    )
    moved = [c for c in rig.clients if c.stats.logins > 1]
    assert moved  # Bob's client logged in again on another node


async def test_chaos_a_worker_is_sigkilled_while_nodes_send(worker_rig: Rig) -> None:
    """Node 1's worker holding Bob's first device is SIGKILLed mid-traffic: the supervisor
    restarts it, its devices reconnect (to node 1: the other worker, or the new one) and
    sync; every other device keeps its connection and session."""
    rig = worker_rig
    killed: list[int] = []
    held: dict[int, int] = {}

    async def kill_worker(clients: list[ImClient]) -> None:
        for index, client in enumerate(clients):
            held[index] = await rig.process_of(client)
        node = rig.nodes[1]
        (worker,) = [w for w, pid in node.pids.items() if pid == held[1]]
        killed.append(node.kill_worker(worker))
        assert node.served is not None
        await node.served.wait_ready(worker, other_than=killed[0])  # restarted

    clients = await _chaos(rig, kill_worker, device_count=6)
    for index, client in enumerate(clients):
        if held[index] == killed[0]:
            assert client.stats.logins > 1, index  # it came back, on a living worker
            assert await rig.process_of(client) != killed[0]
        else:
            assert client.stats.logins == 1, index  # untouched: same connection, same session
            assert client.channel.connections == 1, index
            assert await rig.process_of(client) == held[index]
