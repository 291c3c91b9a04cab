"""The transport conformance suite over WebTransport (HTTP/3 on real UDP sockets on 127.0.0.1)."""

from __future__ import annotations

import pytest

from flare_runtime.testing.conformance import *  # noqa: F403


@pytest.fixture
def transport_name() -> str:
    return "webtransport"
