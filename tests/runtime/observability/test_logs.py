"""The log of a real ``flare serve``: JSON lines parsed, call fields, access log, redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest
from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import ChatServiceClient
from google.protobuf import empty_pb2

from flare_runtime import connect
from flare_runtime.auth import issue_jwt
from flare_runtime.errors import RpcError
from flare_runtime.observability.logs import configure_logging
from flare_runtime.testing.operated import Operated

SECRET = "log-secret-0123456789abcdefghijkl"
CONFIG = f"""\
target = "opsapp:services"
listen = {{websocket = "127.0.0.1:0"}}
[auth]
jwt_secret = "{SECRET}"
[logging]
format = "json"
access_log = true
"""


async def _calls(url: str, good: str, forged: str) -> None:
    async with connect(url) as channel:
        await ChatServiceClient(channel).ping(empty_pb2.Empty())
    async with connect(url, token=good) as channel:
        client = ChatServiceClient(channel)
        await client.send(chat_pb2.SendRequest(message=chat_pb2.ChatMessage(room="r", text="hi")))
    async with connect(url, token=forged) as channel:
        with pytest.raises(RpcError):
            await ChatServiceClient(channel).send(chat_pb2.SendRequest())


def test_json_log_lines_carry_the_call_and_never_a_secret(tmp_path: Path) -> None:
    good = issue_jwt(SECRET, "alice", scopes=["chat.write"])
    forged = issue_jwt("another-key-0123456789abcdefghijkl", "mallory")
    with Operated.start(tmp_path, CONFIG, metrics=False) as served:
        asyncio.run(_calls(f"ws://127.0.0.1:{served.ports['websocket']}", good, forged))
        assert served.stop() == 0
        text = served.stderr_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    access = [r for r in records if r["logger"] == "flare_runtime.access"]
    ping = next(r for r in access if r["route"].endswith("/Ping") and r["status"] == "OK")
    assert ping["transport"] == "websocket" and ping["peer"].startswith("127.0.0.1:")
    assert ping["connection_id"] and ping["duration_ms"] >= 0 and "principal" not in ping
    send = next(r for r in access if r["route"].endswith("/Send"))
    assert send["status"] == "OK" and send["principal"] == "alice"
    assert send["connection_id"] != ping["connection_id"]
    assert any(r["status"] == "UNAUTHENTICATED" for r in access)
    for secret in (SECRET, good, forged, good.split(".")[1]):
        assert secret not in text


def test_text_lines_and_levels(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("warning", "text", secrets=["hush-hush-value"], stream=stream)
    log = logging.getLogger("flare_runtime.test")
    log.info("not written")
    log.warning("key is hush-hush-value, header Bearer abc.def-ghi")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING flare_runtime.test: key is ***, header ***")
    logging.getLogger().handlers.clear()
