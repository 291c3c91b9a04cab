"""Hostile input to the code generator (``protoc-gen-flare`` run by protoc), one test per row.

The promise: an option the generator cannot honour is a ``file.proto:line:col``
error through ``CodeGeneratorResponse.error`` (protoc exits non-zero, nothing is
written), never a silently weaker route. docs/security/schema-ci.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flare_codegen.compiler import flare_include_dir, wellknown_include_dir

SCHEMA = """\
syntax = "proto3";
package e.v1;
import "flare/options/v1/options.proto";
message M {{}}
service S {{
  option (flare.options.v1.service) = {{service_id: 1{service}}};
  rpc A(M) returns (M) {{
    option (flare.options.v1.method) = {{route_id: 1{method}}};
  }}
}}
"""


def _protoc(
    tmp_path: Path, service: str = "", method: str = ""
) -> subprocess.CompletedProcess[str]:
    """protoc with ``--flare_out`` (the plugin found on PATH, as a user runs it)."""
    (tmp_path / "e.proto").write_text(SCHEMA.format(service=service, method=method))
    out = tmp_path / "out"
    out.mkdir()
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}",
            f"-I{flare_include_dir()}", f"-I{wellknown_include_dir()}",
            f"--flare_out={out}", "e.proto",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("service", "method", "expected"),
    [
        (
            ", default_auth: 7",
            "",
            "e.proto:6:3: service e.v1.S sets default_auth 7, which is not an AuthRequirement",
        ),
        ("", ", auth: 9", "e.proto:8:5: e.v1.S.A sets auth 9, which is not an AuthRequirement"),
    ],
    ids=["default_auth 7", "auth 9"],
)
def test_an_unknown_auth_number_is_an_error_not_an_open_route(
    tmp_path: Path, service: str, method: str, expected: str
) -> None:
    """``default_auth: 7`` / ``auth: 9`` (numbers AuthRequirement does not define) → a
    file:line:col error and no output, never a route generated with no authentication."""
    result = _protoc(tmp_path, service, method)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").iterdir())


def test_an_unknown_transport_number_is_an_error(tmp_path: Path) -> None:
    """``transports: [5]`` → a file:line:col error and no output."""
    result = _protoc(tmp_path, method=", transports: [5]")
    assert result.returncode != 0
    assert "e.proto:8:5: e.v1.S.A lists 5, which is not a transport" in result.stderr
    assert not list((tmp_path / "out").iterdir())
