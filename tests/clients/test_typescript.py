"""The TypeScript client (clients/typescript, ``@flare/client``), checked from pytest.

`tsc --strict` must accept the runtime and its tests (which include the client
generated from the chat schema), and Node's test runner must pass every test
in clients/typescript/test against a real Flare server the tests start
(flare_server.py, run with this interpreter). The Node packages come from
``.ci/services.d/55-typescript.sh`` (pinned by package-lock.json); without them
the tests skip, or fail under FLARE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flare_codegen.typescript.generate import generate_ts

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
TSC = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
PROTOC_GEN_ES = PACKAGE / "node_modules" / ".bin" / "protoc-gen-es"
GENERATED = PACKAGE / "test" / "gen"


def require_node_packages() -> None:
    """Skip (or fail, under FLARE_REQUIRE_SERVICES=1) without Node and the npm packages."""
    if shutil.which("node") and TSC.is_file() and PROTOC_GEN_ES.is_file():
        return
    reason = (
        "Node.js or clients/typescript/node_modules missing: bash .ci/services.d/55-typescript.sh"
    )
    if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run `args` in the package directory; fail the test with its output when it fails."""
    result = subprocess.run(
        args,
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-20000:]}"
    return output


@pytest.fixture(scope="module")
def built() -> None:
    """The runtime (dist/) and the tests (build/test/), compiled with tsc --strict."""
    require_node_packages()
    _run(["node", str(TSC), "-p", "tsconfig.json"], timeout=180)
    _run(["node", str(TSC), "-p", "test/tsconfig.json"], timeout=180)


def test_runtime_and_generated_code_pass_tsc_strict(built: None) -> None:
    config = (PACKAGE / "tsconfig.json").read_text()
    assert '"strict": true' in config
    assert (PACKAGE / "dist" / "index.d.ts").is_file()
    assert (
        PACKAGE / "build" / "test" / "gen" / "examples" / "chat" / "v1" / "chat_flare.js"
    ).is_file()


def test_node_tests_pass_against_a_real_server(built: None) -> None:
    tests = sorted(str(path) for path in (PACKAGE / "build" / "test").glob("*.test.js"))
    assert len(tests) >= 4, tests
    output = _run(
        ["node", "--test", "--test-reporter=spec", *tests],
        timeout=300,
        env={"FLARE_PYTHON": sys.executable},
    )
    assert "\N{INFORMATION SOURCE} fail 0" in output, output[-20000:]


def test_generated_test_client_is_what_flare_gen_writes(tmp_path: Path) -> None:
    require_node_packages()
    generate_ts(
        ROOT / "schemas",
        tmp_path,
        files=["examples/chat/v1/chat.proto"],
        es_plugin=PROTOC_GEN_ES,
    )
    fresh = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*.ts")}
    committed = {
        p.relative_to(GENERATED).as_posix(): p.read_bytes() for p in GENERATED.rglob("*.ts")
    }
    assert sorted(fresh) == sorted(committed)
    for name, content in fresh.items():
        assert content == committed[name], (
            f"{name} is stale: flare gen --ts schemas --only examples/chat/v1/chat.proto "
            "-o clients/typescript/test/gen"
        )
