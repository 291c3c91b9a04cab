"""``flare serve --workers 2``: real worker processes sharing real ports.

Each test runs the command as a user does (`ServedWorkers`, a subprocess) on
ports 0 with a development certificate, and reaches it with Flare's own
clients over WebSocket, QUIC and gRPC. Which worker answered is the pid the
test service returns (`worker_app`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import flare_runtime as flare
from flare_runtime.client import Channel
from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.status import StatusCode
from flare_runtime.testing.service import BytesValue, Routes
from flare_runtime.testing.workers import ServedWorkers
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate
from flare_runtime.wire.client import WireChannel

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
ALL = {"websocket": "127.0.0.1:0", "quic": "127.0.0.1:0", "grpc": "127.0.0.1:0"}
CALL_TIMEOUT = 10.0


def worker_env() -> dict[str, str]:
    """The environment ``flare serve`` runs in: generated/, the repository and this folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT), str(HERE)])
    return env


@pytest.fixture
def cert(tmp_path: Path) -> CertificateFiles:
    return write_dev_certificate(tmp_path)


@pytest.fixture
async def served(cert: CertificateFiles) -> AsyncIterator[ServedWorkers]:
    """Two workers serving WebSocket, QUIC and gRPC (TLS on all three)."""
    async with await ServedWorkers.start(
        "worker_app:server",
        ALL,
        workers=2,
        arguments=[*_tls(cert), "--grace", "3"],
        env=worker_env(),
        cwd=ROOT,
    ) as running:
        yield running


def _tls(cert: CertificateFiles) -> list[str]:
    return ["--tls-cert", str(cert.certificate), "--tls-key", str(cert.private_key)]


async def connect(url: str, cert: CertificateFiles) -> Channel:
    """A new connection to `url` (gRPC: its own subchannel, so its own TCP connection)."""
    trust = ssl.create_default_context(cafile=str(cert.certificate))
    if url.startswith("grpc"):
        options = [("grpc.use_local_subchannel_pool", 1)]
        return await flare.connect(url, ssl_context=trust, grpc_options=options)
    return await flare.connect(url, ssl_context=trust)


async def pid_of(channel: Channel) -> int:
    """The pid of the worker process serving `channel`."""
    reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"pid"), timeout=CALL_TIMEOUT)
    return int(reply.value)


async def test_two_workers_share_each_port_and_the_kernel_spreads_connections(
    served: ServedWorkers, cert: CertificateFiles
) -> None:
    assert sorted(served.pids) == [0, 1]
    workers = set(served.pids.values())
    assert len(workers) == 2
    assert set(served.urls) == {"websocket", "quic", "grpc"}
    for name, url in served.urls.items():
        channels = await asyncio.gather(*(connect(url, cert) for _ in range(12)))
        try:
            pids = await asyncio.gather(*(pid_of(channel) for channel in channels))
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        # 12 connections all on one of two workers: 1 chance in 2,048.
        assert set(pids) == workers, f"{name}: {pids}"
    assert "Traceback" not in served.stderr, served.stderr


async def test_a_killed_worker_is_restarted_and_the_other_workers_connections_go_on(
    served: ServedWorkers, cert: CertificateFiles
) -> None:
    # Connections on each worker, on every transport.
    channels: dict[str, list[tuple[Channel, int]]] = {}
    for name, url in served.urls.items():
        opened = await asyncio.gather(*(connect(url, cert) for _ in range(10)))
        channels[name] = [(channel, await pid_of(channel)) for channel in opened]
    victim, survivor = served.pids[0], served.pids[1]
    os.kill(victim, signal.SIGKILL)
    replacement = await served.wait_ready(0)
    assert replacement not in (victim, survivor)
    assert served.pids[1] == survivor
    assert "worker 0 (pid" in served.stderr and "SIGKILL; restarting" in served.stderr
    for name, pairs in channels.items():
        on_survivor = [channel for channel, pid in pairs if pid == survivor]
        on_victim = [channel for channel, pid in pairs if pid == victim]
        assert on_survivor and on_victim, f"{name}: all connections on one worker"
        # The survivor's connections are untouched: same worker, calls work.
        for channel in on_survivor:
            assert await pid_of(channel) == survivor, name
        if name == "quic":
            # ... and its QUIC datagrams still come straight from the kernel: the
            # restarted worker got its predecessor's socket back, so the kernel's
            # hashing of clients to sockets did not change (nothing was re-routed).
            routing = await on_survivor[0].unary_unary(
                Routes.ECHO, BytesValue(value=b"routing"), timeout=CALL_TIMEOUT
            )
            assert routing.value.split()[:2] == [str(survivor).encode(), b"0"]
        # The victim's WebSocket connections were reset with it. (Its QUIC clients
        # learn only from their keepalive; gRPC's channel reconnects by itself.)
        if name == "websocket":
            for channel in on_victim:
                with pytest.raises(RpcError) as failed:
                    await asyncio.wait_for(pid_of(channel), 3.0)
                assert failed.value.code == StatusCode.UNAVAILABLE
        await asyncio.gather(*(channel.close() for channel, _ in pairs))
    # New connections reach the restarted worker too.
    url = served.urls["websocket"]
    fresh = await asyncio.gather(*(connect(url, cert) for _ in range(12)))
    try:
        assert {await pid_of(channel) for channel in fresh} == {replacement, survivor}
    finally:
        await asyncio.gather(*(channel.close() for channel in fresh))


async def test_sigterm_drains_every_worker_calls_in_flight_finish_and_it_exits_0(
    served: ServedWorkers, cert: CertificateFiles
) -> None:
    channels = [await connect(url, cert) for url in served.urls.values() for _ in range(4)]
    slow = [
        asyncio.create_task(
            channel.unary_unary(
                Routes.ECHO,
                BytesValue(value=b"in flight"),
                metadata={"x-sleep": "1.0"},
                timeout=CALL_TIMEOUT,
            )
        )
        for channel in channels
    ]
    await asyncio.sleep(0.5)  # every call has reached its worker
    served.process.send_signal(signal.SIGTERM)
    replies = await asyncio.gather(*slow)
    assert [reply.value for reply in replies] == [b"in flight"] * len(channels)
    # WebSocket and QUIC clients were told to go away (Flare GOAWAY).
    wire = [channel for channel in channels if isinstance(channel, WireChannel)]
    assert len(wire) == 8
    assert all(channel.endpoint.going_away for channel in wire)
    assert await served.stop(None) == 0, served.stderr
    await asyncio.gather(*(channel.close() for channel in channels))
    assert "Traceback" not in served.stderr, served.stderr
    _assert_ports_released(served.urls)


async def test_a_second_signal_kills_workers_that_are_still_draining(
    served: ServedWorkers, cert: CertificateFiles
) -> None:
    channel = await connect(served.urls["websocket"], cert)
    call = asyncio.create_task(
        channel.unary_unary(
            Routes.ECHO, BytesValue(value=b"x"), metadata={"x-sleep": "30"}, timeout=60
        )
    )
    await asyncio.sleep(0.3)
    served.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await served.stop(signal.SIGINT, timeout=10) == 1
    assert loop.time() - started < 5
    assert served.stderr.count("a second signal: killing workers still running") == 1
    with pytest.raises((ConnectionClosedError, RpcError)):
        await call
    await channel.close()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (
            "worker_app:memory_broker_server",
            "ClusterNode: the in-process MemoryBroker links only the nodes of one process; "
            "with several workers use a broker they all reach (RedisBroker)",
        ),
        (
            "worker_app:sqlite_im_server",
            "SqliteStorage (im.db): one SQLite file cannot be shared by worker processes; "
            "with several workers use PostgresStorage",
        ),
    ],
)
async def test_a_server_whose_parts_cannot_be_shared_is_refused_in_one_line(
    target: str, reason: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flare_runtime.cli",
        "serve",
        target,
        "--ws",
        "127.0.0.1:0",
        "--workers",
        "2",
        env=worker_env(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert stderr.decode().splitlines() == [f"flare serve: --workers 2: {reason}"]
    assert b"serving" not in stdout


async def test_a_bad_target_stops_everything_with_one_line_and_no_restarts() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flare_runtime.cli",
        "serve",
        "no_such_module:server",
        "--ws",
        "127.0.0.1:0",
        "--workers",
        "2",
        env=worker_env(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert stderr.decode().splitlines() == ["flare serve: No module named 'no_such_module'"]


async def test_workers_refuse_a_port_a_single_process_server_holds() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flare_runtime.cli",
            "serve",
            "worker_app:server",
            "--grpc",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            env=worker_env(),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert stderr.decode() == (
        f"flare serve: cannot listen on 127.0.0.1:{port} (grpc): "
        "[Errno 98] Address already in use\n"
    )


async def test_a_single_process_server_cannot_join_the_workers_port(
    served: ServedWorkers,
) -> None:
    for name, url in served.urls.items():
        port = int(url.rpartition(":")[2])
        kind = socket.SOCK_DGRAM if name == "quic" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as stranger:
            stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="Address already in use"):
                stranger.bind(("127.0.0.1", port))
                stranger.listen() if kind == socket.SOCK_STREAM else None


def _assert_ports_released(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        port = int(url.rpartition(":")[2])
        kind = socket.SOCK_DGRAM if name == "quic" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


async def test_workers_drain_and_exit_when_their_supervisor_is_killed(
    served: ServedWorkers,
) -> None:
    workers = list(served.pids.values())
    served.process.kill()  # SIGKILL: the supervisor cannot tell anyone
    await served.process.wait()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(_alive(pid) for pid in workers):
        assert loop.time() < deadline, "workers outlived their supervisor"
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: its parent died, init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_workers_that_do_not_stop_within_grace_and_5_s_are_killed(
    cert: CertificateFiles,
) -> None:
    async with await ServedWorkers.start(
        "worker_app:server",
        {"websocket": "127.0.0.1:0"},
        workers=2,
        arguments=["--grace", "0.1"],
        env=worker_env(),
        cwd=ROOT,
    ) as served:
        stuck = served.pids[1]
        os.kill(stuck, signal.SIGSTOP)  # cannot drain, cannot exit
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await served.stop(timeout=20) == 1
        assert 5.0 <= loop.time() - started < 10.0
        message = f"not stopped 5.1 s after the signal: killing workers still running (pid {stuck})"
        assert served.stderr.count(message) == 1, served.stderr
