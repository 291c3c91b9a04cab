"""From a built wheel in a fresh virtual environment, both ways of generating work.

The wheel is built from this checkout and installed (without dependencies)
into a new venv whose only extra path is the development venv's
site-packages, for protobuf, grpcio-tools and mypy-protobuf. Nothing from the
source tree is importable there: the Flare options must come from the wheel
(``flare.options.v1`` and ``flare_codegen/include/.../options.proto``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "schemas" / "examples" / "chat" / "v1" / "chat.proto"
IGNORED = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "node_modules",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "tests",
)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_fresh_venv_generates_with_protoc_and_flare_gen(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    dev_env = dict(os.environ)
    # Build from a clean copy: setuptools reuses build/ and *.egg-info in the
    # source tree, which may hold stale files and is shared with other work.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        work,
        dev_env,
    )
    (wheel,) = (tmp_path / "dist").glob("flare_rpc-*.whl")
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", str(venv)], work, dev_env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            work,
            dev_env,
        ).strip()
    )
    (site / "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        work,
        dev_env,
    )

    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    installed = _run(
        [
            str(python),
            "-c",
            "import flare_codegen, flare.options.v1.options_pb2 as o\n"
            "from flare_codegen.compiler import flare_include_dir\n"
            "print(flare_codegen.__file__); print(o.__file__); print(flare_include_dir())",
        ],
        work,
        env,
    ).split()
    assert all(path.startswith(str(venv)) for path in installed), installed

    schema = work / "schemas" / "acme" / "chat" / "v1"
    schema.mkdir(parents=True)
    shutil.copy(CHAT, schema / "chat.proto")
    protoc_out = work / "gen"
    protoc_out.mkdir()
    _run(
        [
            str(python),
            "-m",
            "grpc_tools.protoc",
            "-Ischemas",
            f"-I{installed[2]}",
            "--python_out=gen",
            "--mypy_out=gen",
            "--flare_out=gen",
            "acme/chat/v1/chat.proto",
        ],
        work,
        env,
    )
    _run([str(venv / "bin" / "flare"), "gen", "schemas", "-o", "generated"], work, env)
    for name in ("chat_pb2.py", "chat_pb2.pyi", "chat_flare.py"):
        first = (protoc_out / "acme" / "chat" / "v1" / name).read_bytes()
        assert first == (work / "generated" / "acme" / "chat" / "v1" / name).read_bytes()
    imported = _run(
        [
            str(python),
            "-c",
            "import acme.chat.v1.chat_flare as chat\n"
            "print(chat.ChatServiceRoutes.SEND.wire_id, chat.PUSH_TYPES.by_id()[1].__name__)",
        ],
        work,
        {**env, "PYTHONPATH": str(work / "generated")},
    )
    assert imported.split() == [str(1 << 16 | 1), "MessagePosted"]
