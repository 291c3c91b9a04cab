"""IM benchmark: room fan-out vs raw pre-encoded pushes, SQLite send throughput, session memory.

    python -m bench.im_bench                       # 5,000 members, 4 client processes
    python -m bench.im_bench --members 1000 --rate 50 --seconds 4
    python -m bench.im_bench --quick               # ~40 s: 1,000 members, 2 processes, 1 round

One server process (uvloop) runs `ImCore` on SQLite behind the WebSocket
listener. Client processes hold the room's members (one connection and one
logged-in session each); a separate sender process calls ``Send`` at a fixed
rate. Every delivered message carries its send time (``time.monotonic_ns``,
one clock for all processes of the machine), so each receiving client measures
send→receive latency itself.

Phases, all in the same run on the same sockets:

1. **memory**: server RSS growth per connected idle client, then per logged-in
   session on top (the IM's own cost).
2. **im fan-out**: ``Send`` → storage (durable) → sequencer → one PUSH frame
   encoded once → every member's connection.
3. **raw fan-out**, two floors on the same connections, no IM at all: the
   server encodes a same-size PUSH frame once per message and hands it to
   every connection's `push_prepared` (the runtime's push path); then it encodes
   the whole WebSocket message once and writes it straight to every socket.
4. **sqlite**: acknowledged sends per second straight into `ImCore` (64
   concurrent senders, durable group commit), against raw ``sqlite3`` with one
   fsynced commit per insert on the same file system.

Prints one line per figure and the ratios; ``--json`` adds one JSON line.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop
from websockets.frames import Frame, Opcode

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "generated"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from flare.im.v1 import content_pb2, events_pb2, im_pb2  # noqa: E402
from flare.im.v1.im_flare import ImServiceClient  # noqa: E402

from flare_runtime.auth import (  # noqa: E402
    AuthPlugin,
    Principal,
    bearer_token,
)
from flare_runtime.client import connect  # noqa: E402
from flare_runtime.im.core import ImCore, ImLimits  # noqa: E402
from flare_runtime.im.service import ImService  # noqa: E402
from flare_runtime.im.sinks import QueueSink  # noqa: E402
from flare_runtime.im.storage import (  # noqa: E402
    ConversationKind,
    ConversationRecord,
    KeyRing,
    Role,
    SqliteStorage,
)
from flare_runtime.metadata import Metadata  # noqa: E402
from flare_runtime.server import Server  # noqa: E402
from flare_runtime.server_connection import PreparedPush  # noqa: E402
from flare_runtime.wire.client import WireChannel  # noqa: E402

ROOM = "bench-room"
MESSAGE_RECEIVED = 64001
PAD = "p" * 64  # a chat-sized message body around the timestamp


class BenchAuth(AuthPlugin):
    """Trusts the token as the user id (benchmark only: O(1), unlike a token table scan)."""

    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        token = bearer_token(metadata)
        return None if token is None else Principal(token)


def run_loop(coroutine: Any) -> Any:
    """Run `coroutine` on uvloop (the event loop the figures are quoted for)."""
    return uvloop.run(coroutine)


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return float(sorted_values[index])


# ---------------------------------------------------------------- client processes


class _Phase:
    def __init__(self) -> None:
        self.latencies_us = array.array("I")
        self.first_ns = 0
        self.last_ns = 0


async def _members_main(
    url: str, users: list[str], pipe: multiprocessing.connection.Connection
) -> None:
    channels: list[WireChannel] = []
    for start in range(0, len(users), 100):
        opened = await asyncio.gather(
            *(
                connect(url, token=user, push_tables=[ImService.PUSH_TYPES])
                for user in users[start : start + 100]
            )
        )
        channels += [channel for channel in opened if isinstance(channel, WireChannel)]
    pipe.send(("connected", len(channels)))
    assert pipe.recv() == "login"
    for start in range(0, len(channels), 100):
        await asyncio.gather(
            *(
                ImServiceClient(channel).login(im_pb2.LoginRequest(device_id="bench"), timeout=60)
                for channel in channels[start : start + 100]
            )
        )
    pipe.send(("logged_in", len(channels)))

    phase = _Phase()

    def received(message: Any, channel: WireChannel) -> None:
        # A callback instead of the `pushes()` iterator: no future per push,
        # so the clients steal less CPU from the server on a small machine.
        channel.endpoint.pushes.clear()
        if not isinstance(message, events_pb2.MessageReceived):
            return
        now = time.monotonic_ns()
        sent = int(message.message.content.text.text.split(":", 2)[1])
        phase.latencies_us.append(max(0, (now - sent) // 1000))
        if not phase.first_ns:
            phase.first_ns = now
        phase.last_ns = now

    for channel in channels:
        channel.on_push(lambda message, channel=channel: received(message, channel))  # type: ignore[misc]
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "reset":
            phase = _Phase()
            pipe.send("ok")
        elif command == "count":
            pipe.send(len(phase.latencies_us))
        elif command == "report":
            pipe.send((phase.first_ns, phase.last_ns, phase.latencies_us.tobytes()))
        elif command == "stop":
            break
    for channel in channels:
        await channel.close()
    pipe.send("stopped")


def members_process(
    url: str, users: list[str], pipe: multiprocessing.connection.Connection
) -> None:
    run_loop(_members_main(url, users, pipe))


async def _sender_main(url: str, pipe: multiprocessing.connection.Connection) -> None:
    channel = await connect(url, token="sender", push_tables=[ImService.PUSH_TYPES])
    client = ImServiceClient(channel)
    await client.login(im_pb2.LoginRequest(device_id="sender"), timeout=60)
    pipe.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "stop":
            break
        _, rate, count, tag = command
        started = time.monotonic()
        pending = []
        for index in range(count):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            content = content_pb2.Content(
                text=content_pb2.TextContent(text=f"{index}:{time.monotonic_ns()}:{PAD}")
            )
            request = im_pb2.SendRequest(
                conversation_id=ROOM, client_message_id=f"{tag}-{index}", content=content
            )
            pending.append(asyncio.ensure_future(client.send(request, timeout=60)))
        replies = await asyncio.gather(*pending)
        pipe.send(("sent", len(replies)))
    await channel.close()


def sender_process(url: str, pipe: multiprocessing.connection.Connection) -> None:
    run_loop(_sender_main(url, pipe))


# ---------------------------------------------------------------- server side


async def wait_for_deliveries(pipes: list[Any], expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        total = 0
        for pipe in pipes:
            pipe.send("count")
        for pipe in pipes:
            total += await asyncio.to_thread(pipe.recv)
        if total >= expected:
            return total
        await asyncio.sleep(0.25)
    return total


async def collect(pipes: list[Any], first_send_ns: int) -> dict[str, float]:
    latencies = array.array("I")
    last = 0
    for pipe in pipes:
        pipe.send("report")
    for pipe in pipes:
        _, last_ns, raw = await asyncio.to_thread(pipe.recv)
        part = array.array("I")
        part.frombytes(raw)
        latencies.extend(part)
        last = max(last, last_ns)
    ordered = sorted(latencies)
    seconds = (last - first_send_ns) / 1e9 if last else float("nan")
    return {
        "deliveries": len(ordered),
        "deliveries_per_s": len(ordered) / seconds if seconds > 0 else float("nan"),
        "p50_ms": percentile(ordered, 0.50) / 1000,
        "p99_ms": percentile(ordered, 0.99) / 1000,
        "max_ms": (ordered[-1] / 1000) if ordered else float("nan"),
    }


async def reset(pipes: list[Any]) -> None:
    for pipe in pipes:
        pipe.send("reset")
    for pipe in pipes:
        await asyncio.to_thread(pipe.recv)


def _socket_of(connection: Any) -> Any:
    """The asyncio transport under a Flare WebSocket connection (endpoint -> adapter -> socket)."""
    return connection.transport.transport


async def raw_fanout(server: Server, rate: float, count: int, *, websocket_frames: bool) -> int:
    """Fan out without the IM: one pre-encoded frame per message, appended to every connection.

    `websocket_frames` False: the Flare PUSH frame is encoded once and handed to
    each connection's `push_prepared` (the runtime still frames it as a WebSocket
    message per connection). True: the whole WebSocket message (an unmasked
    binary frame holding the PUSH frame) is encoded once and written straight
    to every socket -- the floor of any fan-out on these sockets.
    """
    connections = [c for c in server.connections if getattr(c, "push_prepared", None)]
    sockets = [_socket_of(c) for c in connections] if websocket_frames else []
    started = time.monotonic()
    first_ns = 0
    for index in range(count):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic_ns()
        first_ns = first_ns or now
        message = events_pb2.Message(
            conversation_id=ROOM,
            seq=index + 1,
            epoch=1,
            message_id=f"raw-{index}",
            sender_user_id="sender",
            sender_device_id="sender",
            client_message_id=f"raw-{index}",
            sent_at_ms=now // 1_000_000,
            content=content_pb2.Content(text=content_pb2.TextContent(text=f"{index}:{now}:{PAD}")),
        )
        push = PreparedPush(
            MESSAGE_RECEIVED, events_pb2.MessageReceived(message=message).SerializeToString()
        )
        if websocket_frames:
            wire = Frame(Opcode.BINARY, push.frame).serialize(mask=False)
            for socket in sockets:
                socket.write(wire)
        else:
            for connection in connections:
                connection.push_prepared(push)
    return first_ns


async def sqlite_throughput(directory: Path, seconds: float, senders: int) -> dict[str, float]:
    limits = ImLimits(send_rate_per_second=1e9, send_burst=10**9)
    core = ImCore(SqliteStorage(directory / "throughput.db", KeyRing.generate()), limits=limits)
    await core.start()
    sessions = []
    for index in range(senders):
        session, _ = core.login(f"writer-{index}", "d", 1, QueueSink())
        await core.open_direct(session, "offline-peer")
        sessions.append(session)
    body = content_pb2.Content(text=content_pb2.TextContent(text="x" * 100)).SerializeToString()
    done = 0
    stop_at = time.monotonic() + seconds

    async def writer(session: Any) -> None:
        nonlocal done
        conversation = (await core.open_direct(session, "offline-peer")).record.conversation_id
        index = 0
        while time.monotonic() < stop_at:
            await core.send(session, conversation, f"m{index}", body)
            assert isinstance(session.sink, QueueSink)
            session.sink.take()
            index += 1
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(session) for session in sessions))
    elapsed = time.monotonic() - started
    await core.close()

    # Raw sqlite3, one fsynced commit per insert (what a send costs without group commit).
    raw_path = directory / "raw.db"
    connection = sqlite3.connect(raw_path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, body BLOB)")
    raw_done = 0
    raw_started = time.monotonic()
    while time.monotonic() - raw_started < seconds:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO m (body) VALUES (?)", (body,))
        connection.execute("COMMIT")
        raw_done += 1
    raw_elapsed = time.monotonic() - raw_started
    connection.close()
    return {
        "im_acks_per_s": done / elapsed,
        "raw_sqlite_commit_per_insert_per_s": raw_done / raw_elapsed,
    }


async def main(arguments: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="flare-im-bench-"))
    results: dict[str, Any] = {"members": arguments.members, "rate": arguments.rate}
    limits = ImLimits(
        send_rate_per_second=1e9,
        send_burst=10**9,
        max_member_limit=100_000,
        outbound_buffer_bytes=64 * 1024 * 1024,
    )
    storage = SqliteStorage(directory / "im.db", KeyRing.generate())
    core = ImCore(storage, limits=limits)
    await core.start()
    users = [f"member-{index}" for index in range(arguments.members)]
    members = {user: Role.MEMBER for user in users}
    members["sender"] = Role.OWNER
    record = ConversationRecord(ROOM, ConversationKind.ROOM, "bench", False, 100_000, 1, 1, 0, 0)
    await storage.create_conversation(record, members)
    server = Server([ImService(core)], auth=BenchAuth(), push_tables=[ImService.PUSH_TYPES])
    await server.start(websocket="127.0.0.1:0")
    url = f"ws://127.0.0.1:{server.port('websocket')}"

    context = multiprocessing.get_context("spawn")
    pipes = []
    processes = []
    share = (len(users) + arguments.client_processes - 1) // arguments.client_processes
    rss_before = rss_bytes()
    for index in range(arguments.client_processes):
        mine, theirs = context.Pipe()
        process = context.Process(
            target=members_process, args=(url, users[index * share : (index + 1) * share], theirs)
        )
        process.start()
        processes.append(process)
        pipes.append(mine)
    connected = sum([(await asyncio.to_thread(pipe.recv))[1] for pipe in pipes])
    await asyncio.sleep(1.0)
    rss_connected = rss_bytes()
    for pipe in pipes:
        pipe.send("login")
    logged_in = sum([(await asyncio.to_thread(pipe.recv))[1] for pipe in pipes])
    await asyncio.sleep(1.0)
    rss_logged_in = rss_bytes()
    results["connections"] = connected
    results["sessions"] = logged_in
    results["bytes_per_idle_connection"] = (rss_connected - rss_before) / max(1, connected)
    results["im_bytes_per_idle_session"] = (rss_logged_in - rss_connected) / max(1, logged_in)
    results["bytes_per_logged_in_session_total"] = (rss_logged_in - rss_before) / max(1, logged_in)

    sender_pipe, sender_end = context.Pipe()
    sender = context.Process(target=sender_process, args=(url, sender_end))
    sender.start()
    assert await asyncio.to_thread(sender_pipe.recv) == "ready"

    count = int(arguments.rate * arguments.seconds)
    expected = count * logged_in
    for round_index in range(arguments.rounds):
        # IM path: Send over WebSocket -> SQLite -> sequencer -> fan-out.
        await reset(pipes)
        first_send_ns = time.monotonic_ns()
        sender_pipe.send(("send", arguments.rate, count, f"r{round_index}"))
        await asyncio.to_thread(sender_pipe.recv)
        await wait_for_deliveries(pipes, expected, timeout=arguments.seconds + 60)
        results.setdefault("im_fanout", []).append(await collect(pipes, first_send_ns))
        # Raw paths: the same sockets, one pre-encoded frame per message, no IM.
        for name, websocket_frames in (("raw_fanout", False), ("raw_socket_fanout", True)):
            await reset(pipes)
            first_send_ns = await raw_fanout(
                server, arguments.rate, count, websocket_frames=websocket_frames
            )
            await wait_for_deliveries(pipes, expected, timeout=arguments.seconds + 60)
            results.setdefault(name, []).append(await collect(pipes, first_send_ns))

    sender_pipe.send("stop")
    for pipe in pipes:
        pipe.send("stop")
    for pipe in pipes:
        await asyncio.to_thread(pipe.recv)
    for process in [*processes, sender]:
        await asyncio.to_thread(process.join, 30)
    await server.shutdown(grace=1.0)
    await core.close()
    results["sqlite"] = await sqlite_throughput(directory, arguments.sqlite_seconds, 64)
    return results


def best(rounds: list[dict[str, float]], key: str) -> float:
    return max(round_[key] for round_ in rounds)


def report(results: dict[str, Any]) -> None:
    print(f"members={results['members']} rate={results['rate']}/s sessions={results['sessions']}")
    print(
        f"memory: {results['bytes_per_idle_connection'] / 1024:.1f} KB per idle connection, "
        f"+{results['im_bytes_per_idle_session'] / 1024:.1f} KB per IM session "
        f"= {results['bytes_per_logged_in_session_total'] / 1024:.1f} KB per logged-in session"
    )
    paths = (
        ("im        ", "im_fanout"),
        ("raw push  ", "raw_fanout"),
        ("raw socket", "raw_socket_fanout"),
    )
    for index in range(len(results["im_fanout"])):
        for name, key in paths:
            figures = results[key][index]
            print(
                f"round {index}: {name} {figures['deliveries']:>8} deliveries "
                f"{figures['deliveries_per_s']:>10.0f}/s "
                f"p50 {figures['p50_ms']:.1f} ms p99 {figures['p99_ms']:.1f} ms"
            )
    im_best = best(results["im_fanout"], "deliveries_per_s")
    for name, key in paths[1:]:
        print(
            f"fan-out ratio im / {name.strip()} (best round deliveries/s): "
            f"{im_best / best(results[key], 'deliveries_per_s'):.2f}"
        )
    sqlite = results["sqlite"]
    print(
        f"sqlite: {sqlite['im_acks_per_s']:.0f} durable acks/s (ImCore, 64 senders, group commit) "
        f"vs {sqlite['raw_sqlite_commit_per_insert_per_s']:.0f}/s raw sqlite3 commit-per-insert "
        f"= {sqlite['im_acks_per_s'] / sqlite['raw_sqlite_commit_per_insert_per_s']:.1f}x"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description="Flare IM benchmark")
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=20.0, help="messages per second into the room"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sqlite-seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 members, 2 client processes, 1 short round"
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.members, arguments.client_processes = 1000, 2
        arguments.seconds, arguments.rounds, arguments.sqlite_seconds = 3.0, 1, 2.0
    # A hard stop so the benchmark always ends by itself.
    threading.Timer(900, lambda: os._exit(3)).start()
    results = run_loop(main(arguments))
    report(results)
    if arguments.json:
        print(json.dumps(results))
    os._exit(0)


if __name__ == "__main__":
    cli()
