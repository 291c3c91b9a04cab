"""``python -m flare_codegen.typescript``: run ``protoc-gen-flare-ts``."""

from __future__ import annotations

import sys

from flare_codegen.typescript.plugin import main

sys.exit(main())
