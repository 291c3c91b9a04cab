"""Golden tests of ``protoc-gen-flare-ts``: every codegen case, byte for byte, and tsc --strict.

Each ``cases/<case>/proto/`` is generated with ``python -m grpc_tools.protoc
--flare-ts_out`` (the plugin found on PATH as ``protoc-gen-flare-ts``); the
``_flare.ts`` files must equal ``cases/<case>/expected_ts/`` byte for byte
(the Python output's ``expected/`` stays untouched). Then every case, with
``protoc-gen-es``'s ``_pb.ts`` beside it, must pass ``tsc --strict`` against
the ``@flare/client`` runtime source (clients/typescript/src).

Set FLARE_BLESS=1 to rewrite the expected files after an intended change
(then review the diff).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flare_codegen.compiler import find_proto_files, flare_include_dir, wellknown_include_dir
from tests.codegen.conftest import RunProtoc, plugin_env

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "cases"
CASE_NAMES = sorted(path.name for path in CASES.iterdir() if (path / "proto").is_dir())
PACKAGE = ROOT / "clients" / "typescript"
TSC = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
PROTOC_GEN_ES = PACKAGE / "node_modules" / ".bin" / "protoc-gen-es"
ReadTree = Callable[[Path], dict[str, bytes]]


def _generate(case: str, out: Path, run_protoc: RunProtoc, read_tree: ReadTree) -> dict[str, bytes]:
    root = CASES / case / "proto"
    out.mkdir(parents=True, exist_ok=True)
    result = run_protoc([root], find_proto_files(root), out, extra=[f"--flare-ts_out={out}"])
    assert result.returncode == 0, result.stderr
    return {name: data for name, data in read_tree(out).items() if name.endswith("_flare.ts")}


@pytest.mark.parametrize("case", CASE_NAMES)
def test_ts_output_matches_golden_files_byte_for_byte(
    case: str, tmp_path: Path, run_protoc: RunProtoc, read_tree: ReadTree
) -> None:
    first = _generate(case, tmp_path / "first", run_protoc, read_tree)
    second = _generate(case, tmp_path / "second", run_protoc, read_tree)
    assert first == second, "two runs of the generator gave different bytes"
    expected_dir = CASES / case / "expected_ts"
    if os.environ.get("FLARE_BLESS") == "1":
        shutil.rmtree(expected_dir, ignore_errors=True)
        for name, content in first.items():
            path = expected_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    expected = read_tree(expected_dir) if expected_dir.is_dir() else {}
    assert sorted(first) == sorted(expected)
    for name, content in first.items():
        assert content == expected[name], f"{case}/{name} differs from the golden file"


def test_ts_output_passes_tsc_strict_with_protoc_gen_es(tmp_path: Path) -> None:
    if not (shutil.which("node") and TSC.is_file() and PROTOC_GEN_ES.is_file()):
        reason = (
            "Node.js or clients/typescript/node_modules missing: "
            "bash .ci/services.d/55-typescript.sh"
        )
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # Inside the package, so that `@bufbuild/protobuf` resolves from its node_modules.
    # protoc-gen-es writes .js + .d.ts here: its declarations are library files
    # (skipLibCheck), so what tsc checks is our _flare.ts against them. (Its own
    # .ts output for the collisions case does not compile: rpcs `Send` and `send`
    # give one object two `send` members.)
    out = PACKAGE / "build" / "codegen-cases"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for case in CASE_NAMES:
        root = CASES / case / "proto"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{flare_include_dir()}",
                f"-I{wellknown_include_dir()}",
                f"--plugin=protoc-gen-es={PROTOC_GEN_ES}",
                f"--es_out=target=js+dts:{out}",
                f"--flare-ts_out={out}",
                *find_proto_files(root),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=plugin_env(),
            timeout=120,
        )
        assert result.returncode == 0, f"{case}: {result.stderr}"
    # The options file every schema imports: generated once, as `flare gen --ts` does.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{flare_include_dir()}",
            f"-I{wellknown_include_dir()}",
            f"--plugin=protoc-gen-es={PROTOC_GEN_ES}",
            f"--es_out=target=js+dts:{out}",
            "flare/options/v1/options.proto",
        ],
        check=True,
        env=plugin_env(),
        timeout=120,
    )
    config = {
        "compilerOptions": {
            "target": "ES2022",
            "lib": ["ES2022", "DOM"],
            "module": "ESNext",
            "moduleResolution": "Bundler",
            "types": [],
            "strict": True,
            "noUncheckedIndexedAccess": True,
            "exactOptionalPropertyTypes": True,
            "verbatimModuleSyntax": True,
            "skipLibCheck": True,
            "noEmit": True,
            "paths": {"@flare/client": [str(PACKAGE / "src" / "index.ts")]},
        },
        "include": [str(out / "**" / "*.ts")],
    }
    (out / "tsconfig.json").write_text(json.dumps(config, indent=2))
    flare_files = sorted(out.rglob("*_flare.ts"))
    assert len(flare_files) >= len(CASE_NAMES)
    result = subprocess.run(
        ["node", str(TSC), "-p", str(out / "tsconfig.json")],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
