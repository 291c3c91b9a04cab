"""Each invalid use of Flare options fails protoc with ``file.proto:line:col: message``.

These run the real ``python -m grpc_tools.protoc --flare_out`` with the plugin
found on PATH, exactly as a user would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

RunProtoc = Callable[..., subprocess.CompletedProcess[str]]

HEADER = """syntax = "proto3";
package bad.v1;
import "flare/options/v1/options.proto";
message Req {}
message Reply {}
"""


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    needle: str
    """Text at the reported position (its first character)."""
    message: str
    occurrence: int = 1
    parameters: str = ""


def _position(source: str, needle: str, occurrence: int) -> str:
    index = -1
    for _ in range(occurrence):
        index = source.index(needle, index + 1)
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return f"{line}:{column}"


CASES = [
    Case(
        "duplicate-route-id",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc A(Req) returns (Reply) { option (flare.options.v1.method) = {route_id: 1}; }
  rpc B(Req) returns (Reply) { option (flare.options.v1.method).route_id = 1; }
}""",
        "option (flare.options.v1.method).route_id",
        "route_id 1 of bad.v1.S.B is already used by bad.v1.S.A",
    ),
    Case(
        "route-id-out-of-range",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc A(Req) returns (Reply) { option (flare.options.v1.method) = {route_id: 70000}; }
}""",
        "option (flare.options.v1.method)",
        "route_id 70000 of bad.v1.S.A is out of range 1-65535",
    ),
    Case(
        "service-id-in-flare-reserved-range",
        """service S {
  option (flare.options.v1.service) = {service_id: 65280};
}""",
        "option (flare.options.v1.service)",
        "service_id 65280 of bad.v1.S is out of range 1-65279",
    ),
    Case(
        "duplicate-service-id",
        """service S { option (flare.options.v1.service) = {service_id: 5}; }
service T { option (flare.options.v1.service) = {service_id: 5}; }""",
        "option (flare.options.v1.service)",
        "service bad.v1.T reuses service_id 5 of bad.v1.S",
        occurrence=2,
    ),
    Case(
        "duplicate-push-type-id",
        """message P1 { option (flare.options.v1.message) = {push_type_id: 3}; }
message P2 { option (flare.options.v1.message) = {push_type_id: 3}; }""",
        "option (flare.options.v1.message)",
        "message bad.v1.P2 reuses push_type_id 3 of bad.v1.P1",
        occurrence=2,
    ),
    Case(
        "push-type-id-out-of-range",
        """message P { option (flare.options.v1.message) = {push_type_id: 65536}; }""",
        "option (flare.options.v1.message)",
        "push_type_id 65536 of bad.v1.P is out of range 1-65535",
    ),
    Case(
        "reserved-route-id-reused",
        """service S {
  option (flare.options.v1.service) = {service_id: 1, reserved_route_ids: {start: 4, end: 6}};
  rpc A(Req) returns (Reply) { option (flare.options.v1.method) = {route_id: 5}; }
}""",
        "option (flare.options.v1.method)",
        "route_id 5 of bad.v1.S.A is reserved (reserved_route_ids 4-6)",
    ),
    Case(
        "invalid-reserved-range",
        """service S {
  option (flare.options.v1.service) = {service_id: 1, reserved_route_ids: {start: 9, end: 3}};
}""",
        "option (flare.options.v1.service)",
        "reserved route id range 9-3 of bad.v1.S is invalid",
    ),
    Case(
        "idempotent-client-stream",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc Up(stream Req) returns (Reply) {
    option (flare.options.v1.method) = {route_id: 1, idempotent: true};
  }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.Up is client-streaming; idempotent is only allowed on unary and "
        "server-streaming methods",
    ),
    Case(
        "idempotent-bidi",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc Chat(stream Req) returns (stream Reply) {
    option (flare.options.v1.method) = {route_id: 1, idempotent: true};
  }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.Chat is bidi; idempotent is only allowed",
    ),
    Case(
        "method-transport-outside-service-transports",
        """service S {
  option (flare.options.v1.service) = {service_id: 1, default_transports: [TRANSPORT_GRPC]};
  rpc A(Req) returns (Reply) {
    option (flare.options.v1.method) = {route_id: 1, transports: [TRANSPORT_QUIC]};
  }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.A lists TRANSPORT_QUIC but service bad.v1.S is served on TRANSPORT_GRPC only",
    ),
    Case(
        "websocket-without-flare-ids",
        """service S {
  rpc A(Req) returns (Reply) {
    option (flare.options.v1.method) = {transports: [TRANSPORT_WEBSOCKET]};
  }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.A may be served on TRANSPORT_WEBSOCKET, which carry routes by id, "
        "but service bad.v1.S has no Flare service_id and bad.v1.S.A no route_id; add them "
        "or restrict the method to TRANSPORT_GRPC",
    ),
    Case(
        "quic-by-default-without-route-id",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc A(Req) returns (Reply);
}""",
        "rpc A",
        "bad.v1.S.A may be served on TRANSPORT_WEBSOCKET, TRANSPORT_QUIC, which carry routes "
        "by id, but it has no Flare route_id; add one or restrict the method to TRANSPORT_GRPC",
    ),
    Case(
        "route-id-without-service-id",
        """service S {
  rpc A(Req) returns (Reply) { option (flare.options.v1.method) = {route_id: 1}; }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.A sets route_id 1 but service bad.v1.S has no service_id",
    ),
    Case(
        "unspecified-transport",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc A(Req) returns (Reply) {
    option (flare.options.v1.method) = {route_id: 1, transports: [TRANSPORT_UNSPECIFIED]};
  }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.A lists TRANSPORT_UNSPECIFIED, which is not a transport",
    ),
    Case(
        "scopes-with-auth-none",
        """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc A(Req) returns (Reply) {
    option (flare.options.v1.method) = {route_id: 1, auth: AUTH_REQUIREMENT_NONE, scopes: "x"};
  }
}""",
        "option (flare.options.v1.method)",
        "bad.v1.S.A lists scopes but sets auth AUTH_REQUIREMENT_NONE",
    ),
    Case(
        "require-ids-parameter",
        """service S {
  rpc A(Req) returns (Reply);
}""",
        "service S",
        "service bad.v1.S has no Flare service_id (require_ids)",
        parameters="require_ids",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_invalid_options_fail_protoc_with_location(
    case: Case, tmp_path: Path, run_protoc: RunProtoc
) -> None:
    source = HEADER + case.body + "\n"
    (tmp_path / "bad.proto").write_text(source)
    result = run_protoc(
        [tmp_path], ["bad.proto"], tmp_path / "out", flare_parameters=case.parameters
    )
    assert result.returncode != 0
    expected = f"bad.proto:{_position(source, case.needle, case.occurrence)}: {case.message}"
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").rglob("*.py")), "no output on error"


def test_all_errors_of_a_file_are_reported_in_source_order(
    tmp_path: Path, run_protoc: RunProtoc
) -> None:
    source = (
        HEADER
        + """service S {
  option (flare.options.v1.service) = {service_id: 1};
  rpc Up(stream Req) returns (Reply) {
    option (flare.options.v1.method) = {route_id: 1, idempotent: true};
  }
  rpc B(Req) returns (Reply) { option (flare.options.v1.method) = {route_id: 1}; }
}
"""
    )
    (tmp_path / "bad.proto").write_text(source)
    result = run_protoc([tmp_path], ["bad.proto"], tmp_path / "out")
    assert result.returncode != 0
    lines = [line.removeprefix("--flare_out: ") for line in result.stderr.splitlines()]
    located = [line for line in lines if line.startswith("bad.proto:")]
    assert len(located) == 2
    assert "idempotent" in located[0]
    assert "already used" in located[1]


def test_flare_own_packages_may_use_the_reserved_service_ids(
    tmp_path: Path, run_protoc: RunProtoc
) -> None:
    """65280-65535 are Flare's (flare.reflection.v1.Reflection is 65280): allowed in package
    flare and below, refused elsewhere (test_invalid_options_fail_protoc_with_location)."""
    source = """syntax = "proto3";
package flare.extra.v1;
import "flare/options/v1/options.proto";
message M {}
service S {
  option (flare.options.v1.service) = {service_id: 65535};
  rpc A(M) returns (M) { option (flare.options.v1.method) = {route_id: 1}; }
}
"""
    (tmp_path / "ok.proto").write_text(source)
    result = run_protoc([tmp_path], ["ok.proto"], tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "service_id=65535" in (tmp_path / "out" / "ok_flare.py").read_text()


def test_unknown_plugin_parameter_is_an_error(tmp_path: Path, run_protoc: RunProtoc) -> None:
    (tmp_path / "ok.proto").write_text(HEADER)
    result = run_protoc([tmp_path], ["ok.proto"], tmp_path / "out", flare_parameters="colour=red")
    assert result.returncode != 0
    assert (
        "unknown plugin parameter 'colour' (known: emit_empty, require_ids, line_length)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_bad_parameter_value_is_an_error(tmp_path: Path, run_protoc: RunProtoc) -> None:
    (tmp_path / "ok.proto").write_text(HEADER)
    result = run_protoc(
        [tmp_path], ["ok.proto"], tmp_path / "out", flare_parameters="emit_empty=maybe"
    )
    assert result.returncode != 0
    assert "plugin parameter 'emit_empty' takes true or false, got 'maybe'" in result.stderr


def test_message_with_keyword_name_used_by_a_service_is_an_error(
    tmp_path: Path, run_protoc: RunProtoc
) -> None:
    source = """syntax = "proto3";
package bad.v1;
message Outer { message class {} }
service S { rpc A(Outer.class) returns (Outer.class); }
"""
    (tmp_path / "bad.proto").write_text(source)
    result = run_protoc([tmp_path], ["bad.proto"], tmp_path / "out")
    assert result.returncode != 0
    assert (
        "bad.proto:4:13: message bad.v1.Outer.class has a Python keyword in its name"
        in result.stderr
    )


def test_keyword_in_module_path_is_an_error(tmp_path: Path, run_protoc: RunProtoc) -> None:
    # `from class.v1 import api_pb2` would be a syntax error in generated code.
    (tmp_path / "class" / "v1").mkdir(parents=True)
    (tmp_path / "class" / "v1" / "api.proto").write_text(
        'syntax = "proto3";\npackage k.v1;\nmessage M {}\nservice S { rpc A(M) returns (M); }\n'
    )
    result = run_protoc([tmp_path], ["class/v1/api.proto"], tmp_path / "out")
    assert result.returncode != 0
    assert (
        "class/v1/api.proto:4:13: message k.v1.M lives in module class.v1.api_pb2, "
        "whose path has a Python keyword" in result.stderr
    )


@pytest.mark.parametrize(
    ("proto_path", "module"),
    [("v1/1api.proto", "v1.1api_pb2"), ("api.v1.2/api.proto", "api.v1.2.api_pb2")],
)
def test_module_path_that_is_not_an_identifier_is_an_error(
    proto_path: str, module: str, tmp_path: Path, run_protoc: RunProtoc
) -> None:
    # `from v1 import 1api_pb2` / `from api.v1.2 import api_pb2` would be
    # syntax errors in generated code, for a service's messages and a push alike.
    path = tmp_path / proto_path
    path.parent.mkdir(parents=True)
    path.write_text(
        'syntax = "proto3";\npackage k.v1;\nimport "flare/options/v1/options.proto";\n'
        "message M {}\nservice S { rpc A(M) returns (M); }\n"
        "message P { option (flare.options.v1.message) = {push_type_id: 1}; }\n"
    )
    result = run_protoc([tmp_path], [proto_path], tmp_path / "out")
    assert result.returncode != 0
    for position, name in (("5:13", "k.v1.M"), ("6:13", "k.v1.P")):
        assert (
            f"{proto_path}:{position}: message {name} lives in module {module}, "
            "which is not a Python module path" in result.stderr
        )
    assert not list((tmp_path / "out").rglob("*_flare.py"))
