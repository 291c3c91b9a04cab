"""The out-of-tree TCP transport (examples/tcp_transport) through its entry point alone.

The example is its own distribution (``flare-tcp-transport``), installed into
the venv by the Makefile's install step; flare_runtime names it nowhere. Its
``flare.transports`` entry point is the only registration: this module runs
the whole conformance suite over ``tcp://`` on real sockets (the star import
below), plus TLS (``tcps://``) and ``flare serve --listen tcp=...``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

import flare_runtime
from flare_runtime.auth import JWTAuth
from flare_runtime.client import connect
from flare_runtime.errors import ConnectionClosedError
from flare_runtime.server import Server, TLSFiles
from flare_runtime.testing.conformance import *  # noqa: F403
from flare_runtime.testing.harness import JWT_KEY, Rig
from flare_runtime.testing.quic_harness import dev_certificate
from flare_runtime.testing.service import SERVICE, ConformanceService, Routes, StringValue
from flare_runtime.transport_registry import BUILT_IN, REGISTRY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def transport_name() -> str:
    return "tcp"


def test_the_transport_comes_from_the_installed_distribution_s_entry_point() -> None:
    try:
        distribution = importlib.metadata.distribution("flare-tcp-transport")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "examples/tcp_transport is not installed: run `make venv` "
            "(or `pip install -e examples/tcp_transport`)"
        )
    declared = [
        (entry_point.name, entry_point.value)
        for entry_point in distribution.entry_points
        if entry_point.group == "flare.transports"
    ]
    assert declared == [("tcp", "flare_tcp:TRANSPORT")]
    assert REGISTRY.origin("tcp") == (
        "plugin entry point flare_tcp:TRANSPORT of flare-tcp-transport 0.1.0"
    )
    assert REGISTRY.for_scheme("tcps") is REGISTRY.get("tcp")
    assert REGISTRY.get("tcp").harness is None  # the suite runs on the default harness
    # flare_runtime neither imports the plugin nor declares it among its own.
    assert "tcp" not in {spec.name for spec in BUILT_IN}
    runtime = Path(flare_runtime.__file__).parent
    imports = re.compile(r"^\s*(import|from)\s+flare_tcp\b", re.MULTILINE)
    assert not [path for path in runtime.rglob("*.py") if imports.search(path.read_text())]


async def test_tls_with_connection_auth_over_tcps() -> None:
    files = dev_certificate()
    server = Server([(SERVICE, ConformanceService())], auth=JWTAuth(JWT_KEY))
    await server.start(
        listen={"tcp": "127.0.0.1:0"},
        tls=TLSFiles(str(files.certificate), str(files.private_key)),
    )
    try:
        context = ssl.create_default_context(cafile=str(files.certificate))
        url = f"tcps://127.0.0.1:{server.port('tcp')}"
        async with connect(url, ssl_context=context, token=Rig.token("dana")) as channel:
            assert (await channel.unary_unary(Routes.WHO_AM_I, StringValue())).value == "dana"
        # A client that does not trust the certificate cannot connect.
        with pytest.raises(ConnectionClosedError):
            await connect(url, open_timeout=5)
    finally:
        await server.shutdown(grace=0)


def test_flare_serve_listens_on_the_plugin_and_flare_call_reaches_it() -> None:
    flare = [sys.executable, "-m", "flare_runtime.cli"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    served = subprocess.Popen(
        [*flare, "serve", "examples.chat.service:server", "--listen", "tcp=127.0.0.1:0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert served.stdout is not None
        line = served.stdout.readline()
        assert line.startswith("flare: serving tcp on port "), line
        url = line.rstrip().rsplit("(", 1)[1].rstrip(")")
        assert url.startswith("tcp://127.0.0.1:")
        ping = subprocess.run(
            [*flare, "call", url, "/examples.chat.v1.ChatService/Ping", "{}"],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.strip().endswith('Z"')  # a Timestamp in JSON
    finally:
        served.terminate()
        assert served.wait(timeout=30) == 0
