"""Durability across a crash: SIGKILL the IM server, restart it, lose nothing acknowledged."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from flare.im.v1 import content_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient

from flare_runtime.client import connect
from flare_runtime.im.demo import LOBBY
from flare_runtime.im.service import ImService
from flare_runtime.testing.timing import UNIT

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20 * UNIT


async def start_server(database: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Run `python -m flare_runtime.im.demo` on free ports; returns it and its IM URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flare_runtime.im.demo",
        "--db",
        str(database),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        line = (await process.stdout.readline()).decode()
    found = re.search(r"ws://[0-9.]+:[0-9]+", line)
    assert found, f"unexpected demo output: {line!r}"
    return process, found.group(0)


async def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    database = tmp_path / "crash.db"
    process, url = await start_server(database)
    try:
        channel = await connect(url, token="alice", push_tables=[ImService.PUSH_TYPES])
        client = ImServiceClient(channel)
        await client.login(im_pb2.LoginRequest(device_id="d"), timeout=TIMEOUT)
        await client.join_room(im_pb2.JoinRoomRequest(conversation_id=LOBBY), timeout=TIMEOUT)
        replies = await asyncio.gather(
            *(
                client.send(
                    im_pb2.SendRequest(
                        conversation_id=LOBBY,
                        client_message_id=f"c{index}",
                        content=content_pb2.Content(
                            text=content_pb2.TextContent(text=f"acknowledged {index}")
                        ),
                    ),
                    timeout=TIMEOUT,
                )
                for index in range(40)  # the demo's per-session burst allowance
            )
        )
        acknowledged = {reply.seq: index for index, reply in enumerate(replies)}
        process.send_signal(signal.SIGKILL)  # no shutdown, no flush: a crash
        await process.wait()
        await channel.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    process, url = await start_server(database)
    try:
        channel = await connect(url, token="bob", push_tables=[ImService.PUSH_TYPES])
        client = ImServiceClient(channel)
        await client.login(im_pb2.LoginRequest(device_id="d"), timeout=TIMEOUT)
        await client.join_room(im_pb2.JoinRoomRequest(conversation_id=LOBBY), timeout=TIMEOUT)
        reply = await client.sync(
            im_pb2.SyncRequest(cursors=[im_pb2.SyncCursor(conversation_id=LOBBY)]),
            timeout=TIMEOUT,
        )
        (entry,) = reply.conversations
        stored = {m.seq: m.content.text.text for m in entry.messages}
        assert stored == {seq: f"acknowledged {index}" for seq, index in acknowledged.items()}
        await channel.close()
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            await process.wait()
