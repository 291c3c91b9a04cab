"""check_generated: regenerating into a temp dir and comparing lists every kind of drift."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flare_codegen.check_generated import check, main

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_generated_tree_is_up_to_date() -> None:
    assert not check(ROOT / "schemas", ROOT / "generated")


def test_changed_missing_and_stale_files_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "generated"
    shutil.copytree(ROOT / "generated", copy, ignore=shutil.ignore_patterns("__pycache__"))
    chat = copy / "examples" / "chat" / "v1" / "chat_flare.py"
    chat.write_bytes(chat.read_bytes() + b"# edited by hand\n")
    (copy / "examples" / "chat" / "v1" / "chat_pb2.pyi").unlink()
    (copy / "examples" / "old_flare.py").write_text("# from a deleted schema\n")

    drift = check(ROOT / "schemas", copy)
    assert drift.changed == ("examples/chat/v1/chat_flare.py",)
    assert drift.missing == ("examples/chat/v1/chat_pb2.pyi",)
    assert drift.stale == ("examples/old_flare.py",)

    assert main([str(ROOT / "schemas"), str(copy)]) == 1
    err = capsys.readouterr().err
    assert "changed: examples/chat/v1/chat_flare.py" in err
    assert "missing: examples/chat/v1/chat_pb2.pyi" in err
    assert "stale: examples/old_flare.py" in err


def test_compile_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.proto").write_text('syntax = "proto3";\nmessage {')
    assert main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "broken.proto:2:" in capsys.readouterr().err
