"""The real Flare server the TypeScript client's tests talk to.

Serves the conformance service (flare_runtime/testing/service.py) and the
example chat service (examples/chat/service.py, generated from
schemas/examples/chat/v1/chat.proto) over WebSocket on 127.0.0.1, with
static bearer tokens. Prints ``READY <port>`` once listening.

SIGTERM drains gracefully (GOAWAY, in-flight calls finish, then exit);
SIGKILL is an abrupt loss. Run from the repository root:
``python clients/typescript/test/flare_server.py [--port N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "generated"), str(ROOT)]

from examples.chat.v1.chat_flare import PUSH_TYPES as CHAT_PUSH_TYPES  # noqa: E402

from examples.chat.service import ChatService  # noqa: E402
from flare_runtime.auth import Principal, TokenAuth  # noqa: E402
from flare_runtime.server import Server  # noqa: E402
from flare_runtime.testing.service import PUSH_TYPES, SERVICE, ConformanceService  # noqa: E402

TOKENS = {
    "alice-token": Principal("alice", frozenset({"chat", "chat.write", "admin"})),
    "bob-token": Principal("bob", frozenset({"chat"})),
}
"""Bearer tokens the test server accepts (the Node tests use the same strings)."""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args()
    server = Server(
        [(SERVICE, ConformanceService()), ChatService()],
        push_tables=[PUSH_TYPES, CHAT_PUSH_TYPES],
        auth=TokenAuth(TOKENS),
    )
    await server.start(websocket=f"127.0.0.1:{args.port}")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"READY {server.port('websocket')}", flush=True)
    await stop.wait()
    await server.shutdown(args.grace)


if __name__ == "__main__":
    asyncio.run(main())
