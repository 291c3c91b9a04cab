"""``flare serve`` (one process) on a port another server holds: exit 2, "address already in use".

For each transport the port is held by a running Flare server; ``flare
serve`` must not start beside it (grpcio's default SO_REUSEPORT would have
let a second gRPC server start silently and take half the connections).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from flare_runtime.server import Server, TLSFiles
from flare_runtime.testing.service import SERVICE, ConformanceService
from flare_runtime.transports.quic_certs import write_dev_certificate

ROOT = Path(__file__).resolve().parents[3]
OPTIONS = {"websocket": "--ws", "grpc": "--grpc", "quic": "--quic"}


@pytest.mark.parametrize("transport", list(OPTIONS))
async def test_flare_serve_on_a_busy_port_exits_2_with_address_already_in_use(
    transport: str, tmp_path: Path
) -> None:
    cert = write_dev_certificate(tmp_path)
    tls = TLSFiles(str(cert.certificate), str(cert.private_key))
    holder = Server([(SERVICE, ConformanceService())])
    await holder.start(**{transport: "127.0.0.1:0"}, tls=tls)  # type: ignore[arg-type]
    try:
        port = holder.port(transport)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "generated"), str(ROOT)]))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flare_runtime.cli",
            "serve",
            "examples.chat.service:server",
            OPTIONS[transport],
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(cert.certificate),
            "--tls-key",
            str(cert.private_key),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await holder.shutdown(0)
    assert process.returncode == 2
    assert stdout == b""
    flare_lines = [
        line for line in stderr.decode().splitlines() if line.startswith("flare serve: ")
    ]
    assert len(flare_lines) == 1, stderr.decode()
    assert "ddress already in use" in flare_lines[0], flare_lines
    assert "Traceback" not in stderr.decode()
