"""The admin API through the real ``flare admin`` against a real ``flare serve``."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from examples.chat.v1.chat_flare import ChatServiceClient
from google.protobuf import empty_pb2

from flare_runtime import connect
from flare_runtime.auth import issue_jwt
from flare_runtime.im.client import ImClient
from flare_runtime.testing.operated import FLARE, Operated, environment
from flare_runtime.testing.timing import UNIT, wait_until
from flare_runtime.wire.client import WireChannel

SECRET = "admin-secret-0123456789abcdefghijkl"
CONFIG = f"""\
target = "opsapp:services"
listen = {{websocket = "127.0.0.1:0"}}
[auth]
jwt_secret = "{SECRET}"
[admin]
enabled = true
"""
ADMIN = issue_jwt(SECRET, "root", scopes=["flare.admin"])


async def admin(url: str, *args: str, token: str | None = ADMIN) -> tuple[int, str, str]:
    """Run ``flare admin URL ARGS``: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        FLARE,
        "admin",
        url,
        *args,
        *(["--token", token] if token else []),
        env=environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_kick_disconnects_a_real_client_and_stats_count_it(tmp_path: Path) -> None:
    with Operated.start(tmp_path, CONFIG, metrics=False) as served:
        url = f"ws://127.0.0.1:{served.ports['websocket']}"
        user = issue_jwt(SECRET, "bob")
        async with connect(url, token=user) as channel:
            assert isinstance(channel, WireChannel)
            await ChatServiceClient(channel).ping(empty_pb2.Empty())
            status, out, err = await admin(url, "connections", "--json")
            assert status == 0, err
            listed = json.loads(out)["connections"]
            (bob,) = [c for c in listed if c["principal"] == "bob"]
            assert bob["transport"] == "websocket" and int(bob["bytesReceived"]) > 0
            assert not channel.closed
            status, out, err = await admin(url, "kick", bob["connectionId"], "--reason", "bye")
            assert (status, out) == (0, "kicked\n"), err
            await wait_until(lambda: channel.closed, 10 * UNIT)
        status, out, err = await admin(url, "stats")
        assert status == 0, err
        assert "/examples.chat.v1.ChatService/Ping: 1 calls, 0 errors" in out
        status, _, err = await admin(url, "kick", "no-such-id")
        assert status == 1 and err.startswith("NOT_FOUND:")
        status, out, err = await admin(url, "drain")
        assert (status, out) == (0, "draining\n"), err
        assert await asyncio.to_thread(served.process.wait, 30) == 0


async def test_sessions_need_the_im(tmp_path: Path) -> None:
    with Operated.start(tmp_path, CONFIG, metrics=False) as served:
        url = f"ws://127.0.0.1:{served.ports['websocket']}"
        status, _, err = await admin(url, "sessions")
        assert status == 1 and err.startswith("FAILED_PRECONDITION:")


IM_CONFIG = f"""\
listen = {{websocket = "127.0.0.1:0"}}
[auth]
jwt_secret = "{SECRET}"
[admin]
enabled = true
[im]
enabled = true
database = "im.db"
keys = {{1 = "{base64.b64encode(bytes(range(32))).decode()}"}}
[metrics]
listen = "127.0.0.1:0"
"""


async def test_im_sessions_listed_counted_and_kicked(tmp_path: Path) -> None:
    """The built-in IM served from the file alone: a device's session is listed by
    ``flare admin sessions``, counted in /metrics, and ended by ``kick-session``."""
    with Operated.start(tmp_path, IM_CONFIG) as served:
        url = f"ws://127.0.0.1:{served.ports['websocket']}"
        device = ImClient(url, token=issue_jwt(SECRET, "carol"), device_id="phone")
        await device.start()
        try:
            status, out, err = await admin(url, "sessions", "--user", "carol")
            assert status == 0, err
            (line,) = out.splitlines()
            session_id, user, device_id, _ = line.split("\t")
            assert (session_id, user, device_id) == (device.session_id, "carol", "phone")
            _, text = await asyncio.to_thread(served.get, "/metrics")
            assert "flare_im_sessions 1.0" in text
            status, out, err = await admin(url, "kick-session", session_id)
            assert (status, out) == (0, "kicked\n"), err
            await wait_until(lambda: device.ended is not None, 10 * UNIT)
            status, out, err = await admin(url, "sessions")
            assert (status, out) == (0, ""), err
        finally:
            await device.close()
        assert served.stop() == 0
