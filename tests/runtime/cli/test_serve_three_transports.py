"""`flare serve --ws … --quic … --grpc …`: one process serves all three transports at once.

The server runs as a user runs it (a subprocess, ports 0, a dev certificate
from the code behind ``flare cert dev``); `flare call` and a Flare client reach
it on each URL it prints, and SIGTERM or SIGINT stops it cleanly, releasing
every port.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import sys
from pathlib import Path

import pytest
from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import ChatServiceClient
from google.protobuf import empty_pb2

import flare_runtime as flare
from flare_runtime.auth import issue_jwt
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

ROOT = Path(__file__).resolve().parents[3]
FLARE = [sys.executable, "-m", "flare_runtime.cli"]
DEMO_KEY = "flare-demo-signing-key-change-me-0123456789"
"""The chat example's default JWT key (`examples.chat.service.DEMO_KEY`)."""

SEND = "/examples.chat.v1.ChatService/Send"
LINE = re.compile(r"^flare: serving (websocket|quic|grpc) on port (\d+) \((\w+://[^)]+)\)$")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    env.pop("FLARE_DEMO_JWT_KEY", None)
    return env


async def _start(cert: CertificateFiles) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start ``flare serve`` on three free ports; return it and {transport: url} it printed."""
    process = await asyncio.create_subprocess_exec(
        *FLARE,
        "serve",
        "examples.chat.service:server",
        "--ws",
        "127.0.0.1:0",
        "--quic",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--tls-cert",
        str(cert.certificate),
        "--tls-key",
        str(cert.private_key),
        "--grace",
        "2",
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    try:
        while len(urls) < 3:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "flare serve exited before listening"
            match = LINE.match(line.rstrip("\n"))
            assert match, line
            transport, port, url = match.groups()
            assert url.endswith(f"127.0.0.1:{port}")
            urls[transport] = url
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, urls


async def _stop(process: asyncio.subprocess.Process, sig: signal.Signals) -> str:
    """Signal `process`; it must exit 0 within the grace period (plus start-up slack)."""
    process.send_signal(sig)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    return stderr.decode()


def _assert_ports_released(urls: dict[str, str]) -> None:
    """Every listener's socket is gone: its port can be bound again."""
    for transport, url in urls.items():
        port = int(url.rpartition(":")[2])
        kind = socket.SOCK_DGRAM if transport == "quic" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


async def _flare_call(
    url: str, cert: Path, method: str, body: str, *extra: str
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *FLARE,
        "call",
        url,
        method,
        body,
        "--ca-cert",
        str(cert),
        *extra,
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
def cert(tmp_path: Path) -> CertificateFiles:
    return write_dev_certificate(tmp_path)


async def test_one_process_serves_websocket_quic_and_grpc_then_stops_on_sigterm(
    cert: CertificateFiles,
) -> None:
    process, urls = await _start(cert)
    try:
        assert list(urls) == ["websocket", "quic", "grpc"]
        # --tls-cert puts every transport on TLS: wss://, quic://, grpcs://.
        assert [url.partition(":")[0] for url in urls.values()] == ["wss", "quic", "grpcs"]
        token = issue_jwt(DEMO_KEY, "carol", scopes=("chat", "chat.write"))
        calls = [
            _flare_call(
                url,
                cert.certificate,
                SEND,
                json.dumps(
                    {"clientMessageId": f"c-{name}", "message": {"room": "r", "text": name}}
                ),
                "--token",
                token,
            )
            for name, url in urls.items()
        ]
        denied = [
            _flare_call(url, cert.certificate, SEND, '{"message": {"room": "r"}}')
            for url in urls.values()
        ]
        results = await asyncio.gather(*calls, *denied)
        sent, refused = results[:3], results[3:]
        for (status, stdout, stderr), url in zip(sent, urls.values(), strict=True):
            assert status == 0, f"{url}: {stderr}"
            assert json.loads(stdout)["messageId"].startswith("m"), stdout
        # One process, one ChatService: the three sends got three distinct sequence numbers.
        seqs = sorted(int(json.loads(stdout)["seq"]) for _, stdout, _ in sent)
        assert seqs == [1, 2, 3]
        for (status, _, stderr), url in zip(refused, urls.values(), strict=True):
            assert status == 1, url
            assert stderr.startswith("UNAUTHENTICATED:"), f"{url}: {stderr}"
    finally:
        stderr = await _stop(process, signal.SIGTERM)
    assert "Traceback" not in stderr, stderr
    _assert_ports_released(urls)


async def test_a_flare_client_reaches_all_three_then_sigint_stops_the_server(
    cert: CertificateFiles,
) -> None:
    process, urls = await _start(cert)
    trust = ssl.create_default_context(cafile=str(cert.certificate))
    token = issue_jwt(DEMO_KEY, "dave", scopes=("chat", "chat.write"))
    try:
        for url in urls.values():
            async with flare.connect(url, token=token, ssl_context=trust) as channel:
                client = ChatServiceClient(channel)
                stamp = await client.ping(empty_pb2.Empty(), timeout=10)
                assert stamp.seconds > 0
                call = client.chat()
                await call.send(chat_pb2.ChatMessage(room="bots", text=url))
                answer = await asyncio.wait_for(anext(aiter(call)), 10)
                assert answer.text == f"you said {url!r}"
                await call.done_writing()
                assert [reply async for reply in call] == []
    finally:
        stderr = await _stop(process, signal.SIGINT)
    assert "Traceback" not in stderr, stderr
    _assert_ports_released(urls)
