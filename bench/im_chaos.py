"""IM cluster chaos, the long version of tests/im/cluster/test_im_cluster_processes.py.

    python -m bench.im_chaos                       # 3 nodes, 6 devices, 60 s of faults
    python -m bench.im_chaos --seconds 20 --nodes 3 --devices 4 --logs /tmp/chaos
    python -m bench.im_chaos --workers 2 --faults worker     # 3 nodes x 2 workers

Three (``--nodes``) IM nodes, each ``flare serve`` of
`flare_runtime.testing.im_cluster.node_server` with ``--workers`` worker
processes (each worker a cluster node of its own), on one PostgreSQL schema
and a Redis of this run's own; ``--devices`` `ImClient`s (each with every
node's URL, its own first) send into one room as fast as their replies come
back, while faults strike at random every 1-4 s, drawn from ``--faults``:

* ``redis``: Redis killed and restarted after up to 2 s;
* ``node``: a whole node (its supervisor and workers) SIGKILLed and started
  again (on the same port) after up to 2 s;
* ``worker``: one worker of a node SIGKILLed (needs ``--workers`` 2 or more);
  its supervisor restarts it, and the node's other workers serve on.

Then it checks what the tests check, at scale: every acknowledged message is
in the history once, seqs are gap-free, and every device has every message in
order (live + Sync). Prints the counts and one JSON line; exits 1 on a
broken promise.

Needs PostgreSQL (``FLARE_IM_POSTGRES_DSN``, default the CI service) and
``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "generated"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from flare.im.v1 import content_pb2, im_pb2  # noqa: E402

from bench._measure import run_loop, set_deadline  # noqa: E402
from flare_runtime.im.client import ImClient  # noqa: E402
from flare_runtime.testing.im_cluster import ProcessRig  # noqa: E402

FAULTS = ("redis", "node", "worker")


async def _fault_loop(rig: ProcessRig, until: float, faults: Sequence[str], log: list[str]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        await asyncio.sleep(random.uniform(1.0, 4.0))
        down = random.uniform(0.1, 2.0)
        fault = random.choice(faults)
        node = random.choice(rig.nodes)
        number = rig.nodes.index(node)
        if fault == "redis":
            log.append(f"redis down {down:.1f} s")
            rig.redis.kill()
            await asyncio.sleep(down)
            await rig.redis.start()
        elif fault == "node":
            log.append(f"node {number} SIGKILL, back after {down:.1f} s")
            await node.kill()
            await asyncio.sleep(down)
            await node.start()
        else:
            worker = random.choice(sorted(node.pids))
            log.append(f"node {number} worker {worker} SIGKILL")
            node.kill_worker(worker)


async def _history(client: ImClient, conversation_id: str) -> list[Any]:
    messages: list[Any] = []
    cursor = im_pb2.SyncCursor(conversation_id=conversation_id)
    while True:
        reply = await client.im.sync(im_pb2.SyncRequest(cursors=[cursor], limit=1000), timeout=30)
        (result,) = reply.conversations
        messages.extend(result.messages)
        if not result.has_more:
            return messages
        cursor = im_pb2.SyncCursor(
            conversation_id=conversation_id, epoch=result.epoch, last_seq=messages[-1].seq
        )


async def main(args: argparse.Namespace, faults: Sequence[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temporary:
        directory = args.logs or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        rig = await ProcessRig.start(
            directory, count=args.nodes, workers=args.workers, send_rate=100_000
        )
        try:
            return await _run(rig, args.seconds, args.devices, faults)
        finally:
            await rig.close()


async def _run(
    rig: ProcessRig, seconds: float, device_count: int, faults: Sequence[str]
) -> dict[str, Any]:
    seen: list[dict[str, list[int]]] = []
    clients = []
    for index in range(device_count):
        home = index % len(rig.nodes)
        seen.append({})
        clients.append(
            await rig.client(
                f"user{index}", "d", rig.urls[home:] + rig.urls[:home], record=seen[-1]
            )
        )
    room = await clients[0].im.create_room(
        im_pb2.CreateRoomRequest(
            title="chaos", member_user_ids=[f"user{i}" for i in range(1, device_count)]
        )
    )
    room_id = room.conversation_id
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    acknowledged: list[im_pb2.SendReply] = []
    struck: list[str] = []

    async def sender(client: ImClient, name: str) -> None:
        n = 0
        while loop.time() < until:
            content = content_pb2.Content(text=content_pb2.TextContent(text=f"{name}-{n}"))
            acknowledged.append(await client.send(room_id, content, timeout=60))
            n += 1

    started = time.perf_counter()
    await asyncio.gather(
        _fault_loop(rig, until, faults, struck),
        *(sender(client, f"s{i}") for i, client in enumerate(clients)),
    )
    sending = time.perf_counter() - started
    log = await _history(clients[0], room_id)
    seqs = [message.seq for message in log]
    broken = []
    if seqs != list(range(1, len(log) + 1)):
        broken.append("history seqs are not gap-free")
    stored = {(message.seq, message.message_id) for message in log}
    if not {(reply.seq, reply.message_id) for reply in acknowledged} <= stored:
        broken.append("an acknowledged message is not in the history")
    if len(log) != len(acknowledged):
        broken.append(f"{len(log)} stored for {len(acknowledged)} acknowledged")
    deadline = loop.time() + 60
    for index, client in enumerate(clients):
        await client.synced()
        while len(seen[index].get(room_id, [])) < len(log) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if seen[index].get(room_id) != seqs:
            broken.append(f"device {index} does not have every message once, in order")
    return {
        "seconds": round(sending, 1),
        "faults": struck,
        "acknowledged": len(acknowledged),
        "stored": len(log),
        "sends_per_second": round(len(acknowledged) / sending, 1),
        "sync_required": sum(client.stats.sync_required for client in clients),
        "logins": sum(client.stats.logins for client in clients),
        "devices_reconnected": sum(client.stats.logins > 1 for client in clients),
        "live": sum(client.stats.live for client in clients),
        "synced": sum(client.stats.synced for client in clients),
        "broken": broken,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="worker processes per node")
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument(
        "--faults",
        default="redis,node",
        help=f"comma-separated, from {','.join(FAULTS)} (worker needs --workers 2+)",
    )
    parser.add_argument("--logs", type=Path, help="keep the node logs in this directory")
    args = parser.parse_args()
    chosen = [fault for fault in args.faults.split(",") if fault]
    if not chosen or not set(chosen) <= set(FAULTS):
        parser.error(f"--faults: expected some of {', '.join(FAULTS)}")
    if "worker" in chosen and args.workers < 2:
        parser.error("--faults worker needs --workers 2 or more")
    set_deadline(args.seconds + 300)
    results = run_loop(main(args, chosen))
    for key, value in results.items():
        print(f"{key:20} {value}")
    print(json.dumps(results))
    sys.exit(1 if results["broken"] else 0)
