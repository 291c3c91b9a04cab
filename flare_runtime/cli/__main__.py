"""``python -m flare_runtime.cli``: the ``flare`` command."""

from __future__ import annotations

import sys

from flare_runtime.cli import main

sys.exit(main())
