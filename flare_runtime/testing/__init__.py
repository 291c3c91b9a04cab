"""Public test helpers and the transport conformance suite.

Every transport runs the same tests (`flare_runtime.testing.conformance`)
against the same service (`flare_runtime.testing.service`). Every registered
transport (`flare_runtime.transport_registry`, plugins included) can run it:
its `TransportSpec` names a `Harness` factory, or the default harness serves
it on 127.0.0.1 without TLS. A test module selects the transport::

    # tests/runtime/transports/test_conformance_quic.py
    from flare_runtime.testing.conformance import *  # noqa: F403
    import pytest

    @pytest.fixture
    def transport_name() -> str:
        return "quic"

"""

from __future__ import annotations

from flare_runtime.testing.harness import Harness, Rig, default_harness, get_harness

__all__ = ["Harness", "Rig", "default_harness", "get_harness"]
