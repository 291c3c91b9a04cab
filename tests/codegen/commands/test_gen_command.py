"""``flare gen`` end to end: protoc + python/mypy/flare output, importable from the output root."""

from __future__ import annotations

import os
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


CHAT_V1 = """syntax = "proto3";
package chat.v1;
import "flare/options/v1/options.proto";
message Hello { string text = 1; }
service Greeter {
  option (flare.options.v1.service) = {service_id: 5};
  rpc Greet(Hello) returns (Hello) { option (flare.options.v1.method) = {route_id: 1}; }
}
"""


def _project(tmp_path: Path) -> tuple[Path, Path]:
    """A project directory with schemas/chat/v1/greeter.proto and a flare.toml [gen] table."""
    schemas = tmp_path / "schemas" / "chat" / "v1"
    schemas.mkdir(parents=True)
    (schemas / "greeter.proto").write_text(CHAT_V1)
    (tmp_path / "flare.toml").write_text(
        '[gen]\ninputs = ["schemas"]\n\n[[gen.outputs]]\nlanguage = "python"\nout = "gen"\n'
    )
    return tmp_path, tmp_path / "gen"


def _tree(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_renaming_a_proto_removes_its_old_outputs_and_nothing_of_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project, gen = _project(tmp_path)
    monkeypatch.chdir(project)
    assert main(["gen"]) == 0
    assert _tree(gen) == [
        "chat/v1/greeter_flare.py",
        "chat/v1/greeter_pb2.py",
        "chat/v1/greeter_pb2.pyi",
    ]
    # The user's own files beside the outputs, one of them named like an output.
    (gen / "chat" / "v1" / "handlers.py").write_text("# mine\n")
    (gen / "chat" / "v1" / "mine_flare.py").write_text("# mine, named like an output\n")
    (gen / "chat" / "__init__.py").write_text("")
    (gen / "py.typed").write_text("")
    user_files = {
        name: (gen / name).read_bytes()
        for name in ("chat/v1/handlers.py", "chat/v1/mine_flare.py", "chat/__init__.py", "py.typed")
    }
    capsys.readouterr()

    (project / "schemas" / "chat" / "v1" / "greeter.proto").rename(
        project / "schemas" / "chat" / "v1" / "welcome.proto"
    )
    assert main(["gen"]) == 0
    assert _tree(gen) == sorted(
        [
            *user_files,
            "chat/v1/welcome_flare.py",
            "chat/v1/welcome_pb2.py",
            "chat/v1/welcome_pb2.pyi",
        ]
    )
    for name, content in user_files.items():
        assert (gen / name).read_bytes() == content
    err = capsys.readouterr().err
    assert "generated 1 file(s) into gen (3 written, 0 unchanged, 3 stale removed)" in err
    assert f"removed stale {Path('gen') / 'chat/v1/greeter_pb2.py'}" in err

    # A proto moved to another package: its old directory, emptied, goes too.
    (project / "schemas" / "chat" / "v1" / "welcome.proto").unlink()
    (project / "schemas" / "hello").mkdir()
    (project / "schemas" / "hello" / "hello.proto").write_text(CHAT_V1.replace("chat.v1", "hello"))
    for name in user_files:
        (gen / name).unlink()
    assert main(["gen"]) == 0
    assert _tree(gen) == ["hello/hello_flare.py", "hello/hello_pb2.py", "hello/hello_pb2.pyi"]
    assert not (gen / "chat").exists()


def test_a_second_run_rewrites_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project, gen = _project(tmp_path)
    monkeypatch.chdir(project)
    assert main(["gen"]) == 0
    stamps = {path: path.stat().st_mtime_ns for path in gen.rglob("*.py*")}
    capsys.readouterr()
    assert main(["gen"]) == 0
    assert "(0 written, 3 unchanged)" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in gen.rglob("*.py*")} == stamps


def test_clean_on_the_command_line_and_in_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, gen = _project(tmp_path)
    (project / "flare.toml").unlink()
    schemas = str(project / "schemas")
    assert main(["gen", schemas, "-o", str(gen)]) == 0
    old = project / "schemas" / "chat" / "v1" / "greeter.proto"
    old.rename(old.with_name("renamed.proto"))
    assert main(["gen", schemas, "-o", str(gen)]) == 0  # without --clean: nothing removed
    assert (gen / "chat" / "v1" / "greeter_pb2.py").exists()
    assert main(["gen", schemas, "-o", str(gen), "--clean"]) == 0
    assert not (gen / "chat" / "v1" / "greeter_pb2.py").exists()

    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\n\n[tool.flare.gen]\ninputs = ["schemas"]\n\n'
        '[[tool.flare.gen.outputs]]\nlanguage = "python"\nout = "elsewhere"\n'
    )
    monkeypatch.chdir(project)
    assert main(["gen"]) == 0
    assert (project / "elsewhere" / "chat" / "v1" / "renamed_flare.py").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gen"], "give SCHEMA_DIR -o OUT, or write a [gen] table in flare.toml"),
        (["gen", "-o", "out"], "-o needs SCHEMA_DIR (the configuration states its own)"),
        (["gen", "schemas"], "SCHEMA_DIR needs -o OUT"),
        (["gen", "schemas", "-o", "o", "--only", "a.proto", "--clean"], "--clean needs every file"),
        (
            ["gen", "schemas", "-o", "o", "--config", "flare.toml"],
            "give SCHEMA_DIR or --config, not both",
        ),
        (["gen", "--config", "missing.toml"], "missing.toml: No such file or directory"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("flare gen: ")
    assert message in err
    assert err.count("\n") == 1


def test_a_bad_configuration_names_the_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "flare.toml").write_text('[gen]\ninputs = ["s"]\nouts = []\n')
    monkeypatch.chdir(tmp_path)
    assert main(["gen"]) == 2
    assert capsys.readouterr().err == (
        "flare gen: flare.toml: gen: unknown key 'outs' "
        "(known: clean, files, includes, inputs, outputs)\n"
    )


PROTOC_GEN_ES = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "protoc-gen-es"


def test_a_configuration_with_python_and_typescript_outputs_cleans_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not PROTOC_GEN_ES.is_file():
        reason = "clients/typescript/node_modules missing: bash .ci/services.d/55-typescript.sh"
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    project, gen = _project(tmp_path)
    (project / "flare.toml").write_text(
        '[gen]\ninputs = ["schemas"]\n\n'
        '[[gen.outputs]]\nlanguage = "python"\nout = "gen"\n\n'
        f'[[gen.outputs]]\nlanguage = "typescript"\nout = "gen"\nes_plugin = "{PROTOC_GEN_ES}"\n'
    )
    monkeypatch.chdir(project)
    assert main(["gen"]) == 0
    ts = ["chat/v1/greeter_flare.ts", "chat/v1/greeter_pb.ts", "flare/options/v1/options_pb.ts"]
    python = ["chat/v1/greeter_flare.py", "chat/v1/greeter_pb2.py", "chat/v1/greeter_pb2.pyi"]
    assert _tree(gen) == sorted([*python, *ts])
    old = project / "schemas" / "chat" / "v1" / "greeter.proto"
    old.rename(old.with_name("hello.proto"))
    assert main(["gen"]) == 0
    # One directory, two languages: each output removes only its own stale files.
    assert _tree(gen) == sorted(name.replace("greeter", "hello") for name in [*python, *ts])
