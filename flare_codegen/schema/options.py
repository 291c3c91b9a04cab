"""Access to Flare's own options (``(flare.options.v1.service)`` and friends).

The generated ``flare.options.v1.options_pb2`` module lives in ``generated/``.
Importing it registers the extensions with protobuf's default pool, so that
descriptor sets parsed *afterwards* decode the options, and
``options.Extensions[...]`` works on them. In a source checkout ``generated/``
is found next to the package when it is not already importable.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path
from types import ModuleType


@cache
def load_flare_options() -> ModuleType:
    """Import (once) and return the generated ``options_pb2`` module."""
    try:
        return importlib.import_module("flare.options.v1.options_pb2")
    except ImportError:
        generated = Path(__file__).resolve().parents[2] / "generated"
        if not (generated / "flare" / "options" / "v1" / "options_pb2.py").is_file():
            raise
        sys.path.append(str(generated))
        return importlib.import_module("flare.options.v1.options_pb2")
