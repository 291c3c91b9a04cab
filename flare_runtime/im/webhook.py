"""The webhook push provider: offline notifications POSTed as signed JSON to a URL.

::

    push = PushSettings(WebhookProvider("https://push.example.com/flare", secret=SECRET))
    core = ImCore(storage, push=push)

Needs aiohttp (``pip install 'flare-rpc[webhook]'``): an asyncio HTTP client
with connection pooling and TLS, so no HTTP is written here. (Not httpx, which
`flare_runtime.jwks` uses: a delivery runs on the IM's event loop, beside its
sends, and aiohttp took 5 to 9 times less CPU per request than httpx here:
`bench/push_bench.py`, bench/RESULTS.md.) Guarantees:

* **Batched.** One request carries the notifications queued when a sender
  is free, up to `max_batch` (``{"type", "delivery_id", "notifications":
  [...]}``): one at a time while traffic is light, and a request's CPU
  (a few hundred microseconds of the event loop's) shared by up to
  `max_batch` notifications under load -- a message to a room of 500
  offline members is 5 requests, not 500.

* **Signed.** Each request carries ``Flare-Signature: t=<unix seconds>,v1=<hex>``
  where ``<hex>`` is HMAC-SHA256 of ``"<t>." + body`` under the shared secret
  (as Stripe's and GitHub's webhooks do), and ``Flare-Delivery: <id>``, the
  same on every retry of one request (deduplicate on it, or on each
  notification's ``(message_id, user_id)``). A receiver
  checks both with `verify_signature` (or its few lines, in any language:
  docs/push-providers.md) and refuses timestamps older than a few minutes
  (replays). Each retry is signed anew, with its own timestamp.
* **Retried.** A connection failure, a timeout, or a status of 408, 429 or
  5xx is retried after an exponential backoff with jitter (`initial_backoff`
  doubling up to `max_backoff`, each wait drawn from its upper half), up to
  `max_attempts`; another status (2xx: delivered; 3xx, other 4xx: refused)
  ends it. Counters count notifications, except `retries` (requests).
* **Bounded, never blocking.** `notify` appends to a queue of at most
  `max_queue` notifications and returns; when full, the oldest is dropped,
  counted in `dropped`, and logged (rate-limited). `concurrency` tasks
  deliver; each attempt, up to the answer's status line and headers, is
  bounded by `timeout` (a receiver that answers slowly, or trickles its
  answer, is cut off and retried); the answer's body is never read.
* **Shutdown.** `close` waits up to `drain_timeout` for the queue to empty,
  then drops what is left (counted in `dropped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib
import json
import logging
import random
import secrets
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from flare_runtime.errors import ConfigurationError
from flare_runtime.im.push import PushNotification, PushProvider
from flare_runtime.peer_log import PeerLog

logger = logging.getLogger("flare_runtime.im.push")

SIGNATURE_HEADER = "flare-signature"
DELIVERY_HEADER = "flare-delivery"
EVENT_TYPE = "message.offline"

_RETRIED_STATUSES = frozenset({408, 429})


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Flare-Signature`` header value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes | str,
    header: str,
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when `header` (``Flare-Signature``) signs `body` under `secret`, dated within
    `tolerance` seconds of `now` (default: the clock). For receivers; constant time."""
    key = secret.encode() if isinstance(secret, str) else secret
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        (stamp,) = fields.get("t", [])
        timestamp = int(stamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(key, timestamp, body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


def request_json(delivery_id: str, notifications: Sequence[PushNotification]) -> bytes:
    """The JSON body of one webhook request (docs/push-providers.md lists its fields)."""
    document = {
        "type": EVENT_TYPE,
        "delivery_id": delivery_id,
        "notifications": [_fields(notification) for notification in notifications],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _fields(notification: PushNotification) -> dict[str, object]:
    return {
        "user_id": notification.user_id,
        "conversation_id": notification.conversation_id,
        "message_id": notification.message_id,
        "epoch": notification.epoch,
        "seq": notification.seq,
        "sender_user_id": notification.sender_user_id,
        "sent_at_ms": notification.sent_at_ms,
        "platforms": sorted(notification.platforms),
        "online_platforms": sorted(notification.online_platforms),
        "content_type": notification.content_type,
        "preview": notification.preview,
    }


class _Delivery:
    """One request: its body, the notifications it carries, the attempts made."""

    __slots__ = ("attempts", "body", "count", "delivery_id")

    def __init__(self, notifications: Sequence[PushNotification]) -> None:
        self.delivery_id = secrets.token_hex(12)
        self.body = request_json(self.delivery_id, notifications)
        self.count = len(notifications)
        self.attempts = 0


class WebhookProvider(PushProvider):
    """POSTs each notification to `url`, HMAC-signed with `secret` (module docstring)."""

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        *,
        max_queue: int = 10_000,
        max_batch: int = 100,
        concurrency: int = 4,
        timeout: float = 10.0,
        max_attempts: int = 8,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
        drain_timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self._aiohttp: Any = importlib.import_module("aiohttp")
        except ImportError:
            raise ConfigurationError(
                "WebhookProvider needs aiohttp: pip install 'flare-rpc[webhook]'"
            ) from None
        if not url.startswith(("https://", "http://")):
            raise ConfigurationError(f"webhook URL must be http(s)://, got {url!r}")
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ConfigurationError("webhook secret must be at least 16 bytes")
        if min(max_queue, max_batch, concurrency, max_attempts) < 1:
            raise ConfigurationError(
                "max_queue, max_batch, concurrency and max_attempts must be positive"
            )
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self._logged_url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        """The URL without credentials or query (which may hold a token): what logs show."""
        self._secret = key
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.drain_timeout = drain_timeout
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._clock = clock
        self._queue: deque[PushNotification] = deque()
        self._wake: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        self._session: Any = None
        self._log = PeerLog()
        self.delivered = 0
        """Notifications the receiver accepted (2xx)."""
        self.failed = 0
        """Notifications given up: refused (4xx), or out of attempts."""
        self.dropped = 0
        """Notifications dropped unsent: the queue was full, or the provider closed."""
        self.retries = 0
        """Requests after a first attempt (one per retry of a batch)."""

    async def start(self) -> None:
        self._wake = asyncio.Event()
        aiohttp = self._aiohttp
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        )
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(self.concurrency)]

    def notify(self, notification: PushNotification) -> None:
        queue = self._queue
        if len(queue) >= self.max_queue:
            queue.popleft()
            self.dropped += 1
            self._log.log(
                logger,
                logging.WARNING,
                "webhook queue full (%d): dropped the oldest notification (%d dropped so far)",
                self.max_queue,
                self.dropped,
            )
        queue.append(notification)
        if self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Notifications queued or being delivered."""
        return len(self._queue) + self._busy

    async def close(self) -> None:
        if self._wake is not None and self.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.drain_timeout):
                    while self.pending:
                        await asyncio.sleep(0.01)
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        self.dropped += len(self._queue)
        self._queue.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _work(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            if not self._queue:
                wake.clear()
                await wake.wait()
                continue
            queue = self._queue
            delivery = _Delivery([queue.popleft() for _ in range(min(self.max_batch, len(queue)))])
            self._busy += delivery.count
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                self.dropped += delivery.count
                raise
            finally:
                self._busy -= delivery.count

    async def _deliver(self, delivery: _Delivery) -> None:
        """Send until delivered, refused, or out of attempts (waiting between attempts)."""
        while True:
            delivery.attempts += 1
            if delivery.attempts > 1:
                self.retries += 1
            outcome = await self._attempt(delivery)
            if outcome is None:
                self.delivered += delivery.count
                return
            retry, why = outcome
            if not retry or delivery.attempts >= self.max_attempts:
                self.failed += delivery.count
                self._log.log(
                    logger,
                    logging.WARNING,
                    "webhook %s: gave up on delivery %s (%d notifications) after %d attempt(s): %s",
                    self._logged_url,
                    delivery.delivery_id,
                    delivery.count,
                    delivery.attempts,
                    why,
                )
                return
            ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (delivery.attempts - 1))
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))

    async def _attempt(self, delivery: _Delivery) -> tuple[bool, str] | None:
        """One POST: None when delivered, else (retry?, why)."""
        timestamp = int(self._clock())
        headers = {
            **self._headers,
            SIGNATURE_HEADER: signature(self._secret, timestamp, delivery.body),
            DELIVERY_HEADER: delivery.delivery_id,
        }
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.post(
                    self.url, data=delivery.body, headers=headers, allow_redirects=False
                ) as response:  # leaving unread closes the connection: no body is read
                    status: int = response.status
        except (TimeoutError, self._aiohttp.ClientError, OSError) as error:
            return True, f"{type(error).__name__}: {error}"
        if 200 <= status < 300:
            return None
        retry = status >= 500 or status in _RETRIED_STATUSES
        return retry, f"HTTP status {status}"
