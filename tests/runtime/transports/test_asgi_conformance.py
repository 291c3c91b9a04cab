"""The transport conformance suite over the ASGI mount: Flare in a Starlette app under
uvicorn (`flare_runtime.testing.asgi_harness`), real sockets on 127.0.0.1, once under each
of uvicorn's WebSocket implementations (websockets-sansio, its default; wsproto)."""

from __future__ import annotations

import pytest

from flare_runtime.testing.asgi_harness import WEBSOCKET_IMPLEMENTATIONS
from flare_runtime.testing.asgi_harness import harness as asgi_harness
from flare_runtime.testing.conformance import *  # noqa: F403
from flare_runtime.testing.harness import Harness


# The suite's `harness` fixture, overridden: the mount is not a registered transport.
@pytest.fixture(params=WEBSOCKET_IMPLEMENTATIONS)  # type: ignore[no-redef]
def harness(request: pytest.FixtureRequest) -> Harness:
    return asgi_harness(request.param)
