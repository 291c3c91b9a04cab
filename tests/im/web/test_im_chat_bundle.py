"""The committed chat page bundle is what its sources build, so a wheel needs no Node.js.

flare_runtime/im/web/static/chat.js is built by
clients/typescript/examples/im-chat/build.mjs (esbuild, pinned by
clients/typescript/package-lock.json) from the page's TypeScript, the IM client
that `flare gen --ts` writes for schemas/flare/im/v1, and @flare/client. These
tests fail when any of the three changed without a rebuild, as
`make check-generated` does for the Python output. The Node packages come from
``.ci/services.d/55-typescript.sh``; without them the tests skip, or fail under
FLARE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flare_codegen.typescript.generate import generate_ts
from flare_runtime.im.web.site import STATIC_DIR

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "clients" / "typescript"
EXAMPLE = PACKAGE / "examples" / "im-chat"
MODULES = PACKAGE / "node_modules"
REBUILD = "cd clients/typescript && npm run build:im-chat"


def require_node_packages() -> None:
    """Skip (or fail, under FLARE_REQUIRE_SERVICES=1) without Node, tsc, esbuild, protoc-gen-es."""
    needed = [
        MODULES / "typescript" / "bin" / "tsc",
        MODULES / "esbuild" / "package.json",
        MODULES / ".bin" / "protoc-gen-es",
    ]
    if shutil.which("node") and all(path.exists() for path in needed):
        return
    reason = (
        "Node.js or clients/typescript/node_modules missing: bash .ci/services.d/55-typescript.sh"
    )
    if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _node(*args: str) -> str:
    result = subprocess.run(
        ["node", *args], cwd=PACKAGE, capture_output=True, text=True, check=False, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node {' '.join(args)} failed:\n{output[-20000:]}"
    return output


def test_page_sources_pass_tsc_strict() -> None:
    require_node_packages()
    _node(str(MODULES / "typescript" / "bin" / "tsc"), "-p", str(EXAMPLE / "tsconfig.json"))


def test_generated_im_client_is_what_flare_gen_writes(tmp_path: Path) -> None:
    require_node_packages()
    generate_ts(
        ROOT / "schemas",
        tmp_path,
        files=["flare/im/v1/im.proto"],
        es_plugin=MODULES / ".bin" / "protoc-gen-es",
    )
    committed_root = EXAMPLE / "src" / "gen"
    fresh = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*.ts")}
    committed = {
        p.relative_to(committed_root).as_posix(): p.read_bytes()
        for p in committed_root.rglob("*.ts")
    }
    assert sorted(fresh) == sorted(committed)
    stale = [name for name, content in fresh.items() if content != committed[name]]
    assert not stale, (
        f"{stale} stale: flare gen --ts schemas --only flare/im/v1/im.proto "
        f"-o clients/typescript/examples/im-chat/src/gen, then {REBUILD}"
    )


def test_committed_bundle_matches_the_sources() -> None:
    require_node_packages()
    output = _node(str(EXAMPLE / "build.mjs"), "--check")
    assert "is up to date" in output


def test_the_package_ships_the_page_without_node_sources() -> None:
    """The wheel's package data is static/*: the page and its built script, nothing to build."""
    assert sorted(path.name for path in STATIC_DIR.iterdir()) == ["chat.js", "index.html"]
    bundle = (STATIC_DIR / "chat.js").read_text()
    assert bundle.startswith("// The Flare IM chat page, built from clients/typescript")
    assert "import " not in bundle.split("\n", 1)[1][:200]  # one self-contained script
