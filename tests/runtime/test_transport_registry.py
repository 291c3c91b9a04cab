"""The transport registry: built-ins declared like plugins, lookups, registration, lazy loading.

Broken plugins (entry points that fail to load or clash) are in
tests/hostile/test_transport_plugins.py; a real out-of-tree plugin passing the
conformance suite is tests/examples/test_tcp_transport.py.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest

from flare_runtime.client import ConnectOptions, connect
from flare_runtime.errors import ConfigurationError
from flare_runtime.server import Server, TLSFiles
from flare_runtime.testing.harness import Harness, get_harness
from flare_runtime.testing.service import SERVICE, BytesValue, ConformanceService, Routes
from flare_runtime.transport_registry import (
    BUILT_IN,
    REGISTRY,
    TransportRegistry,
    TransportSpec,
    register_transport,
)
from flare_runtime.transports import websocket


def test_built_in_transports_and_their_url_schemes() -> None:
    assert [spec.name for spec in BUILT_IN] == ["websocket", "quic", "grpc", "webtransport"]
    assert {"websocket", "quic", "grpc", "webtransport"} <= set(REGISTRY.names())
    by_scheme = {
        scheme: REGISTRY.for_scheme(scheme).name
        for scheme in ("ws", "wss", "quic", "grpc", "grpcs", "webtransport")
    }
    assert by_scheme == {
        "ws": "websocket",
        "wss": "websocket",
        "quic": "quic",
        "grpc": "grpc",
        "grpcs": "grpc",
        "webtransport": "webtransport",
    }
    assert REGISTRY.get("websocket").url_scheme(secure=True) == "wss"
    assert REGISTRY.get("quic").url_scheme(secure=False) == "quic"
    assert REGISTRY.origin("grpc") == "built in"


@pytest.mark.parametrize("spec", BUILT_IN, ids=lambda spec: spec.name)
def test_every_built_in_reference_loads_with_the_adapter_signature(spec: TransportSpec) -> None:
    """The strings in `BUILT_IN` are not type-checked: this is their check."""
    listener = inspect.signature(spec.load_listener())
    assert list(listener.parameters) == ["server", "address", "tls"]
    assert listener.parameters["tls"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.iscoroutinefunction(spec.load_listener())
    assert list(inspect.signature(spec.load_channel()).parameters) == ["url", "options"]
    assert inspect.iscoroutinefunction(spec.load_channel())
    harness = get_harness(spec.name)
    assert isinstance(harness, Harness)
    assert harness.name == spec.name


def test_importing_flare_runtime_imports_no_transport_and_reads_no_entry_point() -> None:
    probe = (
        "import sys, flare_runtime\n"
        "allowed = {'flare_runtime.transports', 'flare_runtime.transport_registry'}\n"
        "print(sorted(name for name in set(sys.modules) - allowed\n"
        "             if name.split('.')[0] in ('websockets', 'aioquic', 'grpc')\n"
        "             or name.startswith('flare_runtime.transports')\n"
        "             or name == 'importlib.metadata'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout
    assert result.stderr == ""


async def _open_renamed_websocket(url: str, options: ConnectOptions) -> Any:
    return await websocket.open_channel("ws" + url.removeprefix("ws-renamed"), options)


async def _start_renamed_websocket(server: Server, address: str, *, tls: TLSFiles | None) -> Any:
    return await websocket.start_listener(server, address, tls=tls)


async def test_a_transport_registered_from_code_is_served_and_reached() -> None:
    """`register_transport` with objects (not strings): `listen=`, `port` and `connect` use it."""
    register_transport(
        TransportSpec(
            "websocket-renamed",
            scheme="ws-renamed",
            listener=_start_renamed_websocket,
            channel=_open_renamed_websocket,
        )
    )
    assert REGISTRY.origin("websocket-renamed") == "registered"
    server = Server([(SERVICE, ConformanceService())])
    await server.start(listen={"websocket-renamed": "127.0.0.1:0"})
    try:
        port = server.port("websocket-renamed")
        async with connect(f"ws-renamed://127.0.0.1:{port}") as channel:
            reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"r"))
            assert reply.value == b"r"
    finally:
        await server.shutdown(grace=0)


def test_a_taken_name_or_scheme_is_refused() -> None:
    registry = TransportRegistry(group=None)
    other = TransportSpec("websocket", scheme="other", listener="m:f", channel="m:g")
    with pytest.raises(ConfigurationError) as caught:
        registry.register(other)
    assert str(caught.value) == (
        "transport 'websocket' (registered) is already declared (built in)"
    )
    clash = TransportSpec("secure-ws", scheme="wss", listener="m:f", channel="m:g")
    with pytest.raises(ConfigurationError) as caught:
        registry.register(clash)
    assert str(caught.value) == (
        "transport 'secure-ws' (registered) claims URL scheme wss://, which is transport "
        "'websocket''s"
    )
    assert "secure-ws" not in registry.names()


def test_unknown_names_and_schemes_list_what_is_known() -> None:
    registry = TransportRegistry(group=None)
    with pytest.raises(ConfigurationError) as caught:
        registry.get("tpc")
    assert str(caught.value) == (
        "unknown transport 'tpc': known transports are grpc, quic, websocket, webtransport"
    )
    with pytest.raises(ConfigurationError) as caught:
        registry.for_scheme("http")
    assert str(caught.value) == (
        "unsupported URL scheme http://: use one of ws://, wss://, quic://, grpc://, grpcs://, "
        "webtransport://"
    )


def test_a_reference_that_does_not_load_is_one_line_naming_the_transport() -> None:
    missing = TransportSpec(
        "missing", scheme="missing", listener="no_such_module:start", channel="json:loads.x"
    )
    with pytest.raises(ConfigurationError) as caught:
        missing.load_listener()
    assert str(caught.value) == (
        "transport 'missing': cannot load its listener 'no_such_module:start': "
        "ModuleNotFoundError: No module named 'no_such_module'"
    )
    with pytest.raises(ConfigurationError) as caught:
        missing.load_channel()
    assert str(caught.value) == (
        "transport 'missing': cannot load its channel 'json:loads.x': "
        "AttributeError: 'function' object has no attribute 'x'"
    )
    not_callable = TransportSpec("flat", scheme="flat", listener="json:__name__", channel="m:f")
    with pytest.raises(ConfigurationError) as caught:
        not_callable.load_listener()
    assert str(caught.value) == "transport 'flat': listener 'json:__name__' is not callable"


def test_a_transport_whose_optional_library_is_missing_says_what_to_install() -> None:
    """QUIC without aioquic (``pip install flare-rpc`` without ``[quic]``): one line naming
    the extra, from the server and from `connect` alike."""
    script = (
        "import asyncio, sys\n"
        "sys.modules['aioquic'] = None  # as if not installed\n"
        "import flare_runtime as flare\n"
        "async def main():\n"
        "    for attempt in (flare.connect('quic://127.0.0.1:1'),\n"
        "                    flare.Server([]).start(listen={'webtransport': '127.0.0.1:0'})):\n"
        "        try:\n"
        "            await attempt\n"
        "        except flare.ConfigurationError as error:\n"
        "            print(error)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == [
        "transport 'quic' needs aioquic, which is not installed: pip install 'flare-rpc[quic]'",
        "transport 'webtransport' needs aioquic, which is not installed: "
        "pip install 'flare-rpc[quic]'",
    ]
