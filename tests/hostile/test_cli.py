"""Hostile input to the ``flare`` command line (its code-generation half), one test per row.

The promise: exit status 1 with one line on stderr naming the problem, never a
traceback. (``flare schema`` rows: test_schema_ci.py; ``flare call``/``serve``
rows belong to the runtime's own files.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flare_codegen.compiler import compile_directory
from flare_runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_routes_of_a_descriptor_set_with_text_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``flare routes x.binpb`` whose names hold the byte 0xff → exit 1, one line."""
    data = compile_directory(ROOT / "schemas").files.SerializeToString()
    name = b"examples/chat/v1/chat.proto"
    path = tmp_path / "bad.binpb"
    path.write_bytes(data.replace(name, name[:-7] + b"\xff.proto"))
    assert main(["routes", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a readable FileDescriptorSet (not UTF-8 text in file[" in err


def test_a_command_whose_dependencies_are_missing_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``flare gen`` where grpcio-tools cannot be imported → exit 1, one line naming the extra
    to install."""
    # A module set to None in sys.modules cannot be imported (as if uninstalled).
    monkeypatch.setitem(sys.modules, "grpc_tools", None)
    assert main(["gen", "schemas", "-o", "out"]) == 1
    err = capsys.readouterr().err
    assert err == "flare gen: missing dependencies; run: pip install 'flare-rpc[codegen]'\n"
