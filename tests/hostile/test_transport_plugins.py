"""Hostile input: broken transport plugins (``flare.transports`` entry points).

Each plugin here is a real distribution on ``sys.path`` (a ``*.dist-info``
directory with ``entry_points.txt``, found by importlib.metadata), broken in
one way. The promise: ``import flare_runtime`` never notices; asking for the
plugin is a one-line `ConfigurationError` naming it; other transports keep
working.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flare_runtime.errors import ConfigurationError
from flare_runtime.transport_registry import TransportRegistry

ROOT = Path(__file__).resolve().parents[2]

BROKEN_IMPORT = (
    "transport plugin 'broken' (entry point flare_broken_plugin:TRANSPORT of "
    "flare-broken-plugin 0.1) failed to load: ModuleNotFoundError: "
    "No module named 'flare_broken_plugin'"
)


def write_distribution(
    root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None
) -> None:
    """Install distribution `name` 0.1 into `root` (a sys.path entry) with these entry points."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[flare.transports]\n{lines}")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)


@pytest.fixture
def broken_plugin_path(tmp_path: Path) -> Path:
    """A sys.path entry with a plugin whose module does not exist."""
    write_distribution(tmp_path, "flare-broken-plugin", {"broken": "flare_broken_plugin:TRANSPORT"})
    return tmp_path


def run_python(code: str, plugin_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), str(ROOT / "generated"), str(ROOT)])
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_of_flare_runtime_ignores_a_plugin_that_cannot_import(
    broken_plugin_path: Path,
) -> None:
    """Input: an installed plugin whose module is missing. Outcome: the import is silent."""
    result = run_python("import flare_runtime", broken_plugin_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_plugin_that_cannot_import_is_one_line_where_it_is_asked_for(
    broken_plugin_path: Path,
) -> None:
    """Input: ``listen={"broken": ...}`` and ``connect("broken://...")``.

    Outcome: `ConfigurationError`, one line naming the plugin, its entry point
    and the import error; connect lists the schemes that do work, and the
    plugin already reported; nothing on stderr (no traceback, no warning).
    """
    code = (
        "import asyncio, flare_runtime as flare\n"
        "async def main():\n"
        "    server = flare.Server()\n"
        "    for attempt in (\n"
        "        lambda: server.start(listen={'broken': '127.0.0.1:0'}),\n"
        "        lambda: flare.connect('broken://127.0.0.1:1'),\n"
        "    ):\n"
        "        try:\n"
        "            await attempt()\n"
        "        except flare.ConfigurationError as error:\n"
        "            print(error)\n"
        "asyncio.run(main())\n"
    )
    result = run_python(code, broken_plugin_path)
    assert result.returncode == 0, result.stderr
    started, connected = result.stdout.splitlines()
    assert started == BROKEN_IMPORT
    assert connected.startswith("unsupported URL scheme broken://: use one of ws://, wss://, ")
    assert connected.endswith(f"; {BROKEN_IMPORT}")
    assert result.stderr == ""


def test_flare_serve_reports_a_plugin_that_cannot_import_in_one_line(
    broken_plugin_path: Path,
) -> None:
    """Input: ``flare serve ... --listen broken=127.0.0.1:0``. Outcome: one line, exit 2."""
    result = run_python(
        "",
        broken_plugin_path,
        "-m",
        "flare_runtime.cli",
        "serve",
        "examples.chat.service:server",
        "--listen",
        "broken=127.0.0.1:0",
    )
    assert result.returncode == 2
    assert result.stderr == f"flare serve: {BROKEN_IMPORT}\n"
    assert result.stdout == ""


@pytest.fixture
def registry_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[TransportRegistry, Path]:
    """A fresh registry reading the real entry-point group, and a sys.path entry to fill."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return TransportRegistry(), tmp_path


SPEC_SOURCE = (
    "from flare_runtime.transports import TransportSpec\n"
    "SPEC = TransportSpec({name!r}, scheme={scheme!r}, listener='m:f', channel='m:g')\n"
)


def test_an_entry_point_that_is_not_a_transport_spec(
    registry_with: tuple[TransportRegistry, Path],
) -> None:
    """Input: the entry point names a string. Outcome: one line saying what it is instead."""
    registry, path = registry_with
    write_distribution(
        path,
        "hostile-not-spec",
        {"notspec": "hostile_not_spec:SPEC"},
        {"hostile_not_spec": "SPEC = 'tcp'"},
    )
    with pytest.raises(ConfigurationError) as caught:
        registry.get("notspec")
    assert str(caught.value) == (
        "transport plugin 'notspec' (entry point hostile_not_spec:SPEC of hostile-not-spec 0.1) "
        "is not a TransportSpec but a str"
    )


def test_an_entry_point_named_unlike_its_transport(
    registry_with: tuple[TransportRegistry, Path],
) -> None:
    """Input: entry point ``renamed`` for a spec named ``other``. Outcome: one line, refused."""
    registry, path = registry_with
    source = SPEC_SOURCE.format(name="other", scheme="other")
    write_distribution(
        path, "hostile-renamed", {"renamed": "hostile_renamed:SPEC"}, {"hostile_renamed": source}
    )
    with pytest.raises(ConfigurationError) as caught:
        registry.get("renamed")
    assert str(caught.value) == (
        "transport plugin 'renamed' (entry point hostile_renamed:SPEC of hostile-renamed 0.1) "
        "declares a transport named 'other': the entry point must carry the transport's name"
    )


def test_two_distributions_declaring_one_transport(
    registry_with: tuple[TransportRegistry, Path],
) -> None:
    """Input: two distributions declare ``twice``. Outcome: neither is used; one line names both."""
    registry, path = registry_with
    write_distribution(path, "hostile-twice-a", {"twice": "hostile_twice_a:SPEC"})
    write_distribution(path, "hostile-twice-b", {"twice": "hostile_twice_b:SPEC"})
    with pytest.raises(ConfigurationError) as caught:
        registry.get("twice")
    assert str(caught.value) == (
        "transport plugin 'twice' is declared twice: entry point hostile_twice_a:SPEC of "
        "hostile-twice-a 0.1 and entry point hostile_twice_b:SPEC of hostile-twice-b 0.1"
    )


def test_a_plugin_cannot_take_a_built_in_scheme(
    registry_with: tuple[TransportRegistry, Path],
) -> None:
    """Input: a plugin claiming ``ws://``. Outcome: refused in one line; ws:// stays WebSocket's."""
    registry, path = registry_with
    source = SPEC_SOURCE.format(name="hijack", scheme="ws")
    write_distribution(
        path, "hostile-hijack", {"hijack": "hostile_hijack:SPEC"}, {"hostile_hijack": source}
    )
    with pytest.raises(ConfigurationError) as caught:
        registry.get("hijack")
    assert str(caught.value) == (
        "transport 'hijack' (plugin entry point hostile_hijack:SPEC of hostile-hijack 0.1) "
        "claims URL scheme ws://, which is transport 'websocket''s"
    )
    assert registry.for_scheme("ws").name == "websocket"


def test_a_plugin_cannot_take_a_built_in_name(
    registry_with: tuple[TransportRegistry, Path],
) -> None:
    """Input: a plugin named ``websocket``.

    Outcome: the built-in keeps the name; listing every transport reports the
    plugin in one line.
    """
    registry, path = registry_with
    source = SPEC_SOURCE.format(name="websocket", scheme="ws9")
    write_distribution(
        path, "hostile-named", {"websocket": "hostile_named:SPEC"}, {"hostile_named": source}
    )
    assert registry.get("websocket").scheme == "ws"
    assert registry.origin("websocket") == "built in"
    with pytest.raises(ConfigurationError) as caught:
        registry.specs()
    assert str(caught.value) == (
        "transport 'websocket' (plugin entry point hostile_named:SPEC of hostile-named 0.1) "
        "is already declared (built in)"
    )


def test_a_broken_plugin_beside_a_working_one_is_warned_about_once(
    registry_with: tuple[TransportRegistry, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Input: a working plugin and a broken one. Outcome: the working one serves; one warning."""
    registry, path = registry_with
    write_distribution(
        path,
        "hostile-working",
        {"working": "hostile_working:SPEC"},
        {"hostile_working": SPEC_SOURCE.format(name="working", scheme="working")},
    )
    write_distribution(path, "flare-broken-plugin", {"broken": "flare_broken_plugin:TRANSPORT"})
    with caplog.at_level(logging.WARNING, logger="flare_runtime.transports"):
        assert registry.for_scheme("working").name == "working"
        with pytest.raises(ConfigurationError):
            registry.for_scheme("nothing")
    assert [record.getMessage() for record in caplog.records] == [BROKEN_IMPORT]
    with pytest.raises(ConfigurationError) as caught:
        registry.get("broken")
    assert str(caught.value) == BROKEN_IMPORT
