"""Public test helpers and the transport conformance suite.

Every transport runs the same tests (`flare_runtime.testing.conformance`)
against the same service (`flare_runtime.testing.service`). A transport joins
by registering a `Harness` under its name; a test module then selects it::

    # tests/runtime/transports/test_conformance_quic.py
    from flare_runtime.testing.conformance import *  # noqa: F403
    import pytest

    @pytest.fixture
    def transport_name() -> str:
        return "quic"

Harnesses ship for "websocket" here; others register theirs with
`register_harness` (in the module named by `HARNESS_MODULES`).
"""

from __future__ import annotations

from flare_runtime.testing.harness import (
    HARNESS_MODULES,
    Harness,
    Rig,
    get_harness,
    register_harness,
)

__all__ = ["HARNESS_MODULES", "Harness", "Rig", "get_harness", "register_harness"]
