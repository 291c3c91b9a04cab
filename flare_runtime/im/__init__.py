"""Flare's instant-messaging core: sessions, conversations, ordered history, delivery.

Layers, bottom up (see docs/im.md):

* `flare_runtime.im.storage` - the `Storage` interface and its SQLite (default)
  and PostgreSQL backends; message bodies encrypted at rest.
* `flare_runtime.im.core` - the transport-free domain core (`ImCore`), a facade
  over its parts: `sessions` (devices and the multi-device policy),
  `conversations` (rooms, membership, roles), `delivery` (per-conversation
  sequencer and bounded fan-out), `history` (idempotent ordered send, recovery,
  receipts, retention), `presence` (online state, watchers, typing) and
  `limits` (`ImLimits`, per-user rate limits).
* `flare_runtime.im.sinks` / `flare_runtime.im.events` - where a device's
  events go (`EventSink`, `QueueSink`) and how each is encoded once per fan-out.
* `flare_runtime.im.service` - `ImService`, the generated ``flare.im.v1``
  handler base implemented on top of the core and the runtime's pushes.
* `flare_runtime.im.web`, `flare_runtime.im.demo` - the browser chat page
  (a JavaScript client of the wire protocol) and a demo server for it.
"""

from __future__ import annotations
