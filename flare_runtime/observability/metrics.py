"""Prometheus metrics and health probes for a `Server`, over HTTP.

::

    serve_metrics(server, "127.0.0.1:9100", im=core)   # before server.start
    # GET /metrics   Prometheus text format (prometheus_client's exposition)
    # GET /healthz   200 "ok" while the process serves HTTP at all
    # GET /readyz    200 "ready" while the server accepts calls; 503 before `start`
    #                returned and from the moment a drain begins

The numbers are the server's own counters (`flare_runtime.stats`, plus the
IM core's and the cluster node's), read when a scrape asks: serving a call
never touches `prometheus_client`, whose metric objects take a lock per
increment (and, in its multiprocess mode, a write to a memory-mapped file).
`FlareCollector` is a `prometheus_client` custom collector over a `Snapshot`
of those counters; docs/operations.md lists every metric.

Several workers (``flare serve --workers N``): each worker serves the
endpoint on the same port (``SO_REUSEPORT``), so a scrape reaches any one of
them, and each must answer for all. Every worker publishes its snapshot to
the workers' shared directory every `interval` seconds (and once more as it
exits); the worker answering a scrape publishes its own afresh, reads every
published snapshot and sums them. Counters of workers that exited stay in
the sum (their last snapshot stays), so totals never go down when a worker
restarts; gauges (open connections, IM sessions) count live workers only.
A scrape therefore sees the other workers' counts as of at most `interval`
seconds ago. This is per-worker aggregation rather than prometheus_client's
multiprocess mode for the cost above: a call's end stays three integer
additions, and a histogram is published as its bucket counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import CollectorRegistry

from flare_runtime.server import Server, parse_address
from flare_runtime.stats import DURATION_BUCKETS, STATUS_CODES
from flare_runtime.status import StatusCode

if TYPE_CHECKING:
    from flare_runtime.im.core import ImCore

logger = logging.getLogger("flare_runtime.metrics")

Snapshot = dict[str, Any]
"""A server's counters as plain JSON data (`snapshot`): what workers publish."""

_CODE_NAMES = [StatusCode(code).name for code in range(STATUS_CODES)]
_GAUGES = ("open", "sessions")
"""Snapshot entries that are levels, not totals (summed over live workers only)."""

CLUSTER_COUNTERS = {
    "published": "Envelopes this node published to the broker.",
    "published_bytes": "Bytes of the envelopes published.",
    "publish_dropped": "Envelopes the broker link dropped (link down).",
    "received_messages": "Messages the broker handed this node.",
    "received_bytes": "Bytes of the messages received.",
    "delivered": "Events handed to local subscribers.",
    "slow_consumers": "Connections closed for an unread cluster backlog.",
    "gaps": "Gaps in a channel's sequence seen (missed events).",
}
IM_COUNTERS = {
    "sent": "Messages stored by Send.",
    "delivered": "Events handed to devices (one per device per event).",
    "syncs": "Sync calls answered.",
    "slow_consumers": "IM sessions ended because their device did not read its events.",
    "push_notified": "Offline-push notifications handed to the push provider.",
    "push_dropped": "Stored messages offline push dropped unchecked (its queue was full).",
}


# ------------------------------------------------------------------ snapshots


def snapshot(server: Server, im: ImCore | None = None) -> Snapshot:
    """`server`'s counters now (open connections' bytes included), as JSON data."""
    stats = server.stats
    transports: dict[str, dict[str, int]] = {}
    for name, counts in stats.transports.items():
        transports[name] = asdict(counts) | {"open": 0}
    for connection in server.connections:
        entry = transports.setdefault(
            connection.transport_kind.value,
            {"opened": 0, "closed": 0, "bytes_received": 0, "bytes_sent": 0, "pushes": 0},
        )
        received, sent, pushes = connection.traffic()
        entry["bytes_received"] += received
        entry["bytes_sent"] += sent
        entry["pushes"] += pushes
        entry["open"] = entry.get("open", 0) + 1
    data: Snapshot = {
        "calls": [
            [meter.transport, meter.route, list(meter.codes), list(meter.counts), meter.seconds]
            for meter in stats.calls()
        ],
        "transports": transports,
        "server": {
            "slow_consumers": stats.slow_consumers,
            "connection_auth_failures": stats.connection_auth_failures,
            "call_auth_failures": stats.call_auth_failures,
            "unknown_routes": stats.unknown_routes,
        },
    }
    if im is not None:
        data["im"] = im.counters()
        node = getattr(im, "cluster", None)
        cluster = getattr(node, "node", None) if node is not None else None
        if cluster is not None:
            data["cluster"] = {name: getattr(cluster.stats, name) for name in CLUSTER_COUNTERS}
    return data


def merge(snapshots: list[tuple[Snapshot, bool]]) -> Snapshot:
    """The sum of (snapshot, is its process alive) pairs; gauges of dead processes dropped."""
    calls: dict[tuple[str, str], list[Any]] = {}
    merged: Snapshot = {"calls": [], "transports": {}, "server": {}}
    merged["workers"] = sum(1 for _, alive in snapshots if alive)
    for data, alive in snapshots:
        for transport, route, codes, counts, seconds in data.get("calls", []):
            entry = calls.get((transport, route))
            if entry is None:
                calls[(transport, route)] = [transport, route, list(codes), list(counts), seconds]
            else:
                entry[2] = [a + b for a, b in zip(entry[2], codes, strict=True)]
                entry[3] = [a + b for a, b in zip(entry[3], counts, strict=True)]
                entry[4] += seconds
        for name, counts in data.get("transports", {}).items():
            _add(merged["transports"].setdefault(name, {}), counts, alive)
        for section in ("server", "im", "cluster"):
            if section in data:
                _add(merged.setdefault(section, {}), data[section], alive)
    merged["calls"] = list(calls.values())
    return merged


def _add(into: dict[str, int], values: Mapping[str, int], alive: bool) -> None:
    for name, value in values.items():
        counted = 0 if name in _GAUGES and not alive else value
        into[name] = into.get(name, 0) + counted


# ------------------------------------------------------------------ the collector


class FlareCollector:
    """A prometheus_client collector over a `Snapshot` source (see the module docstring)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        """``() -> Snapshot``, called once per scrape."""

    def collect(self) -> Iterator[Metric]:
        """The metrics of one scrape (docs/operations.md lists them)."""
        data: Snapshot = self.source()
        calls = CounterMetricFamily(
            "flare_server_calls",
            "Calls ended, by transport, route and status code.",
            labels=["transport", "route", "code"],
        )
        durations = HistogramMetricFamily(
            "flare_server_call_duration_seconds",
            "Time from a call's start to its end, by transport and route.",
            labels=["transport", "route"],
        )
        for transport, route, codes, counts, seconds in data["calls"]:
            for code, count in enumerate(codes):
                if count:
                    calls.add_metric([transport, route, _CODE_NAMES[code]], count)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric([transport, route], buckets, seconds)
        yield calls
        yield durations
        transport_metrics = [
            ("open", GaugeMetricFamily, "flare_server_connections", "Open connections."),
            ("opened", CounterMetricFamily, "flare_server_connections_opened",
             "Connections opened."),
            ("bytes_received", CounterMetricFamily, "flare_server_received_bytes",
             "Flare frame bytes received (no WebSocket/QUIC/TLS framing)."),
            ("bytes_sent", CounterMetricFamily, "flare_server_sent_bytes",
             "Flare frame bytes sent (no WebSocket/QUIC/TLS framing)."),
            ("pushes", CounterMetricFamily, "flare_server_pushes", "Server pushes sent."),
        ]  # fmt: skip
        for field, family, name, documentation in transport_metrics:
            metric = family(
                name, documentation + " WebSocket, QUIC (not gRPC).", labels=["transport"]
            )
            for transport, counts in sorted(data["transports"].items()):
                metric.add_metric([transport], counts.get(field, 0))
            yield metric
        server = data["server"]
        yield CounterMetricFamily(
            "flare_server_slow_consumers",
            "Connections aborted for holding more than max_unsent_output unsent bytes.",
            value=server.get("slow_consumers", 0),
        )
        failures = CounterMetricFamily(
            "flare_server_auth_failures",
            "Rejected credentials: at connect (stage=connection) or per call "
            "(stage=call: UNAUTHENTICATED or PERMISSION_DENIED).",
            labels=["stage"],
        )
        failures.add_metric(["connection"], server.get("connection_auth_failures", 0))
        failures.add_metric(["call"], server.get("call_auth_failures", 0))
        yield failures
        yield CounterMetricFamily(
            "flare_server_unknown_route_calls",
            "Calls to a route this server does not serve.",
            value=server.get("unknown_routes", 0),
        )
        workers = data.get("workers")
        if workers is not None:
            yield GaugeMetricFamily(
                "flare_server_workers",
                "With --workers N: the live worker processes whose counters this scrape sums.",
                value=workers,
            )
        im = data.get("im")
        if im is not None:
            yield GaugeMetricFamily(
                "flare_im_sessions", "IM sessions open on this node.", value=im.get("sessions", 0)
            )
            for name, documentation in IM_COUNTERS.items():
                yield CounterMetricFamily(f"flare_im_{name}", documentation, value=im.get(name, 0))
        cluster = data.get("cluster")
        if cluster is not None:
            for name, documentation in CLUSTER_COUNTERS.items():
                yield CounterMetricFamily(
                    f"flare_cluster_{name}", documentation, value=cluster.get(name, 0)
                )


# ------------------------------------------------------------------ workers' publications


class Publisher:
    """One worker's publication of its snapshots to the workers' shared directory."""

    def __init__(self, directory: Path, source: Any) -> None:
        self.directory = directory
        self.source = source
        self.path = directory / f"{os.getpid()}.json"

    def publish(self) -> None:
        """Write this worker's snapshot (atomically: a reader sees the old or the new)."""
        data = {"pid": os.getpid(), "time": time.time(), "snapshot": self.source()}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(self.path)

    def gather(self) -> Snapshot:
        """Publish, then sum every worker's last publication (see the module docstring)."""
        self.publish()
        found: list[tuple[Snapshot, bool]] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # replaced or removed while read: the next scrape has it
            found.append((data["snapshot"], _alive(int(data["pid"]))))
        return merge(found)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ the HTTP endpoint


_MAX_REQUEST = 8192
_READ_TIMEOUT = 10.0


class MetricsEndpoint:
    """The HTTP endpoint of one server: ``/metrics``, ``/healthz``, ``/readyz``.

    A minimal HTTP/1.1 responder on asyncio streams (three GET paths, one
    request per connection, requests bounded at 8 KiB and 10 s): no HTTP
    server dependency for what a probe and a scraper send.
    """

    def __init__(self, server: Server, registry: CollectorRegistry) -> None:
        self.server = server
        self.registry = registry
        self._listening: asyncio.Server | None = None
        self.port = 0

    async def start(self, address: str, *, reuse_port: bool = False) -> None:
        host, port = parse_address(address)
        self._listening = await asyncio.start_server(
            self._serve, host, port, reuse_port=reuse_port or None, limit=_MAX_REQUEST
        )
        self.port = self._listening.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.close()
            with contextlib.suppress(Exception):
                await self._listening.wait_closed()
            self._listening = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self._answer(head)
            head_only = head.startswith(b"HEAD ")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        except Exception:
            logger.exception("metrics endpoint failed")
            status, content_type, body = "500 Internal Server Error", "text/plain", b"error\n"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
            + (b"" if head_only else body)
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError(line)
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == "/metrics":
            from prometheus_client.exposition import generate_latest  # noqa: PLC0415

            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if target == "/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if target == "/readyz":
            if self.server.ready:
                return "200 OK", "text/plain", b"ready\n"
            state = b"draining\n" if self.server.draining else b"starting\n"
            return "503 Service Unavailable", "text/plain", state
        return "404 Not Found", "text/plain", b"not found\n"


def serve_metrics(
    server: Server, address: str, *, im: ImCore | None = None, interval: float = 1.0
) -> MetricsEndpoint:
    """Serve `server`'s metrics and probes on `address` from its startup to its shutdown.

    Adds lifecycle hooks (`Server.on_startup`, `Server.on_shutdown`): the
    endpoint starts before the listeners (``/readyz`` answers 503 until they
    accept) and closes after they drained (``/readyz`` answers 503 while they
    do). In a worker process (``server.shared_ports`` set at start) it binds
    with ``SO_REUSEPORT`` and publishes to the workers' directory (the module
    docstring); port 0 is then refused, as each worker would get another port.
    """
    registry = CollectorRegistry(auto_describe=False)
    endpoint = MetricsEndpoint(server, registry)
    publisher: Publisher | None = None
    task: asyncio.Task[None] | None = None

    def local() -> Snapshot:
        return snapshot(server, im)

    def gathered() -> Snapshot:
        return publisher.gather() if publisher is not None else local()

    registry.register(FlareCollector(gathered))

    async def start(_: Server) -> None:
        nonlocal publisher, task
        shared = server.shared_ports
        if shared is not None and shared.workers > 1:
            if parse_address(address)[1] == 0:
                from flare_runtime.errors import ConfigurationError  # noqa: PLC0415

                raise ConfigurationError(
                    f"metrics.listen {address}: with workers, give a fixed port "
                    "(each worker would bind another one)"
                )
            directory = Path(shared.directory) / "metrics"
            directory.mkdir(exist_ok=True)
            publisher = Publisher(directory, local)
            publisher.publish()
            task = asyncio.get_running_loop().create_task(_publish_every(publisher, interval))
        await endpoint.start(address, reuse_port=shared is not None)

    async def stop(_: Server) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if publisher is not None:
            publisher.publish()  # this worker's last counts stay in the sum
        await endpoint.close()

    server.on_startup.append(start)
    server.on_shutdown.append(stop)
    return endpoint


async def _publish_every(publisher: Publisher, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            publisher.publish()
        except OSError as error:
            logger.warning("cannot publish this worker's metrics: %s", error)
