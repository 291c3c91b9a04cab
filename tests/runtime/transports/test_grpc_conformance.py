"""The transport conformance suite over gRPC (grpcio on both sides, real sockets on 127.0.0.1).

Tests gRPC cannot pass by design (server push outside a call) are skipped by
name through the harness's declared capabilities; see
flare_runtime/testing/grpc_harness.py and docs/transports/grpc.md.
"""

from __future__ import annotations

import pytest

from flare_runtime.testing.conformance import *  # noqa: F403


@pytest.fixture
def transport_name() -> str:
    return "grpc"
