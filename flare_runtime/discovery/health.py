"""Active health checks of a balancing channel's subchannels.

`probe` asks one connection whether its server is alive and serving:

* over gRPC (``grpc://``, ``grpcs://``): the standard health service,
  ``grpc.health.v1.Health/Check`` for the whole server (service ""):
  SERVING is healthy; NOT_SERVING (a server shutting down) is not;
  UNIMPLEMENTED (a gRPC server without the health service) is an answer, so
  alive;
* over the Flare wire transports (WebSocket, QUIC, plugins): a reflection
  ``ListServices`` call, the cheapest call every Flare server answers; any
  answer, UNIMPLEMENTED from a server without reflection included, is alive.

No answer within the timeout, or UNAVAILABLE, is a failed check.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from flare.reflection.v1 import reflection_pb2
from flare.reflection.v1.reflection_flare import ReflectionRoutes
from grpc_health.v1 import health_pb2

from flare_runtime.client import Channel
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.routing import Cardinality, Route, RouteOptions
from flare_runtime.status import StatusCode

__all__ = ["HEALTH_CHECK", "HealthPolicy", "probe"]

HEALTH_CHECK: Final[Route[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]] = Route(
    path="/grpc.health.v1.Health/Check",
    service_id=0,
    route_id=0,
    cardinality=Cardinality.UNARY,
    request_type=health_pb2.HealthCheckRequest,
    response_type=health_pb2.HealthCheckResponse,
    handler_name="check",
    options=RouteOptions(idempotent=True),
)
"""gRPC's standard health check, as a Flare route (gRPC only: it has no wire id)."""

_GRPC_SCHEMES = frozenset({"grpc", "grpcs"})
_DEAD = frozenset({StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.CANCELLED})


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How a balancing channel judges its endpoints (seconds; `flare_runtime.discovery.channel`)."""

    interval: float | None = 5.0
    """Probe each subchannel that answered no call in this long; None: no active checks."""
    timeout: float = 2.0
    """A probe unanswered this long fails."""
    eject_after: int = 3
    """Consecutive calls failing with UNAVAILABLE that eject an endpoint."""
    ejection: float = 1.0
    """The first ejection's length; each consecutive one doubles it."""
    max_ejection: float = 30.0

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval <= 0:
            raise ConfigurationError("HealthPolicy.interval must be positive (or None)")
        if self.timeout <= 0 or self.ejection <= 0 or self.eject_after < 1:
            raise ConfigurationError("HealthPolicy: timeout, ejection > 0; eject_after ≥ 1")


async def probe(channel: Channel, url: str, timeout: float) -> str | None:
    """Check one connection; None when healthy, else why not."""
    grpc = url.split(":", 1)[0].lower() in _GRPC_SCHEMES
    try:
        async with asyncio.timeout(timeout):
            if grpc:
                reply = await channel.unary_unary(
                    HEALTH_CHECK, health_pb2.HealthCheckRequest(), timeout=timeout
                )
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    return "NOT_SERVING"
            else:
                await channel.unary_unary(
                    ReflectionRoutes.LIST_SERVICES,
                    reflection_pb2.ListServicesRequest(),
                    timeout=timeout,
                )
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except RpcError as error:
        if error.code in _DEAD:
            return f"{error.code.name}: {error.message}"
    except ConnectionClosedError as error:
        return f"connection closed: {error}"
    return None
