"""``flare gen`` end to end: protoc + python/mypy/flare output, importable from the output root."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flare_runtime.cli import main

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "schemas"
RunProtoc = Callable[..., subprocess.CompletedProcess[str]]

IMPORT_CHECK = """
import examples.chat.v1.chat_flare as chat
from flare_runtime.routing import Router
assert chat.ChatServiceRoutes.SEND.request_type.__module__ == "examples.chat.v1.chat_pb2"
assert chat.CHAT_SERVICE.routes[3].wire_id == (1 << 16) | 4
assert chat.PUSH_TYPES.by_id()[2].DESCRIPTOR.full_name == "examples.chat.v1.TypingChanged"
print("ok")
"""


def _import_from(root: Path) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter with only the output root added: proves the
    # absolute imports work when packages nest.
    return subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_flare_gen_writes_all_three_outputs_and_they_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    only = "examples/chat/v1/chat.proto"
    assert main(["gen", str(SCHEMAS), "-o", str(out), "--only", only]) == 0
    chat_dir = out / "examples" / "chat" / "v1"
    assert sorted(path.name for path in chat_dir.iterdir()) == [
        "chat_flare.py",
        "chat_pb2.py",
        "chat_pb2.pyi",
    ]
    assert (chat_dir / "chat_flare.py").read_bytes() == (
        ROOT / "generated" / "examples" / "chat" / "v1" / "chat_flare.py"
    ).read_bytes()
    assert "generated 1 file(s)" in capsys.readouterr().err
    # flare.options.v1 is importable from the installed package, not from `out`.
    result = _import_from(out)
    assert result.stdout.strip() == "ok", result.stderr


def test_grpc_tools_protoc_with_all_three_plugins(tmp_path: Path, run_protoc: RunProtoc) -> None:
    out = tmp_path / "gen"
    result = run_protoc(
        [SCHEMAS],
        ["examples/chat/v1/chat.proto"],
        out,
        extra=[f"--python_out={out}", f"--mypy_out={out}"],
    )
    assert result.returncode == 0, result.stderr
    assert _import_from(out).stdout.strip() == "ok"


def test_flare_gen_reports_protoc_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.proto").write_text(
        'syntax = "proto3";\nimport "flare/options/v1/options.proto";\nmessage M {}\n'
        "service S {\n  option (flare.options.v1.service) = {service_id: 70000};\n}\n"
    )
    assert main(["gen", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "bad.proto:5:3: service_id 70000 of S is out of range 1-65279" in err
    assert "Traceback" not in err


def test_flare_gen_passes_plugin_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain.proto").write_text('syntax = "proto3";\npackage p;\nmessage M {}\n')
    out = tmp_path / "out"
    assert main(["gen", str(tmp_path), "-o", str(out)]) == 0
    assert not (out / "plain_flare.py").exists()
    assert main(["gen", str(tmp_path), "-o", str(out), "--flare-opt", "emit_empty"]) == 0
    assert (out / "plain_flare.py").is_file()
    assert main(["gen", str(tmp_path), "-o", str(out), "--flare-opt", "bogus"]) == 1
    assert "unknown plugin parameter 'bogus'" in capsys.readouterr().err


def test_flare_gen_rejects_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_flare_gen_reports_an_output_path_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain.proto").write_text('syntax = "proto3";\npackage p;\nmessage M {}\n')
    occupied = tmp_path / "occupied"
    occupied.write_text("a file, not a directory\n")
    for out in (occupied, occupied / "below"):
        assert main(["gen", str(tmp_path), "-o", str(out)]) == 1
        assert f"{out}: cannot create the output directory" in capsys.readouterr().err
