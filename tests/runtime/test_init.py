"""`flare_runtime`'s public names: each resolves to its submodule's object, loaded on first use."""

from __future__ import annotations

import importlib
import subprocess
import sys

import flare_runtime
from flare_runtime import _EXPORTS


def test_every_public_name_is_its_submodules_object() -> None:
    assert set(flare_runtime.__all__) == {*_EXPORTS, "__version__"}
    for name, module in _EXPORTS.items():
        expected = getattr(importlib.import_module(f"flare_runtime.{module}"), name)
        assert getattr(flare_runtime, name) is expected


def test_importing_one_submodule_loads_no_transport_server_or_jwt() -> None:
    """The code generator and the ``flare`` CLI import `flare_runtime.routing` / `.cli`:
    that must not cost them the whole runtime's start-up."""
    probe = (
        "import sys, flare_runtime.routing, flare_runtime.cli\n"
        "heavy = ('flare_runtime.server', 'flare_runtime.transports',"
        " 'flare_runtime.client', 'jwt')\n"
        "print(sorted(n for n in sys.modules if n.startswith(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
