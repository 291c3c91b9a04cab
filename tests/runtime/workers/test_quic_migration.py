"""QUIC connection migration with two workers sharing the port (docs/cluster.md, "Workers").

A client moves to a new local port again and again (`QuicChannel.rebind`,
what a NAT rebinding looks like to the server). The kernel hashes each new
address to either worker; when it picks the one that does not hold the
connection, that worker routes the datagrams to the one that does
(`flare_runtime.transports.quic_workers`). Either way the connection must go
on, on the same worker, each call answered within a bound -- never a hang.
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import pytest

import flare_runtime as flare
from flare_runtime.testing.service import BytesValue, Routes
from flare_runtime.testing.workers import ServedWorkers
from flare_runtime.transports.quic import QuicChannel
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
MOVES = 24
"""Rebinds tried: the chance that none lands on the other worker is 1 in 2**24."""
BOUND = 3.0
"""Seconds a call may take after a move (a lost connection would take 20-60 s)."""


@pytest.fixture
def cert(tmp_path: Path) -> CertificateFiles:
    return write_dev_certificate(tmp_path)


async def test_a_client_that_changes_address_keeps_its_connection_and_its_worker(
    cert: CertificateFiles,
) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT), str(HERE)])
    tls = ["--tls-cert", str(cert.certificate), "--tls-key", str(cert.private_key)]
    async with await ServedWorkers.start(
        "worker_app:server", {"quic": "127.0.0.1:0"}, workers=2, arguments=tls, env=env, cwd=ROOT
    ) as served:
        trust = ssl.create_default_context(cafile=str(cert.certificate))
        channel = await flare.connect(served.urls["quic"], ssl_context=trust)
        assert isinstance(channel, QuicChannel)

        async def routing() -> tuple[int, int]:
            reply = await channel.unary_unary(
                Routes.ECHO, BytesValue(value=b"routing"), timeout=BOUND
            )
            pid, routed, *_ = reply.value.split()
            return int(pid), int(routed)

        owner, routed_before = await routing()
        assert owner in served.pids.values()
        rerouted = 0
        slowest = 0.0
        ports = set()
        for _ in range(MOVES):
            ports.add((await channel.rebind())[1])
            started = time.monotonic()
            pid, routed = await routing()
            slowest = max(slowest, time.monotonic() - started)
            assert pid == owner  # same connection, same worker
            if routed > routed_before:
                rerouted += 1
                routed_before = routed
                if rerouted >= 3:
                    break
        await channel.close()
        assert len(ports) > 1
        assert rerouted >= 1, "no move was hashed to the other worker"
        assert slowest < BOUND
        assert await served.stop() == 0
