"""A minimal HTTP/1.1 server for the chat page's static files (GET and HEAD only).

The Flare WebSocket listener speaks only the upgrade handshake, so the page
is served from its own port. Files come from a fixed table built at start
(no path from the request ever touches the file system), plus ``config.js``,
which tells the page where the WebSocket endpoint is and which room to join.

``static/chat.js`` is the page's script, bundled from the TypeScript sources in
``clients/typescript/examples/im-chat`` (the generated IM client and
``@flare/client``); it is committed, so a wheel serves the page without Node.js.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_MAX_REQUEST_HEAD = 16 * 1024


class StaticSite:
    """Serves the chat page; `websocket_port` is where its script connects.

    The page joins the open room `lobby` at sign-in. `static_dir` holds
    ``index.html`` and the scripts (default: this package's ``static/``).
    """

    def __init__(
        self, websocket_port: int, *, lobby: str = "lobby", static_dir: Path = STATIC_DIR
    ) -> None:
        self._files: dict[str, tuple[str, bytes]] = {}
        for path in sorted(static_dir.iterdir()):
            if path.suffix in _CONTENT_TYPES:
                self._files["/" + path.name] = (_CONTENT_TYPES[path.suffix], path.read_bytes())
        self._files["/"] = self._files["/index.html"]
        config = (
            f'window.FLARE_WS_URL = "ws://" + location.hostname + ":{websocket_port}";\n'
            f"window.FLARE_LOBBY = {json.dumps(lobby)};\n"
        ).encode()
        self._files["/config.js"] = (_CONTENT_TYPES[".js"], config)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host`:`port` (0 picks a free port)."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        """Stop listening and close the listening socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_REQUEST_HEAD:
                raise ValueError("request head too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            found = self._files.get(path)
            if method not in ("GET", "HEAD"):
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif found is None:
                status, content_type, body = "404 Not Found", "text/plain", b"not found\n"
            else:
                status, (content_type, body) = "200 OK", found
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (
            ValueError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a broken request: just close
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
