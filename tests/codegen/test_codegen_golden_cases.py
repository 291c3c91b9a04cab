"""Golden tests: each `cases/<case>/` holds `.proto` input and the exact expected output.

``cases/<case>/proto/`` is the include root; every ``.proto`` under it is
generated with ``python -m grpc_tools.protoc --flare_out`` and the ``_flare.py``
files must equal ``cases/<case>/expected/`` byte for byte. An optional
``cases/<case>/parameters`` file holds the plugin parameter string.

Set FLARE_BLESS=1 to rewrite the expected files after an intended change
(then review the diff).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.compiler import plugin_pb2

from flare_codegen.compiler import compile_protos, find_proto_files
from flare_codegen.generate import generate
from flare_codegen.plugin import generate as generate_response

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "cases"
BIN = Path(sys.executable).parent
RunProtoc = Callable[..., subprocess.CompletedProcess[str]]
ReadTree = Callable[[Path], dict[str, bytes]]
CASE_NAMES = sorted(path.name for path in CASES.iterdir() if (path / "proto").is_dir())


def _generate_case(
    case: str, out: Path, run_protoc: RunProtoc, read_tree: ReadTree
) -> dict[str, bytes]:
    case_dir = CASES / case
    parameters_file = case_dir / "parameters"
    parameters = parameters_file.read_text().strip() if parameters_file.exists() else ""
    proto_root = case_dir / "proto"
    result = run_protoc(
        [proto_root], find_proto_files(proto_root), out, flare_parameters=parameters
    )
    assert result.returncode == 0, result.stderr
    return read_tree(out)


def test_every_listed_scenario_has_a_case() -> None:
    expected = {
        "collisions",
        "editions2023",
        "editions2024",
        "grpc_only",
        "nested_packages",
        "proto2",
        "proto3_optional",
        "root_file",
    }
    assert expected <= set(CASE_NAMES)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_output_matches_golden_files_byte_for_byte(
    case: str, tmp_path: Path, run_protoc: RunProtoc, read_tree: ReadTree
) -> None:
    first = _generate_case(case, tmp_path / "first", run_protoc, read_tree)
    second = _generate_case(case, tmp_path / "second", run_protoc, read_tree)
    assert first == second, "two runs of the generator gave different bytes"
    expected_dir = CASES / case / "expected"
    if os.environ.get("FLARE_BLESS") == "1":
        shutil.rmtree(expected_dir, ignore_errors=True)
        shutil.copytree(tmp_path / "first", expected_dir)
    expected = read_tree(expected_dir)
    assert sorted(first) == sorted(expected)
    for name, content in first.items():
        assert content == expected[name], f"{case}/{name} differs from the golden file"


@pytest.fixture(scope="module")
def all_cases_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case generated with ``flare gen`` (python, mypy and flare output) into one root.

    Case packages have distinct top-level names, so one root holds them all
    and one mypy run checks them together.
    """
    out = tmp_path_factory.mktemp("all-cases")
    for case in CASE_NAMES:
        generate(CASES / case / "proto", out)
    return out


def test_mypy_strict_accepts_all_generated_code(all_cases_output: Path) -> None:
    files = sorted(
        path.relative_to(all_cases_output).as_posix()
        for path in all_cases_output.rglob("*")
        if path.name.endswith(("_flare.py", "_pb2.pyi"))
    )
    env = dict(os.environ)
    env["MYPYPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--explicit-package-bases",
            "--namespace-packages",
            "--no-incremental",
            "--config-file=",
            *files,
        ],
        cwd=all_cases_output,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ruff(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ruff"), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def _render_cases(out: Path, parameter: str) -> list[str]:
    """Every case's _flare.py rendered in process with `parameter`; returns the paths."""
    written: list[str] = []
    for case in CASE_NAMES:
        root = CASES / case / "proto"
        files = find_proto_files(root)
        request = plugin_pb2.CodeGeneratorRequest(
            file_to_generate=files,
            parameter=parameter,
            proto_file=compile_protos([root], files).files.file,
        )
        response = generate_response(request)
        assert not response.error, response.error
        for generated in response.file:
            path = out / generated.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generated.content)
            written.append(str(path))
    return written


def test_default_output_is_ruff_formatted(all_cases_output: Path, tmp_path: Path) -> None:
    files = [str(path) for path in sorted(all_cases_output.rglob("*_flare.py"))]
    result = _ruff(["format", "--isolated", "--check", "--diff", *files], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("line_length", [88, 100, 120])
def test_output_for_a_line_length_is_ruff_formatted_at_it(line_length: int, tmp_path: Path) -> None:
    files = _render_cases(tmp_path / "out", f"line_length={line_length}")
    result = _ruff(
        ["format", "--isolated", f"--line-length={line_length}", "--check", "--diff", *files],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_passes_on_generated_code(all_cases_output: Path, tmp_path: Path) -> None:
    # Run from an unrelated directory so that isort classifies every import
    # as third-party, the way a project that keeps generated code in its own
    # folder sees it. E501 is left out: docstrings from .proto comments may be
    # long, and the formatter cannot split them (ruff's default rules skip it too).
    files = [str(path) for path in sorted(all_cases_output.rglob("*_flare.py"))]
    rules = "E,F,W,I,UP,B,SIM,RUF"
    result = _ruff(["check", "--isolated", f"--select={rules}", "--ignore=E501", *files], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    default_rules = _ruff(["check", "--isolated", *files], tmp_path)
    assert default_rules.returncode == 0, default_rules.stdout


def test_golden_proto_files_compile_alone(tmp_path: Path, run_protoc: RunProtoc) -> None:
    # Guard against a case silently depending on another case's files.
    for case in CASE_NAMES:
        root = CASES / case / "proto"
        result = run_protoc([root], find_proto_files(root), tmp_path / case)
        assert result.returncode == 0, f"{case}: {result.stderr}"
