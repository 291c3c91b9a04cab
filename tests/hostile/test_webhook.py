"""A hostile (or broken) webhook receiver against `WebhookProvider`.

Whatever the receiver does, `notify` returns at once, the provider's memory
is bounded (its queue, never a response body), every attempt is bounded by
`timeout`, deliveries are given up after `max_attempts`, and its log lines
are rate-limited. Raw receivers are asyncio servers speaking just enough
HTTP/1.1 to misbehave; well-formed ones are `tests.http_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from flare_runtime.im.push import PushNotification
from flare_runtime.im.webhook import WebhookProvider
from flare_runtime.testing.timing import UNIT
from tests.http_server import LocalHTTPServer, Response

SECRET = b"whsec-0123456789abcdef"

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def note(seq: int = 1) -> PushNotification:
    return PushNotification("bob", "conv", f"m{seq}", 1, seq, "alice", 0, frozenset(), frozenset())


async def until(condition: Callable[[], bool], seconds: float = 10 * UNIT) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


class RawReceiver:
    """Reads each request (head and body), then runs `behaviour` on the connection."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.partition(b":")[2])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            await self.behaviour(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def provider(url: str, **options: object) -> AsyncIterator[WebhookProvider]:
    settings: dict[str, object] = {"initial_backoff": 0.01, "max_backoff": 0.02, **options}
    webhook = WebhookProvider(url, SECRET, **settings)  # type: ignore[arg-type]
    await webhook.start()
    try:
        yield webhook
    finally:
        await webhook.close()


@contextlib.asynccontextmanager
async def raw(
    behaviour: Behaviour, **options: object
) -> AsyncIterator[tuple[RawReceiver, WebhookProvider]]:
    """A `RawReceiver` with `behaviour`, and a started provider delivering to it."""
    async with RawReceiver(behaviour) as receiver, provider(receiver.url, **options) as webhook:
        yield receiver, webhook


async def test_a_receiver_that_never_answers_is_cut_off_at_the_timeout_and_given_up() -> None:
    """Input: a receiver that reads the request and never answers. Outcome: each attempt ends
    at `timeout` (0.2 s), the delivery is given up after `max_attempts` (3), counted failed."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async with raw(hang, timeout=0.2, max_attempts=3) as (receiver, webhook):
        started = time.monotonic()
        webhook.notify(note())
        await until(lambda: webhook.failed == 1)
        elapsed = time.monotonic() - started
        assert (receiver.connections, webhook.retries, webhook.delivered) == (3, 2, 0)
        assert 0.6 <= elapsed < 0.6 + 2 * UNIT


async def test_a_receiver_answering_500_forever_is_given_up_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Input: a receiver answering 500 to every request, 30 notifications one per request.
    Outcome: each is tried `max_attempts` (2) times then given up; at most 20 "gave up"
    lines (the PeerLog burst) are logged, naming the URL without its credentials or query
    (a token)."""
    receiver = LocalHTTPServer(lambda request: Response(500, b"oops")).start()
    caplog.set_level(logging.WARNING, "flare_runtime.im.push")
    url = receiver.url.replace("//", "//user:pa55word@") + "/hook?token=s3cret"
    try:
        async with provider(url, max_attempts=2, max_batch=1) as webhook:
            for seq in range(30):
                webhook.notify(note(seq))
            await until(lambda: webhook.failed == 30)
            assert (len(receiver.requests), webhook.delivered) == (60, 0)
    finally:
        receiver.stop()
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 20
    assert f"{receiver.url}/hook: gave up" in gave_up[0].getMessage()
    assert "HTTP status 500" in gave_up[0].getMessage()
    assert not [r for r in caplog.records if "s3cret" in r.getMessage() or "pa55" in r.getMessage()]


async def test_a_huge_response_body_is_never_read() -> None:
    """Input: a 200 declaring a 10 GB body, then sending it as fast as it can. Outcome: the
    delivery counts on the status line; the body is not read (the connection is closed
    after the head; the receiver manages to write little more than the socket buffers)."""
    written = 0
    finished = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000000\r\n\r\n")
        chunk = bytes(65536)
        try:
            while written < 10_000_000_000:
                writer.write(chunk)
                await writer.drain()
                written += len(chunk)
        finally:
            finished.set()

    async with raw(flood, timeout=5.0) as (_, webhook):
        webhook.notify(note())
        await until(lambda: webhook.delivered == 1)
        async with asyncio.timeout(5 * UNIT):
            await finished.wait()  # the provider closed the connection
    assert written < 64 * 1024 * 1024


async def test_endless_response_headers_are_a_failed_attempt() -> None:
    """Input: a status line, then header lines forever. Outcome: the HTTP parser's head
    limit ends the attempt (retried, then given up); memory stays bounded."""

    async def headers_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for number in range(1_000_000):
            writer.write(b"x-filler-%d: %s\r\n" % (number, b"y" * 100))
            await writer.drain()

    async with raw(headers_forever, timeout=5.0, max_attempts=2) as (receiver, webhook):
        webhook.notify(note())
        await until(lambda: webhook.failed == 1)
        assert (receiver.connections, webhook.delivered) == (2, 0)


async def test_a_status_line_trickled_a_byte_at_a_time_is_cut_off_at_the_timeout() -> None:
    """Input: a slowloris receiver sending its status line one byte every 50 ms. Outcome:
    the whole attempt, headers included, is bounded by `timeout` (0.3 s): given up after
    `max_attempts` (2) in about 0.6 s, never delivered."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    async with raw(trickle, timeout=0.3, max_attempts=2) as (receiver, webhook):
        started = time.monotonic()
        webhook.notify(note())
        await until(lambda: webhook.failed == 1)
        assert time.monotonic() - started < 0.6 + 2 * UNIT
        assert (receiver.connections, webhook.delivered) == (2, 0)


async def test_a_receiver_closing_without_an_answer_is_retried() -> None:
    """Input: a receiver that reads the request and closes the connection, twice, then
    answers 204. Outcome: the two failures are retried; the third attempt delivers."""
    attempts = 0

    async def close_twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 2:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with raw(close_twice) as (receiver, webhook):
        webhook.notify(note())
        await until(lambda: webhook.delivered == 1)
        assert (receiver.connections, webhook.retries) == (3, 2)


async def test_a_redirect_is_not_followed() -> None:
    """Input: a receiver answering 307 to another URL. Outcome: the signed body goes nowhere
    else; the delivery is refused (a 3xx is not retried)."""
    elsewhere = LocalHTTPServer(lambda request: Response(200)).start()
    redirecting = LocalHTTPServer(
        lambda request: Response(307, headers={"location": elsewhere.url})
    ).start()
    try:
        async with provider(redirecting.url) as webhook:
            webhook.notify(note())
            await until(lambda: webhook.failed == 1)
            await asyncio.sleep(0.1)
        assert (len(redirecting.requests), len(elsewhere.requests)) == (1, 0)
    finally:
        redirecting.stop()
        elsewhere.stop()


async def test_a_hanging_receiver_and_a_flood_of_notifications_stay_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Input: a receiver that never answers; 10,000 notifications at once into a queue of 5.
    Outcome: `notify` returns at once each time, the queue holds 5, the rest are dropped
    and counted, at most 20 "queue full" lines are logged; `close` gives up on what is left
    after `drain_timeout` (0.1 s) and counts it dropped."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    caplog.set_level(logging.WARNING, "flare_runtime.im.push")
    async with RawReceiver(hang) as receiver:
        webhook = WebhookProvider(
            receiver.url, SECRET, max_queue=5, concurrency=1, timeout=60, drain_timeout=0.1
        )
        await webhook.start()
        started = time.perf_counter()
        for seq in range(10_000):
            webhook.notify(note(seq))
        assert time.perf_counter() - started < 1.0  # ~10 us a notification at most
        assert (webhook.pending, webhook.dropped) == (5, 9_995)
        await until(lambda: receiver.connections == 1)  # one delivery in flight, hanging
        started = time.monotonic()
        await webhook.close()
        assert time.monotonic() - started < 0.1 + UNIT
        assert (webhook.dropped, webhook.delivered, webhook.pending) == (10_000, 0, 0)
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 20
