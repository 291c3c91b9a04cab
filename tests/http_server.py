"""A real local HTTP/1.1 server for tests: the stdlib's `ThreadingHTTPServer` in a thread.

What the JWKS and webhook tests talk to. `respond` decides every answer
(status, headers, body, and how slowly to send it); every request is recorded.
The server can be stopped and started again on the same port (an endpoint that
goes down and comes back).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    received_at: float
    """`time.monotonic()` when the body was read."""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""
    trickle: float = 0.0
    """When set: send the body one byte every `trickle` seconds (a slowloris answer)."""
    send_length: bool = True
    """False: no ``content-length``; the body ends when the connection closes."""


Responder = Callable[[Request], Response]


class LocalHTTPServer:
    """An HTTP server on 127.0.0.1 answering with `respond`; `requests` records what came."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalHTTPServer:
        """Listen (again on the same port, after `stop`)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                outer.requests.append(request)
                response = outer.respond(request)
                if response.delay:
                    time.sleep(response.delay)
                try:
                    self.send_response(response.status)
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    if not response.send_length:
                        self.send_header("connection", "close")
                        self.close_connection = True
                    elif "content-length" not in {n.lower() for n in response.headers}:
                        self.send_header("content-length", str(len(response.body)))
                    self.end_headers()
                    if response.trickle:
                        for byte in response.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(response.trickle)
                    else:
                        self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: what the hostile cases expect

            do_GET = do_POST = _handle  # noqa: N815

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: object, client_address: object) -> None:
                # A client that hung up (what hostile cases do) is no error; others are.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # type: ignore[arg-type]

        self._server = server = Server(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections in progress finish in their threads)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    async def stopped(self) -> None:
        """`stop`, off the event loop (shutting down waits for the serving thread)."""
        await asyncio.to_thread(self.stop)
