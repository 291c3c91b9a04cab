"""What offline push costs a send, and how fast the webhook delivers.

One IM core on SQLite in this process; a room of the sender and `--offline`
members with no session, so each send makes that many notifications. The
webhook's receiver is another process (an asyncio server answering 204), so
its CPU is not counted here. Configurations, run interleaved `--reps` times,
medians reported:

* ``off``      no push (the baseline);
* ``webhook``  `PushSettings(WebhookProvider(...))`, default options.

Per configuration: sequential sends (one at a time) -> p50/p99 latency and CPU
µs per send (this process: the core, its storage and the webhook client), then
how long after the last send the receiver has every notification, i.e. the
webhook's deliveries/s.

``--clients`` instead compares the HTTP clients a webhook could use: the
same 300-byte POSTs, 4 in flight, to the same receiver, aiohttp (what the
provider uses) and httpx interleaved: CPU µs per request in this process.

    .venv/bin/python -m bench.push_bench            # ~70 s on a busy machine
    .venv/bin/python -m bench.push_bench --quick
    .venv/bin/python -m bench.push_bench --clients
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flare.im.v1 import content_pb2  # noqa: E402

from flare_runtime.im.core import ImCore, ImLimits  # noqa: E402
from flare_runtime.im.push import PushSettings  # noqa: E402
from flare_runtime.im.sinks import QueueSink  # noqa: E402
from flare_runtime.im.storage import KeyRing, SqliteStorage  # noqa: E402
from flare_runtime.im.webhook import WebhookProvider  # noqa: E402

SECRET = b"bench-secret-0123456789"
ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


async def _receive() -> None:
    """The receiver: counts notifications (keep-alive), prints the count on each stdin line."""
    received = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.partition(b":")[2])
                received += len(json.loads(await reader.readexactly(length))["notifications"])
                writer.write(ANSWER)
        except (OSError, asyncio.IncompleteReadError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(received, flush=True)


class Receiver:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.push_bench", "--receiver"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/hook"

    def count(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


async def run(
    config: str, sends: int, offline: int, receiver: Receiver, directory: Path
) -> dict[str, float]:
    provider = WebhookProvider(receiver.url, SECRET) if config == "webhook" else None
    core = ImCore(
        SqliteStorage(directory / f"{config}-{time.monotonic_ns()}.db", KeyRing.generate()),
        limits=ImLimits(send_rate_per_second=1e6, send_burst=1_000_000),
        push=PushSettings(provider) if provider is not None else None,
    )
    await core.start()
    try:
        alice = core.login("alice", "d", 1, QueueSink())[0]
        members = [f"user{number}" for number in range(offline)]
        room = (await core.create_room(alice, "r", members)).record.conversation_id
        body = content_pb2.Content(text=content_pb2.TextContent(text="hi")).SerializeToString()
        before = receiver.count()
        latencies = []
        cpu, first = time.process_time(), time.perf_counter()
        for number in range(sends):
            started = time.perf_counter()
            await core.send(alice, room, f"c{number}", body)
            latencies.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
        result = {
            "p50_us": statistics.median(latencies) * 1e6,
            "p99_us": sorted(latencies)[int(len(latencies) * 0.99)] * 1e6,
            "cpu_us": cpu / sends * 1e6,
        }
        if provider is not None and core.push is not None:
            push = core.push
            async with asyncio.timeout(120):
                while (delivered := receiver.count() - before) < (
                    sends * offline - push.dropped - provider.dropped - provider.failed
                ):
                    await asyncio.sleep(0.02)
            result["deliveries_s"] = delivered / (time.perf_counter() - first)
            result["dropped"] = push.dropped + provider.dropped + provider.failed
        return result
    finally:
        await core.close()


async def clients(reps: int, requests: int = 300) -> None:
    import aiohttp  # noqa: PLC0415 -- only this mode compares clients
    import httpx  # noqa: PLC0415

    receiver = Receiver()
    body = json.dumps({"notifications": [{"user_id": "u" * 280}]}).encode()
    figures: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpx": []}
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session,
            httpx.AsyncClient(limits=httpx.Limits(max_connections=4)) as client,
        ):

            async def post(library: str) -> None:
                if library == "aiohttp":
                    async with session.post(receiver.url, data=body) as response:
                        assert response.status == 204
                else:
                    async with client.stream("POST", receiver.url, content=body) as answer:
                        assert answer.status_code == 204

            for _ in range(reps):
                for library, runs in figures.items():
                    slots = asyncio.Semaphore(4)

                    async def one(library: str = library, slots: asyncio.Semaphore = slots) -> None:
                        async with slots:
                            await post(library)

                    cpu, wall = time.process_time(), time.perf_counter()
                    await asyncio.gather(*(one() for _ in range(requests)))
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    runs.append((cpu / requests * 1e6, requests / wall))
    finally:
        receiver.close()
    print(f"{requests} POSTs of {len(body)} bytes, 4 in flight, {reps} reps (medians)")
    for library, runs in figures.items():
        cpu_us = statistics.median(run[0] for run in runs)
        per_second = statistics.median(run[1] for run in runs)
        print(f"{library:<8} cpu_us/request {cpu_us:,.0f}  requests/s {per_second:,.0f}")


async def main(reps: int, sends: int, offline: int) -> None:
    receiver = Receiver()
    results: dict[str, list[dict[str, float]]] = {"off": [], "webhook": []}
    try:
        with tempfile.TemporaryDirectory() as directory:
            for _ in range(reps):
                for config, runs in results.items():
                    runs.append(await run(config, sends, offline, receiver, Path(directory)))
    finally:
        receiver.close()
    print(f"{sends} sequential sends, {offline} offline members each, {reps} reps (medians)")
    for config, runs in results.items():
        figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(config.ljust(8), "  ".join(f"{key} {value:,.0f}" for key, value in figures.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--offline", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer sends")
    parser.add_argument("--clients", action="store_true", help="compare aiohttp and httpx")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.receiver:
        asyncio.run(_receive())
    elif arguments.clients:
        asyncio.run(clients(arguments.reps))
    else:
        sends = 300 if arguments.quick else arguments.sends
        asyncio.run(main(arguments.reps, sends, arguments.offline))
