"""Hostile input against ``flare serve --workers N``: its command line, the workers' QUIC
routing sockets, and junk datagrams on a shared QUIC port.

Each test's docstring states the input and the promised outcome.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration

import flare_runtime as flare
from flare_runtime.server import SharedPorts
from flare_runtime.testing.service import BytesValue, Routes
from flare_runtime.testing.workers import ServedWorkers
from flare_runtime.transports.quic_certs import write_dev_certificate
from flare_runtime.transports.quic_workers import ASKS_PER_SECOND, FORWARD, WorkerRouting

ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = ROOT / "tests" / "runtime" / "workers"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT), str(WORKER_APP)])
    return env


@pytest.mark.parametrize("count", ["0", "-3", "many", "2.5", ""])
def test_a_worker_count_that_is_not_a_positive_number_is_one_usage_line(count: str) -> None:
    """``--workers 0`` (or -3, many, 2.5, empty): exit 2 with argparse's one-line error
    naming the value; nothing is bound or forked."""
    command = ["serve", "worker_app:server", "--ws", "127.0.0.1:0", "--workers", count]
    result = subprocess.run(
        [sys.executable, "-m", "flare_runtime.cli", *command],
        check=False,
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"expected a positive number or auto, got {count!r}" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


async def test_junk_on_a_workers_routing_socket_is_dropped(tmp_path: Path) -> None:
    """Bytes that are not a routing message, or a message from a worker index that does
    not exist, arriving on a worker's routing socket: dropped without an exception, no
    datagram handed to aioquic, no counter moved."""
    routing = WorkerRouting(SharedPorts(0, 2, directory=str(tmp_path)), 8)
    routing.wrap(QuicServer(configuration=QuicConfiguration(is_client=False)))
    junk = [b"", b"\x00", b"\xff" * 64, os.urandom(1500)]
    forged = bytes([FORWARD]) + (7).to_bytes(2, "big") + b"\x08" + bytes(8) + b"\x00\x01\x00"
    for data in [*junk, forged]:
        routing.peer_message(data)
    stats = routing.stats
    assert (stats.received, stats.asked, stats.forwarded, stats.dropped) == (0, 0, 0, 0)


async def test_a_flood_of_unknown_short_header_datagrams_is_rate_limited(
    tmp_path: Path,
) -> None:
    """20,000 junk short-header datagrams (random connection ids) at a QUIC port two workers
    share: each worker asks the other at most ASKS_PER_SECOND times a second and drops the
    rest; a client connected meanwhile is served, its calls answer."""
    cert = write_dev_certificate(tmp_path)
    tls = ["--tls-cert", str(cert.certificate), "--tls-key", str(cert.private_key)]
    async with await ServedWorkers.start(
        "worker_app:server", {"quic": "127.0.0.1:0"}, workers=2, arguments=tls, env=_env(), cwd=ROOT
    ) as served:
        port = int(served.urls["quic"].rpartition(":")[2])
        trust = ssl.create_default_context(cafile=str(cert.certificate))
        channel = await flare.connect(served.urls["quic"], ssl_context=trust)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # From 16 source ports: the kernel hashes them over both workers (all 16 on
        # the other worker than the client's: 1 chance in 65,536).
        floods = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
        try:
            for number in range(20_000):
                junk = b"\x41" + os.urandom(8) + bytes(40)
                floods[number % 16].sendto(junk, ("127.0.0.1", port))
                if number % 2_000 == 0:
                    await asyncio.sleep(0)
        finally:
            for flood in floods:
                flood.close()
        seconds = loop.time() - started
        await asyncio.sleep(0.5)
        reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"routing"), timeout=10)
        _, _, asked, dropped = (int(field) for field in reply.value.split())
        assert asked <= ASKS_PER_SECOND * (seconds + 1.5)
        assert asked + dropped > 0  # the flood reached this worker and was handled
        await channel.close()
        assert await served.stop() == 0
