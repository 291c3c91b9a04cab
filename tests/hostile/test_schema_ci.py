"""Hostile input to schema CI (``flare schema check`` / ``build``), one test per row.

In CI the checked input is a pull request's tree and ``--against`` a git ref, so
both can be written by whoever opens the pull request. The promise for every
row: exit status 1 with one line on stderr naming the problem (or the normal
result), never a traceback, a hang, a file written outside the output the
caller named, or a read outside the input. docs/security/schema-ci.md.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from flare_codegen.compiler import compile_directory
from flare_runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60

PROTO = """\
syntax = "proto3";
package t.v1;
message M {
  string a = 1;
  string b = 2;
}
"""


AGAINST_MAIN = ".git#ref=main,subdir=schemas"


def _flare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``flare ...`` in a child process (a hang fails the test instead of blocking it)."""
    return subprocess.run(
        [sys.executable, "-m", "flare_runtime.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A git repository whose ``main`` holds ``schemas/t/v1/t.proto``."""
    root = tmp_path / "repo"
    (root / "schemas" / "t" / "v1").mkdir(parents=True)
    (root / "schemas" / "t" / "v1" / "t.proto").write_text(PROTO)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "schema")
    yield root


@pytest.mark.parametrize(
    "ref",
    ["--output=OUT", "-oOUT", "--remote=file:///nowhere", "main:../../OUT", "main\n--output=OUT"],
)
def test_a_ref_that_git_would_read_as_an_option_is_refused(repo: Path, ref: str) -> None:
    """``--against '.git#ref=--output=<file>'`` (git archive's option) → exit 1, no file written."""
    out = repo / "OUT"
    spec = f".git#ref={ref.replace('OUT', str(out))},subdir=schemas"
    result = _flare("schema", "check", "schemas", "--against", spec, cwd=repo)
    _one_line_error(result, "is not a valid git ref")
    assert not out.exists()


@pytest.mark.parametrize("key", ["branch", "tag"])
def test_branch_and_tag_are_looked_up_under_refs(repo: Path, key: str) -> None:
    """``branch=-x`` / ``tag=-x`` → refused; ``branch=main`` resolves ``refs/heads/main``."""
    result = _flare("schema", "check", "schemas", "--against", f".git#{key}=--output=x", cwd=repo)
    _one_line_error(result, "is not a valid git ref")
    _git(repo, "tag", "v1")
    name = "main" if key == "branch" else "v1"
    ok = _flare(
        "schema", "check", "schemas", "--against", f".git#{key}={name},subdir=schemas", cwd=repo
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")


@pytest.mark.parametrize("subdir", ["..", "../..", "/etc", "schemas/../..", "./schemas"])
def test_a_subdir_that_leaves_the_repository_is_refused(repo: Path, subdir: str) -> None:
    """``subdir=../..`` (or absolute, or with ``.``/``..`` parts) → exit 1, nothing read."""
    spec = f".git#ref=main,subdir={subdir}"
    result = _flare("schema", "check", "schemas", "--against", spec, cwd=repo)
    _one_line_error(result, "must be a path inside the repository")


def test_a_symlink_out_of_a_large_git_tree_neither_hangs_nor_is_followed(repo: Path) -> None:
    """A ``--against`` tree holding a link to ``/`` before 1 MiB of files → checked, no hang.

    The link is skipped (never followed); the archive is read to its end, so git never
    blocks writing it.
    """
    (repo / "schemas" / "aaa-link").symlink_to("/")
    (repo / "schemas" / "zzz-large.bin").write_bytes(os.urandom(1 << 20))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "link and payload")
    (repo / "schemas" / "t" / "v1" / "t.proto").write_text(PROTO.replace("  string b = 2;\n", ""))
    result = _flare("schema", "check", "schemas", "--against", AGAINST_MAIN, cwd=repo)
    assert result.returncode == 100, result.stderr
    assert result.stdout.startswith("schemas/t/v1/t.proto:3:1:"), result.stdout


def test_a_symlink_out_of_a_small_git_tree_does_not_hide_its_files(repo: Path) -> None:
    """A small ``--against`` tree with a link out of it → its .proto files are still checked."""
    (repo / "schemas" / "aaa-link").symlink_to("../../../..")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "link")
    result = _flare(
        "schema", "check", "schemas", "--against", ".git#ref=main,subdir=schemas", cwd=repo
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_proto_symlink_out_of_a_git_tree_is_an_error(repo: Path) -> None:
    """``schemas/x.proto -> /etc/passwd`` in the ``--against`` tree → exit 1, not read."""
    (repo / "schemas" / "x.proto").symlink_to("/etc/passwd")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "link")
    (repo / "schemas" / "x.proto").unlink()  # only the --against tree holds it
    result = _flare(
        "schema", "check", "schemas", "--against", ".git#ref=main,subdir=schemas", cwd=repo
    )
    _one_line_error(result, "x.proto is a symbolic link out of the tree")


def test_a_proto_symlink_out_of_an_input_directory_is_an_error(tmp_path: Path) -> None:
    """A pull request's ``schemas/x.proto -> /etc/passwd`` → exit 1; protoc never reads it."""
    current = tmp_path / "current"
    current.mkdir()
    (current / "t.proto").write_text(PROTO)
    (current / "x.proto").symlink_to("/etc/passwd")
    result = _flare("schema", "check", "current", "--against", "current", cwd=tmp_path)
    _one_line_error(result, "x.proto: a symbolic link out of the input")


def test_a_proto_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """An input directory whose ``x.proto`` is a FIFO (or a link to a device) → exit 1, no hang."""
    current = tmp_path / "current"
    current.mkdir()
    (current / "t.proto").write_text(PROTO)
    os.mkfifo(current / "x.proto")
    result = _flare("schema", "check", "current", "--against", "current", cwd=tmp_path)
    _one_line_error(result, "x.proto: not a regular file")


def test_a_descriptor_set_with_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A ``.binpb`` whose file name holds the byte 0xff → exit 1 with the field's path."""
    data = compile_directory(ROOT / "schemas").files.SerializeToString()
    name = b"examples/chat/v1/chat.proto"
    bad = tmp_path / "bad.binpb"
    bad.write_bytes(data.replace(name, name[:-7] + b"\xff.proto"))
    good = tmp_path / "good.binpb"
    good.write_bytes(data)
    for current, against in ((bad, good), (good, bad)):
        result = _flare("schema", "check", str(current), "--against", str(against), cwd=tmp_path)
        _one_line_error(result, "not UTF-8 text in file[")


def test_mutated_descriptor_sets_never_end_in_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 randomly mutated ``.binpb`` inputs (fixed seed), alternately as INPUT and as
    ``--against`` → every run exits 0, 100 or 1, and 1 always comes with one stderr line."""
    data = compile_directory(ROOT / "schemas").files.SerializeToString()
    good = tmp_path / "good.binpb"
    good.write_bytes(data)
    rng = random.Random(20260101)
    letters = [index for index, byte in enumerate(data) if chr(byte).isalpha()]
    outcomes: dict[int, int] = {}
    for index in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.4:
                mutated[position] = rng.randrange(256)
            elif choice < 0.6:  # a byte that breaks UTF-8 inside a name or a comment
                mutated[rng.choice(letters)] = rng.choice((0xFF, 0xC3, 0x80, 0xED))
            elif choice < 0.8:
                del mutated[position : position + rng.randint(1, 16)]
            else:
                mutated[position:position] = rng.randbytes(rng.randint(1, 8))
        path = tmp_path / f"m{index}.binpb"
        path.write_bytes(bytes(mutated))
        current, against = (path, good) if index % 2 else (good, path)
        capsys.readouterr()
        status = main(["schema", "check", str(current), "--against", str(against)])
        err = capsys.readouterr().err
        outcomes[status] = outcomes.get(status, 0) + 1
        assert status in (0, 1, 100), (index, err)
        if status == 1:
            assert err.count("\n") == 1 and err.startswith("flare schema check: "), err
    assert outcomes.get(1, 0) > 150  # most mutations are caught, not silently accepted


def test_junit_output_escapes_characters_xml_cannot_hold(tmp_path: Path) -> None:
    """A finding and an ignore reason holding control characters → well-formed JUnit XML."""
    previous = tmp_path / "previous"
    current = tmp_path / "current"
    for root in (previous, current):
        (root / "t" / "v1").mkdir(parents=True)
    (previous / "t" / "v1" / "t.proto").write_text(
        'syntax = "proto2";\npackage t.v1;\nmessage M {\n'
        '  optional string a = 1 [default = "\\001"];\n  optional string b = 2;\n}\n'
    )
    (current / "t" / "v1" / "t.proto").write_text(
        'syntax = "proto2";\npackage t.v1;\n'
        "// flare:breaking-ignore FIELD_NO_DELETE gone \x01\x1b for good\n"
        'message M {\n  optional string a = 1 [default = "\\002"];\n}\n'
    )
    (current / "buf.yaml").write_text(
        "version: v2\nbreaking:\n  use: [FIELD_SAME_DEFAULT, FIELD_NO_DELETE]\n"
    )
    result = _flare(
        "schema", "check", "current", "--against", "previous", "--format", "junit", cwd=tmp_path
    )
    assert result.returncode == 100, result.stderr
    tree = ElementTree.fromstring(result.stdout)
    failure = tree.find(".//failure")
    skipped = tree.find(".//skipped")
    assert failure is not None and skipped is not None
    assert "\\x01" in (failure.get("message") or "")
    assert "\\x01\\x1b" in (skipped.get("message") or "")


def test_an_unknown_auth_number_reads_as_authenticated(tmp_path: Path) -> None:
    """``auth: 7`` in ``--against``, AUTH_REQUIREMENT_NONE now → FLARE_ROUTE_SAME_AUTH
    (loosened): an auth number Flare does not know fails closed, never reads as "none"."""
    schema = (
        'syntax = "proto3";\npackage e.v1;\nimport "flare/options/v1/options.proto";\n'
        "message M {}\nservice S {\n  option (flare.options.v1.service) = {service_id: 1};\n"
        "  rpc A(M) returns (M) {\n"
        "    option (flare.options.v1.method) = {route_id: 1, auth: %s};\n  }\n}\n"
    )
    for name, auth in (("previous", "7"), ("current", "AUTH_REQUIREMENT_NONE")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "e.proto").write_text(schema % auth)
    result = _flare("schema", "check", "current", "--against", "previous", cwd=tmp_path)
    assert result.returncode == 100, result.stderr
    assert "loosened" in result.stdout


SECRET = "TOKEN: s3cr3t: value\n"


def _input_with(tmp_path: Path, buf_yaml: str | None = None) -> Path:
    current = tmp_path / "input"
    current.mkdir()
    (current / "t.proto").write_text(PROTO)
    if buf_yaml is not None:
        (current / "buf.yaml").write_text(buf_yaml)
    (tmp_path / "secret.yaml").write_text(SECRET)
    return current


def test_a_policy_outside_the_input_is_not_read(tmp_path: Path) -> None:
    """buf.yaml v2 ``policies: [{policy: ../secret.yaml}]`` → exit 1; the file is not read."""
    _input_with(tmp_path, "version: v2\npolicies:\n  - policy: ../secret.yaml\n")
    result = _flare("schema", "check", "input", "--against", "input", cwd=tmp_path)
    _one_line_error(result, "policy '../secret.yaml' is not inside the input; not read")
    assert "s3cr3t" not in result.stderr


def test_a_configuration_file_linked_out_of_the_input_is_not_read(tmp_path: Path) -> None:
    """``buf.yaml -> ../secret.yaml`` in the checked tree → exit 1; the target is not read."""
    current = _input_with(tmp_path)
    (current / "buf.yaml").symlink_to(tmp_path / "secret.yaml")
    result = _flare("schema", "check", "input", "--against", "input", cwd=tmp_path)
    _one_line_error(result, "buf.yaml: a symbolic link out of the input; not read")
    assert "s3cr3t" not in result.stderr


def test_a_malformed_buf_yaml_is_one_line_that_quotes_no_source(tmp_path: Path) -> None:
    """A buf.yaml PyYAML cannot parse → ``buf.yaml:LINE:COL: problem`` on one line, without
    the source line PyYAML's own message quotes."""
    _input_with(tmp_path, SECRET)
    result = _flare("schema", "check", "input", "--against", "input", cwd=tmp_path)
    _one_line_error(result, "buf.yaml:1:14: mapping values are not allowed here")
    assert "s3cr3t" not in result.stderr
