"""The import graph keeps the shape docs/architecture.md draws.

Every import statement of every module counts: at module level, inside a
function (a lazy import) and under ``if TYPE_CHECKING:`` -- a circle that only
type checking closes is still a circle in the design. A package's ``__init__``
running because one of its submodules is imported is not an edge.

* no import cycles in `flare_runtime` and `flare_codegen`;
* `flare_runtime`'s folders are layers (`LAYERS`): a module imports only from
  the layers its own may use;
* `flare_runtime/im/` imports nothing from `protocol/`, `wire/` or
  `transports/` (it is an application of the runtime, transport-free);
* `flare_codegen` imports from `flare_runtime` only `routing`, the contract the
  generated code is written against (its enums and the wire id);
* the protocol core is sans-I/O: tests/runtime/protocol/test_protocol_sans_io.py.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flare_runtime", "flare_codegen")

LAYERS: dict[str, tuple[str, ...]] = {
    # layer: the flare_runtime modules and folders in it
    "ground": ("errors", "status", "metadata", "details", "peer_log", "sharing", "stats"),
    "protocol": ("protocol",),
    "core": (
        "routing",
        "auth",
        "jwks",
        "context",
        "interceptors",
        "calls",
        "client",
        "dispatch",
        "server_connection",
        "transport_registry",
        "server",
        "reconnect",
        "reflection",
        "tracing",
        "discovery",
    ),
    "wire": ("wire",),
    "transports": ("transports", "asgi"),
    "cluster": ("cluster",),
    "im": ("im",),
    "workers": ("workers",),
    "operations": ("config", "observability", "admin"),
    "commands": ("cli",),
    "testing": ("testing",),
    "package": ("__init__",),
}
"""flare_runtime's layers, bottom up."""

_BELOW_OPERATIONS = {"ground", "protocol", "core", "wire", "transports", "cluster", "im", "workers"}
_BELOW_COMMANDS = _BELOW_OPERATIONS | {"operations"}

MAY_USE: dict[str, set[str]] = {
    "ground": {"ground"},
    "protocol": {"ground", "protocol"},
    "core": {"ground", "protocol", "core"},
    "wire": {"ground", "protocol", "core", "wire"},
    "transports": {"ground", "protocol", "core", "wire", "transports"},
    "cluster": {"ground", "core", "cluster"},
    "im": {"ground", "core", "cluster", "im"},
    "workers": {"ground", "protocol", "core", "wire", "transports", "workers"},
    "operations": _BELOW_OPERATIONS | {"operations"},
    "commands": _BELOW_COMMANDS | {"commands", "package"},
    "testing": _BELOW_COMMANDS | {"testing"},
    "package": {"ground", "protocol", "core"},
}
"""Which layers each layer may import from (its own included)."""


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that `name` (a module, or a name in a module) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> Iterator[str]:
    """Every module of ours `path` imports, by any import statement."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target is not None:
                    yield target
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                target = child if child in MODULES else _resolve(node.module)
                if target is not None:
                    yield target


GRAPH: dict[str, set[str]] = {
    module: {target for target in _imports(path) if target != module}
    for module, path in MODULES.items()
}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(GRAPH)))
    try:
        for module in GRAPH:
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _layer(module: str) -> str:
    if module == "flare_runtime":
        return "package"
    name = module.split(".")[1]
    for layer, members in LAYERS.items():
        if name in members:
            return layer
    raise AssertionError(
        f"{module} is in no layer: add {name!r} to LAYERS in tests/test_architecture.py "
        "(and to docs/architecture.md)"
    )


def test_the_graph_is_read_from_the_source() -> None:
    # The check must see what it checks: known edges of each kind are there.
    assert "flare_runtime.protocol.connection" in GRAPH["flare_runtime.wire.endpoint"]
    assert "flare_runtime.server" in GRAPH["flare_runtime.wire.server"]  # TYPE_CHECKING
    assert "flare_runtime.client" in GRAPH["flare_runtime.cli.call"]  # lazy
    assert "flare_runtime.protocol.frames" in GRAPH["flare_runtime.protocol.connection"]


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_a_cycle_would_be_found() -> None:
    GRAPH["flare_runtime.errors"].add("flare_runtime.server")
    try:
        assert any("flare_runtime.errors" in cycle for cycle in _cycles())
    finally:
        GRAPH["flare_runtime.errors"].discard("flare_runtime.server")


@pytest.mark.parametrize(
    "module",
    sorted(module for module in GRAPH if module.startswith("flare_runtime")),
)
def test_each_module_imports_only_from_the_layers_below_or_its_own(module: str) -> None:
    layer = _layer(module)
    for target in sorted(GRAPH[module]):
        if not target.startswith("flare_runtime"):
            continue
        assert _layer(target) in MAY_USE[layer], (
            f"{module} ({layer}) imports {target} ({_layer(target)}); "
            f"{layer} may use {sorted(MAY_USE[layer])} (docs/architecture.md)"
        )


def test_im_imports_nothing_from_protocol_wire_or_transports() -> None:
    for module, targets in GRAPH.items():
        if module.startswith("flare_runtime.im"):
            bad = {
                target
                for target in targets
                if target.startswith(
                    ("flare_runtime.protocol", "flare_runtime.wire", "flare_runtime.transports")
                )
            }
            assert not bad, f"{module} imports {sorted(bad)}"


def test_the_code_generator_imports_only_the_routing_contract_of_the_runtime() -> None:
    for module, targets in GRAPH.items():
        if module.startswith("flare_codegen"):
            runtime = {t for t in targets if t.startswith("flare_runtime")}
            assert runtime <= {"flare_runtime.routing"}, (module, sorted(runtime))
