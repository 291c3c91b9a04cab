"""Fixtures for the codegen tests: run protoc with the Flare plugin for real."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from flare_codegen.compiler import flare_include_dir, wellknown_include_dir

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "cases"
BIN = Path(sys.executable).parent


def plugin_env() -> dict[str, str]:
    """The environment with this interpreter's ``bin`` first, so protoc finds protoc-gen-flare."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_protoc(
    include_dirs: Sequence[Path],
    files: Sequence[str],
    out: Path,
    *,
    flare_parameters: str = "",
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m grpc_tools.protoc --flare_out=OUT`` with the plugin found on PATH."""
    out.mkdir(parents=True, exist_ok=True)
    flare_out = f"{flare_parameters}:{out}" if flare_parameters else str(out)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *(f"-I{path}" for path in include_dirs),
        f"-I{flare_include_dir()}",
        f"-I{wellknown_include_dir()}",
        f"--flare_out={flare_out}",
        *extra,
        *files,
    ]
    return subprocess.run(
        args, capture_output=True, text=True, check=False, env=plugin_env(), timeout=120
    )


def _tree(root: Path, suffix: str = "") -> dict[str, bytes]:
    """Every file under `root` ending in `suffix`, by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob(f"*{suffix}"))
        if path.is_file() and "__pycache__" not in path.parts
    }


class RunProtoc(Protocol):
    """Signature of the `run_protoc` fixture."""

    def __call__(
        self,
        include_dirs: Sequence[Path],
        files: Sequence[str],
        out: Path,
        *,
        flare_parameters: str = "",
        extra: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def run_protoc() -> RunProtoc:
    """``python -m grpc_tools.protoc --flare_out=OUT ...``; returns the finished process."""
    return _run_protoc


@pytest.fixture
def read_tree() -> Callable[[Path], dict[str, bytes]]:
    """Read every file under a directory into ``{relative path: bytes}``."""
    return _tree
