"""``flare call`` against a server whose schema it has never seen (tests/runtime/cli/conftest.py).

Every route and message type comes from the server's reflection: Flare's on
ws:// and quic://, gRPC's on grpc://. The command runs as a subprocess from a
directory without the generated code, with no PYTHONPATH.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flare_runtime.transports.quic_certs import CertificateFiles
from tests.runtime.cli.conftest import FLARE, Lab, cli_environment

ECHO = "/unseen.lab.v1.Lab/Echo"
SAMPLE = {
    "name": "probe",
    "count": "3",
    "tags": ["a", "b"],
    "scores": {"x": 1},
    "text": "hi",
    "mood": "MOOD_HAPPY",
    "at": "2026-01-02T03:04:05Z",
}


def _lines(out: str) -> list[object]:
    return [json.loads(line) for line in out.splitlines()]


def test_the_command_cannot_import_the_lab_schema(lab: Lab) -> None:
    """The premise: the generated code is not on the command's path."""
    probe = subprocess.run(
        [str(Path(FLARE).with_name("python")), "-c", "import unseen.lab.v1.lab_pb2"],
        cwd=lab.elsewhere,
        env=cli_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 1
    assert "ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_unary_round_trips_every_kind_of_field(lab: Lab, scheme: str) -> None:
    result = lab.run("call", lab.urls[scheme], ECHO, json.dumps(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout) == [SAMPLE]
    assert result.stderr == ""


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_verbose_prints_route_headers_trailers_and_status(lab: Lab, scheme: str) -> None:
    result = lab.run("call", lab.urls[scheme], ECHO, '{"tags": ["a"]}', "-v", "-H", "x-probe: 1")
    assert result.returncode == 0, result.stderr
    err = result.stderr.splitlines()
    route = "route: /unseen.lab.v1.Lab/Echo (unary"
    assert err[0] == (f"{route}, wire id 77:1)" if scheme == "ws" else f"{route})")
    assert err[1:3] == ["request metadata:", "  x-probe: 1"]
    headers = err.index("response headers:")
    assert "  x-lab: echo" in err[headers + 1 : err.index("response trailers:")]
    assert "  x-tags: 1" in err[err.index("response trailers:") :]
    assert err[-2:] == ["status: OK", "sent 1 request(s), received 1 response(s)"]


def test_emit_defaults_prints_fields_holding_their_default(lab: Lab) -> None:
    plain = lab.run("call", lab.urls["ws"], ECHO, "{}")
    full = lab.run("call", lab.urls["ws"], ECHO, "{}", "--emit-defaults")
    assert _lines(plain.stdout) == [{}]
    (everything,) = _lines(full.stdout)
    assert everything == {"name": "", "count": "0", "tags": [], "scores": {}}


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_server_stream_prints_one_line_per_response(lab: Lab, scheme: str) -> None:
    result = lab.run("call", lab.urls[scheme], "unseen.lab.v1.Lab.Count", '{"value": 3}')
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout) == [{"value": "1"}, {"value": "2"}, {"value": "3"}]


@pytest.mark.parametrize(
    "request_text",
    ['[{"value": 1}, {"value": 2}, {"value": 4}]', '{"value": 1}\n{"value": 2}\n{"value": 4}\n'],
    ids=["array", "ndjson"],
)
@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_client_stream_takes_an_array_or_ndjson(lab: Lab, scheme: str, request_text: str) -> None:
    result = lab.run("call", lab.urls[scheme], "/unseen.lab.v1.Lab/Sum", request_text)
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout) == [{"sum": "7", "items": 3}]


def test_client_stream_reads_ndjson_from_a_pipe_and_from_a_file(lab: Lab, tmp_path: Path) -> None:
    ndjson = "".join(f'{{"value": {value}}}\n' for value in range(1, 101))
    piped = lab.run("call", lab.urls["ws"], "/unseen.lab.v1.Lab/Sum", "-", stdin=ndjson)
    assert _lines(piped.stdout) == [{"sum": "5050", "items": 100}], piped.stderr
    file = tmp_path / "numbers.ndjson"
    file.write_text(ndjson)
    with file.open() as stdin:
        from_file = subprocess.run(
            [FLARE, "call", lab.urls["grpc"], "/unseen.lab.v1.Lab/Sum", "-"],
            stdin=stdin,
            cwd=lab.elsewhere,
            env=cli_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert _lines(from_file.stdout) == [{"sum": "5050", "items": 100}], from_file.stderr


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_bidi_answers_each_request_as_it_is_read(lab: Lab, scheme: str) -> None:
    """Requests piped one per line reach the server while stdin is still open."""
    process = subprocess.Popen(
        [FLARE, "call", lab.urls[scheme], "/unseen.lab.v1.Lab/Chat", "-"],
        cwd=lab.elsewhere,
        env=cli_environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write('{"name": "one"}\n')
        process.stdin.flush()
        # The answer to the first request arrives before the second is written.
        assert json.loads(process.stdout.readline()) == {"name": "ONE"}
        process.stdin.write('{"name": "two"}\n')
        process.stdin.close()
        assert json.loads(process.stdout.readline()) == {"name": "TWO"}
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_an_rpc_error_is_its_code_and_message(lab: Lab, scheme: str) -> None:
    result = lab.run("call", lab.urls[scheme], "/unseen.lab.v1.Lab/Fail", "{}")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "FAILED_PRECONDITION: the lab says no\n"


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/unseen.lab.v1.Lab/Nope", "service unseen.lab.v1.Lab has no method Nope (it has: Echo"),
        ("/unseen.lab.v1.Nothing/Echo", "serves no symbol 'unseen.lab.v1.Nothing'"),
        ("Echo", "'Echo' is not a method name"),
    ],
)
def test_an_unknown_route_is_one_line_and_exit_2(lab: Lab, method: str, expected: str) -> None:
    result = lab.run("call", lab.urls["ws"], method, "{}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("flare call: ")
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_route_not_served_on_the_transport_is_refused_before_calling(lab: Lab) -> None:
    refused = lab.run("call", lab.urls["ws"], "/unseen.lab.v1.Lab/OnlyGrpc", '{"value": 5}')
    assert refused.returncode == 2
    assert refused.stderr == (
        "flare call: /unseen.lab.v1.Lab/OnlyGrpc is not served on websocket (served on: grpc)\n"
    )
    served = lab.run("call", lab.urls["grpc"], "/unseen.lab.v1.Lab/OnlyGrpc", '{"value": 5}')
    assert _lines(served.stdout) == [{"value": "5"}], served.stderr


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_generated_code_serves_a_server_without_reflection(
    lab_without_reflection: Lab, scheme: str
) -> None:
    lab = lab_without_reflection
    url = lab.urls[scheme]
    without = lab.run("call", url, ECHO, '{"name": "x"}')
    assert without.returncode == 2
    assert without.stderr.startswith("flare call: the server serves no ")
    assert "--generated DIR" in without.stderr
    local = lab.run("call", url, ECHO, '{"name": "x"}', "--generated", str(lab.generated))
    assert _lines(local.stdout) == [{"name": "x"}], local.stderr


def test_quic(lab_quic: tuple[Lab, CertificateFiles]) -> None:
    lab, certificate = lab_quic
    ca = ["--ca-cert", str(certificate.certificate)]
    result = lab.run("call", lab.urls["quic"], "/unseen.lab.v1.Lab/Count", '{"value": 2}', *ca)
    assert _lines(result.stdout) == [{"value": "1"}, {"value": "2"}], result.stderr


def test_a_websocket_call_imports_no_other_transport_and_no_jwt(lab: Lab) -> None:
    """What keeps a one-shot call fast (bench/cli_bench.py): grpc, aioquic, pyjwt and
    cryptography, the code generator and uvloop stay unimported."""
    probe = (
        "import sys\n"
        "from flare_runtime.cli import main\n"
        f"status = main(['call', {lab.urls['ws']!r}, {ECHO!r}, '{{}}'])\n"
        "heavy = {'grpc', 'aioquic', 'jwt', 'cryptography', 'flare_codegen', 'uvloop'}\n"
        "print(status, sorted({name.split('.')[0] for name in sys.modules} & heavy))\n"
    )
    result = subprocess.run(
        [str(Path(FLARE).with_name("python")), "-c", probe],
        cwd=lab.elsewhere,
        env=cli_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr
