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
from flare.reflection.v1 import reflection_pb2
from flare.reflection.v1.reflection_flare import ReflectionBase
from google.protobuf import descriptor_pb2

from flare_runtime.context import CallContext
from flare_runtime.server import Server
from flare_runtime.testing.served import ServedProcess
from flare_runtime.testing.service import SERVICE, ConformanceService
from flare_runtime.testing.timing import UNIT, wait_until
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


async def flare_call(
    *arguments: str,
    env: dict[str, str] | None = None,
    generated: bool = True,
    stdin: bytes | None = None,
) -> tuple[int, str, str]:
    """Run ``flare call ...`` (with ``--generated`` unless `generated` is False);
    return (exit status, stdout, stderr)."""
    local = ["--generated", str(ROOT / "generated")] if generated else []
    process = await asyncio.create_subprocess_exec(
        FLARE,
        "call",
        *arguments,
        *local,
        cwd=ROOT,
        env=env or _env(),
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
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
    # Beside a run refused before it connects (two requests for a unary method), in the
    # same moment: what starting the process costs on a loaded machine is not counted
    # against the 1 s given (the default connect timeout is 10 s).
    started = time.monotonic()
    status, _, err = await flare_call(f"{scheme}://127.0.0.1:{port}", PING, "[{}, {}]")
    starting = time.monotonic() - started
    assert status == 2, err
    waited = elapsed - starting
    assert waited < 6.0, f"took {elapsed:.1f} s, {waited:.1f} s more than a run that never connects"


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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost:8080", "bad URL 'localhost:8080': expected SCHEME://HOST[:PORT]"),
        ("ws://", "bad URL 'ws://': expected SCHEME://HOST[:PORT]"),
        ("ws://127.0.0.1:99999", "bad URL 'ws://127.0.0.1:99999': Port out of range"),
        ("ws://127.0.0.1:http", "bad URL 'ws://127.0.0.1:http': Port could not be cast"),
        ("http://127.0.0.1:1", "unsupported URL scheme http://"),
    ],
)
async def test_a_malformed_url_is_one_line_before_connecting(url: str, expected: str) -> None:
    """Input: ``flare call URL`` where URL has no scheme, no host, a bad port, or a scheme
    no transport serves. Outcome: exit 2 and one line naming the URL and what is wrong."""
    status, _, err = await flare_call(url, PING, "{}", generated=False)
    assert status == 2, err
    assert err.startswith("flare call: "), err
    assert expected in err
    assert_one_line_error(err)


async def test_an_untrusted_quic_server_is_one_line_without_library_logs(
    certificate: CertificateFiles,
) -> None:
    """Input: ``flare call quic://…`` to a server whose certificate is not trusted.
    Outcome: exit 1 and one line of Flare's (aioquic's own warning, ``[id] Error: 298,
    reason: self-signed certificate``, reached stderr through logging's last resort)."""
    async with ServedProcess.start(
        CHAT, quic=True, tls=certificate, cwd=ROOT, env={"FLARE_DEMO_JWT_KEY": None}
    ) as served:
        url = f"quic://127.0.0.1:{served.ports['quic']}"
        status, _, err = await flare_call(url, PING, "{}", "--connect-timeout", "5")
    assert status == 1, err
    assert "self-signed certificate" in err
    assert_one_line_error(err)


class _LyingReflection(ReflectionBase):
    """A reflection service answering with the descriptors a test gives it."""

    def __init__(self, files: list[bytes]) -> None:
        self.files = files

    async def list_services(
        self, request: reflection_pb2.ListServicesRequest, context: CallContext
    ) -> reflection_pb2.ListServicesReply:
        reply = reflection_pb2.ListServicesReply()
        reply.services.add(name="evil.v1.Evil", service_id=9).routes.add(method="Do", route_id=1)
        return reply

    async def get_files(
        self, request: reflection_pb2.GetFilesRequest, context: CallContext
    ) -> reflection_pb2.GetFilesReply:
        return reflection_pb2.GetFilesReply(file_descriptor_protos=self.files)


def _evil_file(*, dependency: str | None = None, input_type: str = ".evil.v1.M") -> bytes:
    proto = descriptor_pb2.FileDescriptorProto(name="evil.proto", package="evil.v1")
    proto.message_type.add(name="M")
    proto.service.add(name="Evil").method.add(
        name="Do", input_type=input_type, output_type=".evil.v1.M"
    )
    if dependency is not None:
        proto.dependency.append(dependency)
    return proto.SerializeToString()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([b"\xff\xff\xff"], "the server sent a descriptor that does not parse"),
        (
            [_evil_file(dependency="missing.proto")],
            "evil.proto imports missing.proto, which it did not send",
        ),
        (
            [_evil_file(input_type=".evil.v1.Nowhere")],
            "the server sent a descriptor that cannot be used: evil.proto",
        ),
        ([], "the server sent no descriptor for service evil.v1.Evil"),
    ],
    ids=["garbage", "missing-import", "dangling-type", "nothing"],
)
async def test_descriptors_a_server_lies_with_are_one_line(
    files: list[bytes], expected: str
) -> None:
    """Input: ``flare call`` to a server whose reflection answers with descriptors that do
    not parse, import files it does not send, name types that do not exist, or are
    missing. Outcome: exit 2 and one line saying what the server sent; nothing called."""
    server = Server([_LyingReflection(files)], reflection=False)
    await server.start(websocket="127.0.0.1:0")
    try:
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        status, out, err = await flare_call(url, "/evil.v1.Evil/Do", "{}", generated=False)
    finally:
        await server.shutdown(grace=0)
    assert (status, out) == (2, ""), err
    assert expected in err
    assert_one_line_error(err)


async def test_bad_json_in_the_middle_of_a_streamed_stdin_cancels_the_call() -> None:
    """Input: ``flare call URL /…/BidiEcho -`` with stdin holding a good request, then a line
    that is not JSON. Outcome: exit 2 and one line naming the bad JSON; the call is
    cancelled on the server, not left open and not finished. (Whether its handler ran at
    all depends on whether the server read the cancellation in the same batch as the call's
    start: a handler cancelled before its first step never counts itself started.)"""
    service = ConformanceService()
    server = Server([(SERVICE, service)])
    await server.start(websocket="127.0.0.1:0")
    try:
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        status, _, err = await flare_call(
            url, f"/{SERVICE.name}/BidiEcho", "-", stdin=b'"aGk="\n{nope}\n', generated=False
        )
        await wait_until(
            lambda: not server.connections and service.cancelled == service.started, 10 * UNIT
        )
    finally:
        await server.shutdown(grace=0)
    assert status == 2, err
    assert err.startswith("flare call: bad request JSON"), err
    assert_one_line_error(err)
    assert service.started <= 1 and service.finished == 0
