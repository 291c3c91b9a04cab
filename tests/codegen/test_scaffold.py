"""`flare_codegen.scaffold.update_module` on the edits users make (no files: text in, text out).

The full round trip through the command, with mypy, is in commands/test_scaffold_command.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flare_codegen.routes import load_routes
from flare_codegen.scaffold import ScaffoldError, find_service, update_module

HEADER = 'syntax = "proto3";\npackage shop.v1;\nimport "shop/v1/types.proto";\n'
TYPES = 'syntax = "proto3";\npackage shop.v1;\nmessage A { int32 x = 1; }\nmessage B {}\n'


def _update(tmp_path: Path, service: str, module: str) -> tuple[str, list[list[str]]]:
    root = tmp_path / "schemas" / "shop" / "v1"
    root.mkdir(parents=True, exist_ok=True)
    (root / "types.proto").write_text(TYPES)
    (root / "shop.proto").write_text(HEADER + service)
    file, found = find_service(load_routes(tmp_path / "schemas"), "shop.v1.Shop")
    text, report = update_module(module, file, found)
    return text, [report.added, report.updated, report.removed]


def test_a_method_typed_the_users_own_way_is_left_alone(tmp_path: Path) -> None:
    module = """import typing
from typing import AsyncGenerator

from shop.v1.shop_flare import ShopBase
from shop.v1.types_pb2 import A, B
from flare_runtime.context import CallContext


class Shop(ShopBase):
    async def one(self, request: "A", context: CallContext) -> B:
        return B()

    async def many(
        self, requests: typing.AsyncIterator[A], context: CallContext
    ) -> AsyncGenerator[B, None]:
        yield B()
"""
    service = "service Shop { rpc One(A) returns (B); rpc Many(stream A) returns (stream B); }\n"
    text, report = _update(tmp_path, service, module)
    assert (text, report) == (module, [[], [], []])


def test_a_type_from_a_module_not_imported_gets_an_import_line(
    tmp_path: Path,
) -> None:
    module = '''"""Mine."""

from flare_runtime.context import CallContext
from shop.v1 import types_pb2
from shop.v1.shop_flare import ShopBase


class Shop(ShopBase):
    async def one(self, request: types_pb2.A, context: CallContext) -> types_pb2.B:
        return types_pb2.B()
'''
    service = (
        'import "google/protobuf/empty.proto";\n'
        "service Shop { rpc One(google.protobuf.Empty) returns (google.protobuf.Empty); }\n"
    )
    text, report = _update(tmp_path, service, module)
    assert report == [[], ["one"], []]
    assert text == module.replace(
        "from shop.v1.shop_flare import ShopBase\n",
        "from shop.v1.shop_flare import ShopBase\nfrom google.protobuf import empty_pb2\n",
    ).replace(
        "request: types_pb2.A, context: CallContext) -> types_pb2.B:",
        "request: empty_pb2.Empty, context: CallContext) -> empty_pb2.Empty:",
    )


def test_a_changed_cardinality_is_flagged_above_the_method(tmp_path: Path) -> None:
    module = """from collections.abc import AsyncIterator

from flare_runtime.context import CallContext
from shop.v1 import types_pb2
from shop.v1.shop_flare import ShopBase


class Shop(ShopBase):
    def one(self, request: types_pb2.A, context: CallContext) -> AsyncIterator[types_pb2.B]:
        return self.stream()
"""
    text, report = _update(tmp_path, "service Shop { rpc One(A) returns (B); }\n", module)
    assert report == [[], ["one"], []]
    assert text == module.replace(
        "    def one(self, request: types_pb2.A, context: CallContext)"
        " -> AsyncIterator[types_pb2.B]:",
        "    # flare scaffold: One is now unary: return one response (the body was not changed)\n"
        "    async def one(self, request: types_pb2.A, context: CallContext) -> types_pb2.B:",
    )


def test_a_module_without_imports_gets_them_after_its_docstring(tmp_path: Path) -> None:
    module = '"""Mine."""\n\n\nclass Shop(ShopBase):\n    x = 1\n'
    text, report = _update(tmp_path, "service Shop { rpc One(A) returns (B); }\n", module)
    assert report == [["one"], [], []]
    assert text == (
        '"""Mine."""\n\nfrom shop.v1 import types_pb2\n'
        "from flare_runtime.context import CallContext\n\n\nclass Shop(ShopBase):\n    x = 1\n\n"
        "    async def one(self, request: types_pb2.A, context: CallContext) -> types_pb2.B:\n"
        "        raise NotImplementedError\n"
    )


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("def (:\n", "cannot parse it"),
        ("class Shop:\n    pass\n", "no class deriving from ShopBase"),
        ("class Shop(ShopBase): pass\n", "class Shop is written on one line"),
    ],
)
def test_a_module_that_cannot_be_updated_is_an_error(
    tmp_path: Path, module: str, message: str
) -> None:
    with pytest.raises(ScaffoldError) as caught:
        _update(tmp_path, "service Shop { rpc One(A) returns (B); }\n", module)
    assert message in caught.value.message
