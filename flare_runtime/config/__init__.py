"""Flare's configuration: one TOML file for everything ``flare serve`` takes.

* `flare_runtime.config.schema` -- the keys, their types, defaults and docs
  (`FlareConfig`, `keys`);
* `flare_runtime.config.load` -- reading ``flare.toml`` (or ``[tool.flare]`` in
  ``pyproject.toml``), ``FLARE_*`` environment variables and flags, in that
  order of precedence from lowest to highest, with strict checks;
  `print_config` for ``flare serve --print-config``;
* `flare_runtime.config.build` -- the `Server` a configuration describes
  (listeners, auth, limits, the IM with its storage and broker, metrics,
  admin), with no Python glue;
* `flare_runtime.config.reference` -- docs/operations.md's reference section,
  generated from the schema.

docs/operations.md is the guide.
"""

from __future__ import annotations
