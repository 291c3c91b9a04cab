"""The protocol core stays sans-I/O: no event loop, no sockets, no transport library, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import flare_runtime.protocol

PACKAGE = Path(flare_runtime.protocol.__file__).parent
FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "time",
    "trio",
    "anyio",
    "uvloop",
    "websockets",
    "aioquic",
    "grpc",
    "picows",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_protocol_module_imports_io_or_clock_modules() -> None:
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) >= 6
    for path in sources:
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            if top == "flare_runtime":
                # Only the shared contract (errors, status, metadata) and itself.
                assert name.startswith(
                    (
                        "flare_runtime.protocol",
                        "flare_runtime.errors",
                        "flare_runtime.status",
                        "flare_runtime.metadata",
                    )
                ), f"{path.name} imports {name}"


def test_the_shared_modules_the_protocol_uses_are_io_free_too() -> None:
    # Follow the protocol's imports into flare_runtime (errors, status,
    # metadata) transitively: none of them may pull in I/O either.
    root = PACKAGE.parent.parent
    seen: set[str] = set()
    pending = [
        name
        for path in PACKAGE.glob("*.py")
        for name in imported_modules(path)
        if name.startswith("flare_runtime.") and not name.startswith("flare_runtime.protocol")
    ]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root / (name.replace(".", "/") + ".py")
        for imported in imported_modules(path):
            assert imported.split(".")[0] not in FORBIDDEN, f"{name} imports {imported}"
            if imported.startswith("flare_runtime."):
                pending.append(imported)
    assert {"flare_runtime.errors", "flare_runtime.status", "flare_runtime.metadata"} <= seen
