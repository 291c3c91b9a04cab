"""Bad input and unreachable or hostile servers for the `flare call` command.

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). The real
``flare`` command runs in a child process, as a user runs it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flare_runtime.testing.served import ServedProcess
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

ROOT = Path(__file__).resolve().parents[2]
FLARE = str(Path(sys.executable).with_name("flare"))
PING = "/examples.chat.v1.ChatService/Ping"
CHAT = "examples.chat.service:server"
C_CORE_LINE = re.compile(r"^[DIWEF]\d{4} ", re.MULTILINE)
"""A line of gRPC C-core's own log (``E1207 03:15:07.125274 ... file.cc:123] ...``)."""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    env.pop("FLARE_DEMO_JWT_KEY", None)
    env.pop("SSL_CERT_FILE", None)
    env.update(extra)
    return env


async def flare_call(*arguments: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``flare call ...``; return (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        FLARE,
        "call",
        *arguments,
        "--generated",
        str(ROOT / "generated"),
        cwd=ROOT,
        env=env or _env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err, err
    assert not C_CORE_LINE.search(err), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert not lines[0].rstrip().endswith(":"), err  # a reason follows every colon
    assert "None" not in lines[0], err


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return write_dev_certificate(tmp_path_factory.mktemp("call-cert"))


@pytest.mark.parametrize("content", [None, b"this is not a certificate\n"], ids=["missing", "junk"])
async def test_a_ca_cert_that_is_missing_or_not_pem_is_one_line(
    tmp_path: Path, content: bytes | None
) -> None:
    """Input: ``flare call --ca-cert FILE`` where FILE does not exist, or is not PEM.
    Outcome: exit 2 and one line naming the file, before connecting (was a traceback)."""
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    status, _, err = await flare_call("wss://127.0.0.1:1", PING, "{}", "--ca-cert", str(path))
    assert status == 2, err
    assert err.startswith(f"flare call: cannot use --ca-cert {path}: ")
    assert_one_line_error(err)


async def test_extra_requests_for_a_unary_method_are_refused() -> None:
    """Input: a JSON array of two requests for a unary method. Outcome: exit 2, "takes one
    request, got 2", before connecting (the second request was silently dropped, exit 0)."""
    status, _, err = await flare_call("ws://127.0.0.1:1", PING, "[{}, {}]")
    assert status == 2, err
    assert "takes one request, got 2" in err
    assert_one_line_error(err)


@pytest.fixture
def black_hole() -> Iterator[tuple[int, int]]:
    """A TCP port that accepts connections and never answers, and a UDP port nobody reads."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        udp.bind(("127.0.0.1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]


@pytest.mark.parametrize("scheme", ["ws", "wss", "quic", "grpc", "grpcs"])
@pytest.mark.parametrize("option", ["--timeout", "--connect-timeout"])
async def test_a_server_that_never_answers_is_given_up_on_in_time(
    black_hole: tuple[int, int], scheme: str, option: str
) -> None:
    """Input: ``flare call`` to an address that never answers (TCP accepted but silent; a
    UDP port nobody reads for quic), with ``--timeout 1`` or ``--connect-timeout 1``.
    Outcome: exit 1 within a few seconds with one line saying it timed out, on every
    scheme (quic:// took ~10.6 s whatever --timeout said)."""
    tcp_port, udp_port = black_hole
    port = udp_port if scheme == "quic" else tcp_port
    started = time.monotonic()
    status, _, err = await flare_call(f"{scheme}://127.0.0.1:{port}", PING, "{}", option, "1")
    elapsed = time.monotonic() - started
    assert status == 1, err
    assert "timed out" in err or "DEADLINE_EXCEEDED" in err, err
    assert_one_line_error(err)
    assert elapsed < 8.0, f"took {elapsed:.1f} s"  # the default connect timeout is 10 s


@pytest.fixture
def closing_port() -> Iterator[int]:
    """A TCP port whose server accepts each connection and closes it at once."""
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.05)

        def close_each() -> None:
            while not stop.is_set():
                try:
                    connection, _ = server.accept()
                except OSError:  # the accept timed out
                    continue
                connection.close()

        thread = threading.Thread(target=close_each, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            thread.join(timeout=2)


@pytest.mark.parametrize("scheme", ["ws", "wss", "grpc", "grpcs"])
async def test_a_connection_closed_by_the_server_is_reported_with_a_reason(
    closing_port: int, scheme: str
) -> None:
    """Input: ``flare call`` to a server that accepts and closes each connection at once.
    Outcome: exit 1 with one line that says what happened (was ``cannot connect to
    wss://…: `` with nothing after it, or ``…handshake: None``)."""
    status, _, err = await flare_call(f"{scheme}://127.0.0.1:{closing_port}", PING, "{}")
    assert status == 1, err
    assert_one_line_error(err)


@pytest.fixture
async def grpcs_server(certificate: CertificateFiles) -> AsyncIterator[int]:
    async with ServedProcess.start(
        CHAT, grpc=True, tls=certificate, cwd=ROOT, env={"FLARE_DEMO_JWT_KEY": None}
    ) as served:
        yield served.ports["grpc"]


async def test_grpcs_trusts_ssl_cert_file_like_wss_and_quic(
    certificate: CertificateFiles, grpcs_server: int
) -> None:
    """Input: ``SSL_CERT_FILE=dev-cert.pem flare call grpcs://…`` against a server with that
    self-signed certificate. Outcome: the call succeeds, as it does for wss:// and quic://
    (grpcs ignored the variable)."""
    env = _env(SSL_CERT_FILE=str(certificate.certificate))
    status, out, err = await flare_call(f"grpcs://localhost:{grpcs_server}", PING, "{}", env=env)
    assert status == 0, err
    assert out.strip().startswith('"')  # a Timestamp's JSON is a string
    assert not C_CORE_LINE.search(err), err


async def test_an_untrusted_grpcs_server_is_one_line_without_c_core_logs(
    grpcs_server: int,
) -> None:
    """Input: ``flare call grpcs://…`` to a server whose certificate is not trusted.
    Outcome: exit 1 and one line of Flare's; none of gRPC C-core's own log lines (it
    printed ``E1207 … ssl_transport_security.cc … CERTIFICATE_VERIFY_FAILED`` lines)."""
    status, _, err = await flare_call(
        f"grpcs://localhost:{grpcs_server}", PING, "{}", "--connect-timeout", "3"
    )
    assert status == 1, err
    assert_one_line_error(err)
