"""A server whose schema the ``flare`` command has never seen, for list/describe/call/watch.

The ``unseen.lab.v1.Lab`` schema below is generated with ``flare gen`` into a
temporary directory and served by ``flare serve`` from there; the command under
test runs as a subprocess from another directory, with a PYTHONPATH that lacks
the generated code. Everything it knows of the schema comes from the server's
reflection (or, with ``--generated``, from the directory named on its command line).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

FLARE = str(Path(sys.executable).with_name("flare"))

LAB_PROTO = """\
syntax = "proto3";

package unseen.lab.v1;

import "flare/options/v1/options.proto";
import "google/protobuf/timestamp.proto";

enum Mood {
  MOOD_UNSPECIFIED = 0;
  MOOD_HAPPY = 1;
}

message Sample {
  string name = 1;
  int64 count = 2;
  repeated string tags = 3;
  map<string, int32> scores = 4;
  oneof choice {
    string text = 5;
    bytes blob = 6;
  }
  optional Mood mood = 7;
  google.protobuf.Timestamp at = 8;
}

message Number { int64 value = 1; }
message Total { int64 sum = 1; int32 items = 2; }
message Ring { int32 times = 1; }

message Bell {
  option (flare.options.v1.message) = {push_type_id: 9};
  string text = 1;
}

service Lab {
  option (flare.options.v1.service) = {service_id: 77};
  rpc Echo(Sample) returns (Sample) { option (flare.options.v1.method) = {route_id: 1}; }
  rpc Count(Number) returns (stream Number) { option (flare.options.v1.method) = {route_id: 2}; }
  rpc Sum(stream Number) returns (Total) { option (flare.options.v1.method) = {route_id: 3}; }
  rpc Chat(stream Sample) returns (stream Sample) {
    option (flare.options.v1.method) = {route_id: 4};
  }
  rpc Fail(Sample) returns (Sample) { option (flare.options.v1.method) = {route_id: 5}; }
  rpc RingMe(Ring) returns (Total) { option (flare.options.v1.method) = {route_id: 6}; }
  rpc OnlyGrpc(Number) returns (Number) {
    option (flare.options.v1.method) = {route_id: 7, transports: [TRANSPORT_GRPC]};
  }
}
"""

LAB_SERVER = """\
import os

import flare_runtime as flare
from flare_runtime.errors import RpcError
from flare_runtime.status import StatusCode
from unseen.lab.v1 import lab_pb2
from unseen.lab.v1.lab_flare import LabBase


class Lab(LabBase):
    async def echo(self, request, context):
        context.set_response_headers({"x-lab": "echo"})
        context.set_trailers({"x-tags": str(len(request.tags))})
        return request

    async def count(self, request, context):
        for value in range(1, request.value + 1):
            yield lab_pb2.Number(value=value)

    async def sum(self, requests, context):
        total = lab_pb2.Total()
        async for number in requests:
            total.sum += number.value
            total.items += 1
        return total

    async def chat(self, requests, context):
        async for sample in requests:
            yield lab_pb2.Sample(name=sample.name.upper(), count=sample.count)

    async def fail(self, request, context):
        raise RpcError(StatusCode.FAILED_PRECONDITION, "the lab says no")

    async def ring_me(self, request, context):
        for index in range(request.times):
            context.connection.push(lab_pb2.Bell(text=f"ring {index + 1}"))
        return lab_pb2.Total(items=request.times)

    async def only_grpc(self, request, context):
        return request


server = flare.Server([Lab()], reflection=os.environ.get("LAB_REFLECTION") != "0")
"""

LINE = re.compile(r"^flare: serving (websocket|quic|grpc) on port (\d+) ")


@dataclass(frozen=True)
class Lab:
    """The lab server's URLs and what a client needs to run ``flare`` against it."""

    urls: dict[str, str]
    """Scheme ("ws", "grpc", "quic") -> the URL serving it."""
    generated: Path
    """Where the lab's generated code is (for ``--generated``; never on the CLI's path)."""
    elsewhere: Path
    """An empty directory to run the command in."""

    def run(
        self, *arguments: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``flare ARGUMENTS`` as a user would, from `elsewhere`."""
        return subprocess.run(
            [FLARE, *arguments],
            cwd=self.elsewhere,
            env=cli_environment(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def cli_environment() -> dict[str, str]:
    """The environment of the command under test: no PYTHONPATH of the test's."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("SSL_CERT_FILE", None)
    return env


def _serve(
    app: Path, arguments: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    process = subprocess.Popen(
        [FLARE, "serve", "lab_server:server", "--grace", "1", *arguments],
        cwd=app,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    ports: dict[str, int] = {}
    wanted = sum(1 for argument in arguments if argument in ("--ws", "--grpc", "--quic"))
    while len(ports) < wanted:
        line = process.stdout.readline()
        match = LINE.match(line)
        if match is None:
            process.kill()
            raise RuntimeError(f"flare serve did not start: {line!r}")
        ports[match.group(1)] = int(match.group(2))
    return process, ports


def _urls(ports: dict[str, int]) -> dict[str, str]:
    schemes = {"websocket": "ws", "grpc": "grpc", "quic": "quic"}
    return {schemes[name]: f"{schemes[name]}://127.0.0.1:{port}" for name, port in ports.items()}


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def lab_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the lab server module and, under generated/, its code."""
    app = tmp_path_factory.mktemp("lab-app")
    schemas = app / "schemas"
    (schemas / "unseen" / "lab" / "v1").mkdir(parents=True)
    (schemas / "unseen" / "lab" / "v1" / "lab.proto").write_text(LAB_PROTO)
    (app / "lab_server.py").write_text(LAB_SERVER)
    subprocess.run(
        [FLARE, "gen", str(schemas), "-o", str(app / "generated")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return app


@pytest.fixture(scope="session")
def lab(lab_app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab served on WebSocket and gRPC by ``flare serve``, with reflection."""
    process, ports = _serve(
        lab_app, ["--ws", "127.0.0.1:0", "--grpc", "127.0.0.1:0"], cli_environment()
    )
    try:
        yield Lab(
            urls=_urls(ports),
            generated=lab_app / "generated",
            elsewhere=tmp_path_factory.mktemp("elsewhere"),
        )
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def lab_without_reflection(
    lab_app: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """The lab served on WebSocket and gRPC with ``reflection=False``."""
    env = {**cli_environment(), "LAB_REFLECTION": "0"}
    process, ports = _serve(lab_app, ["--ws", "127.0.0.1:0", "--grpc", "127.0.0.1:0"], env)
    try:
        yield Lab(
            urls=_urls(ports),
            generated=lab_app / "generated",
            elsewhere=tmp_path_factory.mktemp("elsewhere"),
        )
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def lab_quic(
    lab_app: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Lab, CertificateFiles]]:
    """The lab served on QUIC (with a development certificate, which clients must trust)."""
    certificate = write_dev_certificate(tmp_path_factory.mktemp("lab-cert"))
    tls = ["--tls-cert", str(certificate.certificate), "--tls-key", str(certificate.private_key)]
    process, ports = _serve(lab_app, ["--quic", "127.0.0.1:0", *tls], cli_environment())
    try:
        lab = Lab(
            urls=_urls(ports),
            generated=lab_app / "generated",
            elsewhere=tmp_path_factory.mktemp("elsewhere"),
        )
        yield lab, certificate
    finally:
        _stop(process)
