"""Every input kind (directory, git ref, descriptor set) and every bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.schema.conftest import Run

Writer = Callable[[Path, dict[str, str]], Path]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@pytest.fixture
def repo(tmp_path: Path, chat_proto: str, tree_writer: Writer) -> Path:
    """A git repository whose `main` holds schemas/chat.proto."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    tree_writer(root, {"schemas/chat.proto": chat_proto, "README": "x\n"})
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "v1")
    return root


def test_git_ref_input_reads_history_without_touching_the_work_tree(
    repo: Path, chat_proto: str, flare: Callable[..., Run]
) -> None:
    changed = chat_proto.replace("route_id: 3}", "route_id: 4}")
    (repo / "schemas" / "chat.proto").write_text(changed)
    status_before = git(repo, "status", "--porcelain")
    head_before = git(repo, "rev-parse", "HEAD")

    run = flare(
        "schema", "check", str(repo / "schemas"),
        "--against", f"{repo / '.git'}#ref=main,subdir=schemas", "--format", "json",
    )  # fmt: skip

    assert run.code == 100, run.err
    assert run.rules() == {"FLARE_ROUTE_ID_SAME"}
    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "rev-parse", "HEAD") == head_before
    assert (repo / "schemas" / "chat.proto").read_text() == changed


def test_git_ref_against_itself_is_clean(repo: Path, flare: Callable[..., Run]) -> None:
    run = flare(
        "schema", "check", str(repo / "schemas"),
        "--against", f"{repo / '.git'}#branch=main,subdir=schemas",
    )  # fmt: skip
    assert (run.code, run.out) == (0, "")


def test_relative_dot_git_input_from_the_repository_root(
    repo: Path, chat_proto: str, flare: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "schemas" / "chat.proto").write_text(
        chat_proto.replace("service_id: 1", "service_id: 3")
    )
    monkeypatch.chdir(repo)
    run = flare("schema", "check", "schemas", "--against", ".git#ref=main,subdir=schemas")
    assert run.code == 100
    # From the repository root, as buf prints it (GitHub annotations need it).
    assert run.out.startswith("schemas/chat.proto:")
    gha = flare(
        "schema", "check", "schemas", "--against", ".git#ref=main,subdir=schemas",
        "--format", "github-actions",
    )  # fmt: skip
    assert gha.out.startswith("::error file=schemas/chat.proto,line=")


def test_descriptor_set_input_round_trips_through_schema_build(
    tmp_path: Path, chat_proto: str, tree_writer: Writer, flare: Callable[..., Run]
) -> None:
    old = tree_writer(tmp_path / "old", {"chat.proto": chat_proto})
    new = tree_writer(
        tmp_path / "new", {"chat.proto": chat_proto.replace("uint64 seq", "string seq")}
    )
    image = tmp_path / "old.binpb"
    assert flare("schema", "build", str(old), "-o", str(image)).code == 0
    assert image.stat().st_size > 0

    run = flare("schema", "check", str(new), "--against", str(image), "--format", "json")
    assert run.code == 100
    [finding] = run.findings()
    assert finding["type"] == "FIELD_SAME_TYPE"
    assert (finding["path"], finding["start_line"]) == ("chat.proto", 12)

    # A descriptor set on both sides works too (locations come from its source info).
    new_image = tmp_path / "new.binpb"
    assert flare("schema", "build", str(new), "-o", str(new_image)).code == 0
    both = flare("schema", "check", str(new_image), "--against", str(image), "--format", "json")
    assert both.findings() == run.findings()


def test_missing_directory_is_a_usage_error(tmp_path: Path, flare: Callable[..., Run]) -> None:
    run = flare("schema", "check", str(tmp_path / "nope"), "--against", str(tmp_path))
    assert run.code == 1
    assert "no such directory" in run.err


def test_bad_git_ref_is_reported(repo: Path, flare: Callable[..., Run]) -> None:
    run = flare(
        "schema", "check", str(repo / "schemas"), "--against", f"{repo / '.git'}#ref=no-such-branch"
    )
    assert run.code == 1
    assert "git could not read 'no-such-branch'" in run.err


def test_git_input_needs_a_ref(repo: Path, flare: Callable[..., Run]) -> None:
    run = flare("schema", "check", str(repo / "schemas"), "--against", f"{repo / '.git'}#subdir=x")
    assert run.code == 1
    assert "needs ref=" in run.err


def test_non_compiling_proto_shows_protocs_error(
    tmp_path: Path, chat_proto: str, tree_writer: Writer, flare: Callable[..., Run]
) -> None:
    good = tree_writer(tmp_path / "good", {"chat.proto": chat_proto})
    bad = tree_writer(
        tmp_path / "bad", {"chat.proto": chat_proto.replace("uint64 seq = 1;", "uint64 seq = ;")}
    )
    run = flare("schema", "check", str(bad), "--against", str(good))
    assert run.code == 1
    assert "chat.proto:12:" in run.err
    assert "Traceback" not in run.err


def test_garbage_descriptor_set_is_reported(
    tmp_path: Path, chat_proto: str, tree_writer: Writer, flare: Callable[..., Run]
) -> None:
    good = tree_writer(tmp_path / "good", {"chat.proto": chat_proto})
    garbage = tmp_path / "garbage.binpb"
    garbage.write_bytes(b"\xff\xff\xff\xff not a descriptor set")
    run = flare("schema", "check", str(good), "--against", str(garbage))
    assert run.code == 1
    assert "not a valid FileDescriptorSet" in run.err


def test_cli_process_exit_codes_and_no_traceback(
    tmp_path: Path, chat_proto: str, tree_writer: Writer
) -> None:
    old = tree_writer(tmp_path / "old", {"chat.proto": chat_proto})
    new = tree_writer(
        tmp_path / "new", {"chat.proto": chat_proto.replace("service_id: 1", "service_id: 5")}
    )
    bad = tree_writer(tmp_path / "bad", {"chat.proto": 'syntax = "proto3";\nmessage {\n'})

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flare_runtime.cli", "schema", "check", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    assert run(str(old), "--against", str(old)).returncode == 0
    breaking = run(str(new), "--against", str(old))
    assert breaking.returncode == 100
    assert "FLARE" not in breaking.stdout  # text format has no rule ids, like buf's
    assert "changed service id from 1 to 5" in breaking.stdout
    broken = run(str(bad), "--against", str(old))
    assert broken.returncode == 1
    assert "chat.proto:2:" in broken.stderr
    assert "Traceback" not in broken.stderr
    missing = run(str(old))  # --against is required: a usage error
    assert missing.returncode == 1
    assert "--against" in missing.stderr


def test_schema_build_from_a_git_ref_and_bad_build_input(
    repo: Path, tmp_path: Path, flare: Callable[..., Run]
) -> None:
    image = tmp_path / "main.binpb"
    built = flare("schema", "build", f"{repo / '.git'}#ref=main,subdir=schemas", "-o", str(image))
    assert built.code == 0, built.err
    clean = flare("schema", "check", str(repo / "schemas"), "--against", str(image))
    assert (clean.code, clean.out) == (0, "")
    refused = flare("schema", "build", str(image), "-o", str(tmp_path / "again.binpb"))
    assert refused.code == 1
    assert "not a directory or git input" in refused.err


def test_descriptor_sets_are_validated_before_any_rule_runs(
    tmp_path: Path, chat_proto: str, tree_writer: Writer, flare: Callable[..., Run]
) -> None:
    from google.protobuf import descriptor_pb2

    good = tree_writer(tmp_path / "good", {"chat.proto": chat_proto})
    image = tmp_path / "full.binpb"
    assert flare("schema", "build", str(good), "-o", str(image)).code == 0
    full = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())

    # Without the well-known types and Flare's options (as `buf build --exclude-imports`
    # writes it): those come from the bundled copies, and the check runs.
    slim = descriptor_pb2.FileDescriptorSet(file=[f for f in full.file if f.name == "chat.proto"])
    (tmp_path / "slim.binpb").write_bytes(slim.SerializeToString())
    run = flare("schema", "check", str(good), "--against", str(tmp_path / "slim.binpb"))
    assert (run.code, run.out) == (0, ""), run.err

    # An import that is nowhere to be found.
    orphan = descriptor_pb2.FileDescriptorSet()
    orphan.file.add(name="x.proto", dependency=["missing/dep.proto"])
    (tmp_path / "orphan.binpb").write_bytes(orphan.SerializeToString())
    run = flare("schema", "check", str(good), "--against", str(tmp_path / "orphan.binpb"))
    assert run.code == 1
    assert "imports 'missing/dep.proto'" in run.err

    # Parses as a FileDescriptorSet, but a field names a type that does not exist.
    broken = descriptor_pb2.FileDescriptorSet()
    message = broken.file.add(name="y.proto", package="y", syntax="proto3").message_type.add(
        name="M"
    )
    message.field.add(name="f", number=1, type=11, type_name=".y.Nowhere", label=1)
    (tmp_path / "broken.binpb").write_bytes(broken.SerializeToString())
    run = flare("schema", "check", str(good), "--against", str(tmp_path / "broken.binpb"))
    assert run.code == 1
    assert "invalid descriptor for 'y.proto'" in run.err
    assert "Traceback" not in run.err
