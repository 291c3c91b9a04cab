"""Seeing what a running server does: its log, its metrics, its health.

* `flare_runtime.observability.logs` -- `configure_logging` (level, text or
  JSON lines, each record carrying the call it belongs to), the access log,
  redaction of secrets;
* `flare_runtime.observability.metrics` -- the Prometheus collector over
  `flare_runtime.stats` (and the IM's and cluster's counters), the HTTP
  endpoint with ``/metrics``, ``/healthz`` and ``/readyz``, and the
  per-worker publication that sums the workers of ``flare serve --workers N``.

docs/operations.md is the guide.
"""

from __future__ import annotations
