"""``flare scaffold`` end to end: write a handler module, edit it as a user would, change the
schema, run it again; the result differs from the user's text only where intended, and
passes mypy --strict against the regenerated base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flare_runtime.cli import main

ROOT = Path(__file__).resolve().parents[3]

STORE_V1 = """syntax = "proto3";
package store.v1;
import "flare/options/v1/options.proto";
message GetRequest { string id = 1; }
message Item { string id = 1; string name = 2; }
message ListRequest { int32 limit = 1; }
message PutReply { int32 stored = 1; }
service Store {
  option (flare.options.v1.service) = {service_id: 3};
  rpc Get(GetRequest) returns (Item) { option (flare.options.v1.method) = {route_id: 1}; }
  rpc List(ListRequest) returns (stream Item) { option (flare.options.v1.method) = {route_id: 2}; }
  rpc Put(Item) returns (PutReply) { option (flare.options.v1.method) = {route_id: 3}; }
  rpc Old(GetRequest) returns (Item) { option (flare.options.v1.method) = {route_id: 4}; }
}
"""

# v2: Get takes a LookupRequest; Put streams its requests; Old is gone; Watch is new.
STORE_V2 = (
    STORE_V1.replace(
        "message ListRequest", "message LookupRequest { string id = 1; }\nmessage ListRequest"
    )
    .replace("rpc Get(GetRequest)", "rpc Get(LookupRequest)")
    .replace("rpc Put(Item)", "rpc Put(stream Item)")
    .replace(
        "  rpc Old(GetRequest) returns (Item) "
        "{ option (flare.options.v1.method) = {route_id: 4}; }\n",
        "  rpc Watch(ListRequest) returns (stream Item) "
        "{ option (flare.options.v1.method) = {route_id: 5}; }\n",
    )
    .replace("service_id: 3}", "service_id: 3, reserved_route_ids: {start: 4}}")
)

FRESH_V1 = '''"""Handlers of `store.v1.Store`.

Scaffolded by ``flare scaffold``: write the bodies. Run it again after the schema
changes: it adds the new methods and updates changed signatures, and never touches
a body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from flare_runtime.context import CallContext
from store.v1 import store_pb2
from store.v1.store_flare import StoreBase


class Store(StoreBase):
    """Serves `store.v1.Store`."""

    async def get(self, request: store_pb2.GetRequest, context: CallContext) -> store_pb2.Item:
        raise NotImplementedError

    async def list(
        self,
        request: store_pb2.ListRequest,
        context: CallContext,
    ) -> AsyncIterator[store_pb2.Item]:
        raise NotImplementedError
        yield  # an async generator: yield each response

    async def put(self, request: store_pb2.Item, context: CallContext) -> store_pb2.PutReply:
        raise NotImplementedError

    async def old(self, request: store_pb2.GetRequest, context: CallContext) -> store_pb2.Item:
        raise NotImplementedError
'''

# What a user makes of it: bodies, comments, a helper, their own layout and imports.
EDITED_V1 = '''"""The store's handlers -- my own docstring now."""

from __future__ import annotations

import logging  # the user's own import
from collections.abc import AsyncIterator

from flare_runtime.context import CallContext
from store.v1 import store_pb2
from store.v1.store_flare import StoreBase

LOG = logging.getLogger(__name__)


class Store(StoreBase):
    """Keeps items in memory."""

    def __init__(self) -> None:
        self.items: dict[str, store_pb2.Item] = {}  # by id

    # Lookups log their misses.
    async def get(self, request: store_pb2.GetRequest, context: CallContext) -> store_pb2.Item:
        item = self.items.get(request.id)
        if item is None:
            LOG.info("miss %s", request.id)   # odd spacing, kept
            return store_pb2.Item(id=request.id)
        return item

    async def list(self, request: store_pb2.ListRequest,
                   context: CallContext) -> AsyncIterator[store_pb2.Item]:  # my layout
        for index, item in enumerate(self.items.values()):
            if index == request.limit:
                break
            yield item

    async def put(self, request: store_pb2.Item, context: CallContext) -> store_pb2.PutReply:
        raise NotImplementedError  # not yet

    async def old(self, request: store_pb2.GetRequest, context: CallContext) -> store_pb2.Item:
        return store_pb2.Item()

    def _key(self, item: store_pb2.Item) -> str:
        return item.id
'''

# Exactly the intended changes: Get's request type, Put's request stream (with a note),
# Old marked, Watch appended.
EDITED_V2 = (
    EDITED_V1.replace(
        "    async def get(self, request: store_pb2.GetRequest, context: CallContext)",
        "    async def get(self, request: store_pb2.LookupRequest, context: CallContext)",
    )
    .replace(
        "    async def put(self, request: store_pb2.Item, context: CallContext)",
        "    # flare scaffold: Put is now client-stream: return one response"
        " (the body was not changed)\n"
        "    async def put(self, request: AsyncIterator[store_pb2.Item], context: CallContext)",
    )
    .replace(
        "    async def old(",
        "    # flare scaffold: no route of store.v1.Store is handled by old any more"
        " (nothing calls it)\n    async def old(",
    )
    + """
    async def watch(
        self,
        request: store_pb2.ListRequest,
        context: CallContext,
    ) -> AsyncIterator[store_pb2.Item]:
        raise NotImplementedError
        yield  # an async generator: yield each response
"""
)


def _schema(root: Path, text: str) -> Path:
    schemas = root / "schemas"
    (schemas / "store" / "v1").mkdir(parents=True, exist_ok=True)
    (schemas / "store" / "v1" / "store.proto").write_text(text)
    assert main(["gen", str(schemas), "-o", str(root / "generated")]) == 0
    return schemas


def _mypy(root: Path, module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            "/dev/null",
            str(module),
        ],
        cwd=root,
        env={"MYPYPATH": str(root / "generated"), "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_scaffold_then_edit_then_a_schema_change_touches_only_what_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = _schema(tmp_path, STORE_V1)
    module = tmp_path / "handlers" / "store.py"
    assert main(["scaffold", str(schemas), "store.v1.Store", "-o", str(module)]) == 0
    assert module.read_text() == FRESH_V1
    fresh = _mypy(tmp_path, module)
    assert fresh.returncode == 0, fresh.stdout

    module.write_text(EDITED_V1)
    capsys.readouterr()
    _schema(tmp_path, STORE_V2)
    assert main(["scaffold", str(schemas), "Store", "-o", str(module), "--check"]) == 1
    assert module.read_text() == EDITED_V1  # --check changes nothing
    assert main(["scaffold", str(schemas), "Store", "-o", str(module)]) == 0
    assert module.read_text() == EDITED_V2
    err = capsys.readouterr().err
    assert f"flare scaffold: {module}: added: watch\n" in err
    assert f"flare scaffold: {module}: updated: get, put\n" in err
    assert f"flare scaffold: {module}: no route any more (marked, left in place): old\n" in err
    updated = _mypy(tmp_path, module)  # the user's bodies still fit the new base
    assert updated.returncode == 0, updated.stdout

    # A second run changes nothing: the marks are recognised.
    assert main(["scaffold", str(schemas), "Store", "-o", str(module)]) == 0
    assert module.read_text() == EDITED_V2
    assert f"{module} is up to date" in capsys.readouterr().err


def test_a_fresh_module_of_every_cardinality_passes_mypy_strict_against_the_base(
    tmp_path: Path,
) -> None:
    module = tmp_path / "chat_handlers.py"
    assert main(["scaffold", str(ROOT / "schemas"), "ChatService", "-o", str(module)]) == 0
    (tmp_path / "generated").symlink_to(ROOT / "generated")
    result = _mypy(tmp_path, module)
    assert result.returncode == 0, result.stdout
    # As a user's project lints it: flare_runtime and the generated code are third-party.
    ruff = Path(sys.executable).with_name("ruff")
    rules = "E,F,W,I,UP,B,SIM,RUF,PL,N"
    lint = subprocess.run(
        [str(ruff), "check", "--isolated", "--line-length=100", f"--select={rules}", str(module)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout


def test_without_out_the_module_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scaffold", str(ROOT / "schemas"), "examples.chat.v1.ChatAdminService"]) == 0
    out = capsys.readouterr().out
    assert "class ChatAdminService(ChatAdminServiceBase):" in out
    assert "    async def purge(" in out


@pytest.mark.parametrize(
    ("service", "text", "message"),
    [
        ("Nope", None, "no service Nope in the schema (it has: "),
        ("ChatService", "x = (\n", "cannot parse it"),
        ("ChatService", "class Other:\n    pass\n", "no class deriving from ChatServiceBase"),
    ],
)
def test_what_cannot_be_done_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    service: str,
    text: str | None,
    message: str,
) -> None:
    module = tmp_path / "handlers.py"
    if text is not None:
        module.write_text(text)
    assert main(["scaffold", str(ROOT / "schemas"), service, "-o", str(module)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flare scaffold: ")
    assert message in err
    assert err.count("\n") == 1
    if text is not None:
        assert module.read_text() == text
