"""A FastAPI application serving Flare beside its own routes, as docs/asgi.md shows it.

The conformance service at ``/flare`` (JWT auth with the conformance key), an
HTTP route at ``/health``. tests/runtime/test_asgi.py runs it in process and as
``python -m uvicorn tests.runtime.asgi_app:app``, the command line a deployment uses.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import WebSocketRoute

from flare_runtime.asgi import FlareASGI
from flare_runtime.auth import JWTAuth
from flare_runtime.server import Server
from flare_runtime.testing.harness import JWT_KEY
from flare_runtime.testing.service import PUSH_TYPES, SERVICE, ConformanceService


def build_app(grace: float = 10.0) -> tuple[FastAPI, Server, ConformanceService]:
    """A fresh app, its Flare server and the service behind it."""
    service = ConformanceService()
    server = Server([(SERVICE, service)], push_tables=[PUSH_TYPES], auth=JWTAuth(JWT_KEY))
    flare = FlareASGI(server, grace=grace)
    app = FastAPI(lifespan=flare.lifespan, routes=[WebSocketRoute("/flare", flare)])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "flare_connections": str(len(server.connections))}

    return app, server, service


app, server, service = build_app()
