"""``python -m flare_codegen``: run the protoc plugin (same as ``protoc-gen-flare``)."""

from __future__ import annotations

import sys

from flare_codegen.plugin import main

sys.exit(main())
