"""Helpers for the schema CI tests: write .proto trees, run ``flare schema``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flare_runtime.cli import main

CHAT_PROTO = """\
syntax = "proto3";

package chat.v1;

import "flare/options/v1/options.proto";

message SendRequest {
  string text = 1;
}

message SendReply {
  uint64 seq = 1;
}

message Joined {
  option (flare.options.v1.message) = {push_type_id: 1};
  string user = 1;
}

service Chat {
  option (flare.options.v1.service) = {
    service_id: 1
    reserved_route_ids: [{start: 9}]
  };
  rpc Send(SendRequest) returns (SendReply) {
    option (flare.options.v1.method) = {route_id: 1, idempotent: true};
  }
  rpc Watch(SendRequest) returns (stream SendReply) {
    option (flare.options.v1.method) = {
      route_id: 2
      auth: AUTH_REQUIREMENT_AUTHENTICATED
      transports: [TRANSPORT_WEBSOCKET, TRANSPORT_QUIC]
    };
  }
  rpc Ping(SendRequest) returns (SendReply) {
    option (flare.options.v1.method) = {route_id: 3};
  }
}
"""


@dataclass(frozen=True)
class Run:
    """The outcome of one ``flare`` invocation."""

    code: int
    out: str
    err: str

    def findings(self) -> list[dict[str, object]]:
        """stdout parsed as buf's JSON lines."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def rules(self) -> set[str]:
        return {str(f["type"]) for f in self.findings()}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) under `root`; return `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def flare(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Run]:
    """Run the ``flare`` CLI in-process: ``flare("schema", "check", ...)``.

    ``flare schema check /abs/DIR ...`` runs as ``cd /abs/DIR && flare schema
    check . ...`` (buf's own test convention), so findings name files from the
    input's root (``chat.proto``) rather than from the temporary directory. A
    relative DIR is passed as is: findings then carry it, as buf's do.
    """

    def run(*args: str) -> Run:
        argv = list(args)
        input_dir = Path(argv[2]) if argv[:2] == ["schema", "check"] else None
        if input_dir is not None and input_dir.is_absolute() and input_dir.is_dir():
            monkeypatch.chdir(argv[2])
            argv[2] = "."
        capsys.readouterr()
        code = main(argv)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def schema_pair(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Write a previous/current pair of trees; returns (current, previous)."""

    def make(current: dict[str, str], previous: dict[str, str]) -> tuple[Path, Path]:
        return (
            write_tree(tmp_path / "current", current),
            write_tree(tmp_path / "previous", previous),
        )

    return make


@pytest.fixture
def chat_proto() -> str:
    """A Flare-annotated schema that the rule tests mutate."""
    return CHAT_PROTO


@pytest.fixture
def tree_writer() -> Callable[[Path, dict[str, str]], Path]:
    """`write_tree` as a fixture (test modules cannot import conftest)."""
    return write_tree
