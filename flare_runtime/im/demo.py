"""Run the IM server with its browser chat page: ``python -m flare_runtime.im.demo``.

Open the printed address in two browser tabs, pick two names, and chat. The
page (flare_runtime/im/web) is built on the TypeScript client generated from
schemas/flare/im/v1 and ``@flare/client``; see docs/im.md.

DEMO ONLY: the server trusts any name as a token (`DemoAuth`), so anyone who
reaches it can act as any user. It is for trying Flare on your own machine,
never for a network others can reach.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from flare_runtime.auth import AuthPlugin, Principal, bearer_token
from flare_runtime.errors import RpcError
from flare_runtime.im.core import ImCore
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.im.web.site import STATIC_DIR, StaticSite
from flare_runtime.metadata import Metadata
from flare_runtime.server import Server
from flare_runtime.status import StatusCode

LOBBY = "lobby"


class DemoAuth(AuthPlugin):
    """DEMO ONLY, no security: accepts any bearer token of 1-32 letters, digits, '-' or
    '_' as that user's name. A deployment uses `JWTAuth` or its own plugin."""

    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        if not (0 < len(token) <= 32 and token.replace("-", "").replace("_", "").isalnum()):
            raise RpcError(StatusCode.UNAUTHENTICATED, "a name is 1-32 letters or digits")
        return Principal(token)


@dataclass
class DemoServer:
    """The IM core on SQLite, served over WebSocket, plus the chat page over HTTP."""

    core: ImCore
    server: Server
    site: StaticSite

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.site.port}/"

    async def close(self) -> None:
        await self.site.close()
        await self.server.shutdown(grace=1.0)
        await self.core.close()


def _keyring(path: Path) -> KeyRing:
    # The demo keeps its key next to the database; a deployment loads keys
    # from its secret store and rotates them with KeyRing.rotated.
    key_file = path.with_suffix(".key")
    if not key_file.exists():
        key_file.write_bytes(os.urandom(32))
        key_file.chmod(0o600)
    return KeyRing({1: key_file.read_bytes()}, 1)


async def start_demo(
    database: Path,
    *,
    host: str = "127.0.0.1",
    websocket_port: int = 0,
    http_port: int = 0,
    static_dir: Path = STATIC_DIR,
) -> DemoServer:
    """Start everything; ports 0 pick free ones. `static_dir` holds the page's files."""
    core = ImCore(SqliteStorage(database, _keyring(database)))
    await core.start()
    await core.ensure_room(LOBBY, "Lobby")
    server = Server([ImService(core)], auth=DemoAuth(), push_tables=[ImService.PUSH_TYPES])
    await server.start(websocket=f"{host}:{websocket_port}")
    site = StaticSite(server.port("websocket"), lobby=LOBBY, static_dir=static_dir)
    await site.start(host, http_port)
    return DemoServer(core, server, site)


async def _main(arguments: argparse.Namespace) -> None:
    demo = await start_demo(
        Path(arguments.db),
        host=arguments.host,
        websocket_port=arguments.ws_port,
        http_port=arguments.http_port,
    )
    websocket = f"ws://{arguments.host}:{demo.server.port('websocket')}"
    print(
        f"Flare chat: open http://{arguments.host}:{demo.site.port}/ in two tabs "
        f"(IM API on {websocket}). DEMO ONLY: any name is accepted as a token.",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await demo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--ws-port", type=int, default=8080)
    parser.add_argument("--db", default="flare-im-demo.db")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
