"""From a built wheel in a fresh virtual environment, every documented entry point works.

The wheel is built the way docs/schema-ci.md tells CI to install Flare, with
pip from a git URL (here ``git+file://`` of a committed copy of this
checkout), and installed without dependencies into a new venv whose only
extra path is the development venv's site-packages (for protobuf, grpcio,
websockets...; Flare itself is not importable from there). Nothing from the
source tree is importable in the new venv: Flare's options, the IM API and
the ``options.proto`` include directory must all come from the wheel.

Then, in that venv: ``flare --version`` and ``--help``; ``protoc-gen-flare``
run by protoc and ``flare gen`` (byte-identical output); ``flare routes``;
``python -m flare_runtime.im.demo`` started for real (page served, a Login
over WebSocket answered, clean exit on SIGTERM); ``flare serve`` of a user
module answering ``flare call`` and a stock grpcio client that imports no
Flare code (it compiles ``flare/options/v1/options.proto`` beside the schema,
as docs/codegen.md says a stock client must); ``flare_runtime.asgi`` imported
with no ASGI framework importable, and the same server mounted in a Starlette
app run by ``python -m uvicorn`` (docs/asgi.md) answering ``flare call`` at its path.

A second venv sees only what ``pip install flare-rpc`` (no extras) installs:
the wheel's core requirements and theirs, linked file by file from the
development venv. There ``flare serve`` serves WebSocket, ``flare call``
calls it, and ``flare gen`` says in one line which extra to install.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flare_runtime import __version__

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "schemas" / "examples" / "chat" / "v1" / "chat.proto"
OPTIONS = ROOT / "schemas" / "flare" / "options" / "v1" / "options.proto"
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
TIMEOUT = 120

APP = """
from __future__ import annotations

from collections.abc import AsyncIterator

import flare_runtime as flare
from acme.chat.v1 import chat_pb2 as pb
from acme.chat.v1.chat_flare import ChatServiceBase
from google.protobuf import empty_pb2, timestamp_pb2

Context = flare.CallContext


class Chat(ChatServiceBase):
    async def send(self, request: pb.SendRequest, context: Context) -> pb.SendReply:
        return pb.SendReply()

    async def subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.RoomEvent]:
        yield pb.RoomEvent()

    async def upload(
        self, requests: AsyncIterator[pb.UploadChunk], context: Context
    ) -> pb.UploadReply:
        return pb.UploadReply()

    async def chat(
        self, requests: AsyncIterator[pb.ChatMessage], context: Context
    ) -> AsyncIterator[pb.ChatMessage]:
        async for message in requests:
            yield message

    async def history(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryReply:
        return pb.HistoryReply()

    async def ping(self, request: empty_pb2.Empty, context: Context) -> timestamp_pb2.Timestamp:
        return timestamp_pb2.Timestamp(seconds=42)


server = flare.Server([Chat()])
"""

IM_LOGIN = """
import asyncio, sys
import flare_runtime as flare
from flare.im.v1 import im_pb2
from flare.im.v1.im_flare import ImServiceClient

async def main() -> None:
    async with flare.connect(sys.argv[1], token="alice") as channel:
        client = ImServiceClient(channel)
        reply = await client.login(im_pb2.LoginRequest(device_id="d1"), timeout=10)
        print(type(reply).__name__)

asyncio.run(main())
"""

ASGI_APP = """
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from app import server
from flare_runtime.asgi import FlareASGI

flare = FlareASGI(server)
app = Starlette(routes=[WebSocketRoute("/flare", flare)], lifespan=flare.lifespan)
"""

WITHOUT_FRAMEWORKS = """
import sys
sys.modules.update(starlette=None, uvicorn=None, fastapi=None)  # None: import fails
from flare_runtime.asgi import FlareASGI
print(FlareASGI.__name__)
"""

# uvicorn's log lines on stdout, where `_started` looks for "Uvicorn running on".
UVICORN_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"out": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
    "loggers": {"uvicorn": {"handlers": ["out"], "level": "INFO"}},
}

STOCK_CLIENT = """
import importlib.util, sys
import grpc
from google.protobuf import empty_pb2
assert importlib.util.find_spec("flare_runtime") is None, "the stock client must not see Flare"
from acme.chat.v1 import chat_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    print(chat_pb2_grpc.ChatServiceStub(channel).Ping(empty_pb2.Empty(), timeout=10).seconds)
"""


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@contextmanager
def _started(
    args: list[str], cwd: Path, env: dict[str, str], ready: str, returncode: int = 0
) -> Iterator[list[str]]:
    """Start a server process; yield the stdout lines up to the one matching `ready`.

    On exit the process gets SIGTERM and must exit with `returncode`.
    """
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if re.search(ready, line):
                break
        else:
            pytest.fail(f"{args} ended before {ready!r}: {lines} {proc.communicate()[1]}")
        yield lines
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == returncode, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _build_wheel_from_git(tmp_path: Path) -> Path:
    """``pip wheel "flare-rpc @ git+file://..."`` of a committed copy of this checkout."""
    source = tmp_path / "source"
    # A clean copy: setuptools reuses build/ and *.egg-info, which may hold stale files.
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        _run([*git, *command], source, dict(os.environ))
    _run(
        [
            sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
            "-w", str(tmp_path / "dist"), f"flare-rpc @ git+file://{source}",
        ],
        tmp_path,
        dict(os.environ),
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("flare_rpc-*.whl")
    return wheel


def _core_site_packages(wheel: Path, site: Path) -> Path:
    """`site` filled with links to the files of what ``pip install <wheel>`` installs
    without extras: the wheel's unconditional requirements and theirs, recursively,
    as the development venv has them."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    todo = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    wanted: set[str] = set()
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(requirement.name) in wanted:
            continue
        wanted.add(canonicalize_name(requirement.name))
        todo.extend(Requirement(line) for line in distribution(requirement.name).requires or [])
    for project in wanted:
        installed = distribution(project)
        for file in installed.files or ():
            source = Path(str(installed.locate_file(file)))
            target = site / file
            if file.parts[0] == ".." or not source.is_file() or target.exists():
                continue  # scripts outside site-packages; files another project shares
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return site


def _fresh_venv(tmp_path: Path, wheel: Path, *, core_only: bool = False) -> Path:
    """A venv holding the wheel; its other modules come from the development venv's
    site-packages, or with `core_only` from `_core_site_packages`."""
    venv = tmp_path / ("core-venv" if core_only else "venv")
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", str(venv)], tmp_path, dict(os.environ))
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            dict(os.environ),
        ).strip()
    )
    dependencies = (
        _core_site_packages(wheel, tmp_path / "core-site-packages")
        if core_only
        else Path(sysconfig.get_paths()["purelib"])
    )
    (site / "dev-dependencies.pth").write_text(f"{dependencies}\n")
    _run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
            "--no-deps", "--no-index", str(wheel),
        ],
        tmp_path,
        dict(os.environ),
    )  # fmt: skip
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel_from_git(tmp_path_factory.mktemp("wheel"))


def _env(venv: Path, home: Path) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(home),
    }


@pytest.mark.slow
def test_every_documented_entry_point_works_from_the_installed_wheel(
    tmp_path: Path, wheel: Path
) -> None:
    venv = _fresh_venv(tmp_path, wheel)
    python, flare = str(venv / "bin" / "python"), str(venv / "bin" / "flare")
    work = tmp_path / "work"
    work.mkdir()
    env = _env(venv, tmp_path)

    # The CLI, and where every module comes from.
    assert _run([flare, "--version"], work, env) == f"flare {__version__}\n"
    assert "schema" in _run([flare, "--help"], work, env)
    assert _run([str(venv / "bin" / "protoc-gen-flare"), "--version"], work, env).startswith(
        "protoc-gen-flare "
    )
    installed = _run(
        [
            python,
            "-c",
            "import flare_codegen, flare_runtime, flare.options.v1.options_pb2 as o\n"
            "import flare.im.v1.im_flare as im\n"
            "from flare_codegen.compiler import flare_include_dir\n"
            "for path in (flare_codegen.__file__, flare_runtime.__file__, o.__file__,\n"
            "             im.__file__, flare_include_dir()):\n"
            "    print(path)",
        ],
        work,
        env,
    ).split()
    assert all(path.startswith(str(venv)) for path in installed), installed

    # Generation: protoc with the plugin, and flare gen, give the same bytes.
    schema = work / "schemas" / "acme" / "chat" / "v1"
    schema.mkdir(parents=True)
    shutil.copy(CHAT, schema / "chat.proto")
    (work / "gen").mkdir()
    _run(
        [
            python, "-m", "grpc_tools.protoc", "-Ischemas", f"-I{installed[-1]}",
            "--python_out=gen", "--mypy_out=gen", "--flare_out=gen", "acme/chat/v1/chat.proto",
        ],
        work,
        env,
    )  # fmt: skip
    _run([flare, "gen", "schemas", "-o", "generated"], work, env)
    for name in ("chat_pb2.py", "chat_pb2.pyi", "chat_flare.py"):
        first = (work / "gen" / "acme" / "chat" / "v1" / name).read_bytes()
        assert first == (work / "generated" / "acme" / "chat" / "v1" / name).read_bytes()
    routes = json.loads(_run([flare, "routes", "schemas", "--json"], work, env))
    assert routes["services"][0]["routes"][0]["wire_id"] == 1 << 16 | 1

    # The IM demo, from the wheel's flare.im modules.
    demo = [python, "-m", "flare_runtime.im.demo", "--http-port", "0", "--ws-port", "0"]
    with _started([*demo, "--db", str(work / "im.db")], work, env, r"Flare chat: open") as lines:
        page, websocket = re.findall(r"(http://\S+)|(ws://[^)\s]+)", lines[-1])
        with urllib.request.urlopen(page[0], timeout=10) as response:
            assert response.status == 200
            assert b"<html" in response.read().lower()
        # The page's script is the committed bundle (no Node.js at install or run time).
        with urllib.request.urlopen(page[0] + "chat.js", timeout=10) as response:
            bundle = ROOT / "flare_runtime" / "im" / "web" / "static" / "chat.js"
            assert response.read() == bundle.read_bytes()
        assert _run([python, "-c", IM_LOGIN, websocket[1]], work, env).strip() == "LoginReply"

    # flare serve of a user module; flare call and a stock gRPC client call it.
    (work / "app.py").write_text(APP)
    stock = work / "stock"
    stock.mkdir()
    (work / "schemas" / "flare" / "options" / "v1").mkdir(parents=True)
    shutil.copy(OPTIONS, work / "schemas" / "flare" / "options" / "v1" / "options.proto")
    _run(
        [
            python, "-m", "grpc_tools.protoc", "-Ischemas", "--python_out=stock",
            "--grpc_python_out=stock", "acme/chat/v1/chat.proto", "flare/options/v1/options.proto",
        ],
        work,
        env,
    )  # fmt: skip
    serve = [flare, "serve", "app:server", "--ws", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]
    with _started(serve, work, env, r"serving grpc") as lines:
        urls = dict(re.findall(r"serving (\w+) on port \d+ \((\S+)\)", "\n".join(lines)))
        call = [flare, "call", urls["websocket"], "/examples.chat.v1.ChatService/Ping", "{}"]
        assert json.loads(_run(call, work, env)) == "1970-01-01T00:00:42Z"
        stock_env = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(stock), sysconfig.get_paths()["purelib"]]),
        }
        base_python = getattr(sys, "_base_executable", sys.executable)
        target = urls["grpc"].removeprefix("grpc://")
        assert _run([base_python, "-s", "-c", STOCK_CLIENT, target], work, stock_env) == "42\n"

    # The ASGI mount: importable without a framework; under uvicorn, the same server at /flare.
    assert _run([python, "-c", WITHOUT_FRAMEWORKS], work, env) == "FlareASGI\n"
    (work / "asgi_app.py").write_text(ASGI_APP)
    (work / "log.json").write_text(json.dumps(UVICORN_LOG_CONFIG))
    uvicorn = [
        python, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "0",
        "--ws-per-message-deflate", "false", "--log-config", "log.json",
    ]  # fmt: skip
    generated = {**env, "PYTHONPATH": "generated"}  # what flare serve puts on sys.path itself
    # uvicorn ends by raising the SIGTERM it handled again.
    with _started(uvicorn, work, generated, r"Uvicorn running on", -signal.SIGTERM) as lines:
        (port,) = re.findall(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", lines[-1])
        url = f"ws://127.0.0.1:{port}/flare"
        call = [flare, "call", url, "/examples.chat.v1.ChatService/Ping", "{}"]
        assert json.loads(_run(call, work, env)) == "1970-01-01T00:00:42Z"


@pytest.mark.slow
def test_a_plain_install_serves_and_calls_websocket_and_names_the_codegen_extra(
    tmp_path: Path, wheel: Path
) -> None:
    venv = _fresh_venv(tmp_path, wheel, core_only=True)
    python, flare = str(venv / "bin" / "python"), str(venv / "bin" / "flare")
    work = tmp_path / "work"
    env = _env(venv, tmp_path)
    # What the extras bring is not there (only the wheel's core requirements are).
    for module in ("grpc_tools", "mypy_protobuf", "yaml", "libcst", "aioquic", "asyncpg", "redis",
                   "httpx", "opentelemetry", "aiohttp", "starlette", "uvicorn"):  # fmt: skip
        found = subprocess.run([python, "-c", f"import {module}"], env=env, check=False)
        assert found.returncode == 1, f"{module} is an extra: the core venv must not see it"

    # No code generator: flare gen says in one line what to install.
    (work / "schemas" / "acme" / "chat" / "v1").mkdir(parents=True)
    shutil.copy(CHAT, work / "schemas" / "acme" / "chat" / "v1" / "chat.proto")
    gen = subprocess.run(
        [flare, "gen", "schemas", "-o", "generated"],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=TIMEOUT,
    )  # fmt: skip
    assert (gen.returncode, gen.stdout) == (1, "")
    assert gen.stderr == "flare gen: missing dependencies; run: pip install 'flare-rpc[codegen]'\n"

    # A server from code generated elsewhere (here: by the development venv's flare).
    _run(
        [sys.executable, "-m", "flare_runtime.cli", "gen", "schemas", "-o", "generated"],
        work,
        dict(os.environ),
    )
    (work / "app.py").write_text(APP)
    serve = [flare, "serve", "app:server", "--ws", "127.0.0.1:0"]
    with _started(serve, work, env, r"serving websocket") as lines:
        (url,) = re.findall(r"serving websocket on port \d+ \((\S+)\)", "\n".join(lines))
        call = [flare, "call", url, "/examples.chat.v1.ChatService/Ping", "{}"]
        assert json.loads(_run(call, work, env)) == "1970-01-01T00:00:42Z"
