"""The webhook push provider against a real local HTTP receiver.

Signed deliveries, a receiver that is down and comes back, refusals, and a
slow receiver with a full queue while sends go on at full speed.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2

from flare_runtime.errors import ConfigurationError
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.push import PushNotification, PushSettings
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.im.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WebhookProvider,
    signature,
    verify_signature,
)
from flare_runtime.testing.timing import UNIT
from tests.http_server import LocalHTTPServer, Request, Response

SECRET = b"whsec-0123456789abcdef"


def note(seq: int = 1, user: str = "bob") -> PushNotification:
    return PushNotification(
        user, "conv", f"m{seq}", 1, seq, "alice", 1_700_000_000_000, frozenset(), frozenset()
    )


async def until(condition: object, seconds: float = 10 * UNIT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_delivery_is_signed_and_carries_the_notification() -> None:
    receiver = LocalHTTPServer(lambda request: Response(204)).start()
    provider = WebhookProvider(f"{receiver.url}/hook", SECRET)
    await provider.start()
    try:
        provider.notify(note(7))
        await until(lambda: provider.delivered == 1)
        (request,) = receiver.requests
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.headers["content-type"] == "application/json"
        assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body)
        assert not verify_signature(
            b"another-secret-0123", request.headers[SIGNATURE_HEADER], request.body
        )
        assert not verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body + b" ")
        body = json.loads(request.body)
        assert body.pop("notifications") == [
            {
                "user_id": "bob",
                "conversation_id": "conv",
                "message_id": "m7",
                "epoch": 1,
                "seq": 7,
                "sender_user_id": "alice",
                "sent_at_ms": 1_700_000_000_000,
                "platforms": [],
                "online_platforms": [],
                "content_type": "",
                "preview": "",
            }
        ]
        assert body == {"type": "message.offline", "delivery_id": request.headers[DELIVERY_HEADER]}
    finally:
        await provider.close()
        receiver.stop()


@pytest.mark.parametrize(
    ("url", "secret", "options", "says"),
    [
        ("ftp://push.example/hook", SECRET, {}, "must be http(s)://"),
        ("https://push.example/hook", b"short", {}, "at least 16 bytes"),
        ("https://push.example/hook", SECRET, {"max_batch": 0}, "must be positive"),
    ],
)
def test_bad_settings_are_a_configuration_error(
    url: str, secret: bytes, options: dict[str, int], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        WebhookProvider(url, secret, **options)  # type: ignore[arg-type]


def doc_verify() -> Callable[[bytes, str, bytes], bool]:
    """The standard-library `verify` of docs/push-providers.md, as written there."""
    doc = (Path(__file__).parents[2] / "docs" / "push-providers.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verify(" in b]
    namespace: dict[str, object] = {}
    exec(block, namespace)
    return namespace["verify"]  # type: ignore[return-value]


async def test_the_documented_receiver_check_accepts_real_deliveries_only() -> None:
    receiver = LocalHTTPServer(lambda request: Response(204)).start()
    provider = WebhookProvider(receiver.url, SECRET)
    await provider.start()
    try:
        provider.notify(note())
        await until(lambda: provider.delivered == 1)
    finally:
        await provider.close()
        receiver.stop()
    (request,) = receiver.requests
    verify, header = doc_verify(), request.headers[SIGNATURE_HEADER]
    assert verify(SECRET, header, request.body)
    assert not verify(SECRET, header, request.body.replace(b"bob", b"eve"))
    assert not verify(b"another-secret-0123", header, request.body)
    stale = signature(SECRET, int(time.time()) - 600, request.body)
    assert not verify(SECRET, stale, request.body)
    assert not verify(SECRET, "garbage", request.body)


def test_signatures_expire_and_name_their_timestamp() -> None:
    body = b'{"x":1}'
    header = signature(SECRET, 1_000_000, body)
    assert header.startswith("t=1000000,v1=")
    assert verify_signature(SECRET, header, body, now=1_000_100)
    assert not verify_signature(SECRET, header, body, now=1_000_400)  # a replay, too late
    assert not verify_signature(SECRET, "t=abc,v1=00", body, now=1_000_000)
    assert not verify_signature(SECRET, "v1=" + header.partition("v1=")[2], body)


async def test_a_receiver_that_is_down_gets_the_notification_once_it_is_back() -> None:
    receiver = LocalHTTPServer(lambda request: Response(200)).start()
    url = receiver.url
    await receiver.stopped()  # down: connections are refused
    provider = WebhookProvider(url, SECRET, initial_backoff=0.05, max_backoff=0.2, max_attempts=50)
    await provider.start()
    try:
        provider.notify(note())
        await until(lambda: provider.retries >= 3)
        assert provider.delivered == 0
        receiver.start()  # back, on the same port
        await until(lambda: provider.delivered == 1)
        (request,) = receiver.requests
        assert json.loads(request.body)["notifications"][0]["message_id"] == "m1"
        assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body)
    finally:
        await provider.close()
        receiver.stop()


async def test_5xx_and_429_are_retried_other_4xx_refuse_the_delivery() -> None:
    statuses = iter([503, 429, 200])
    receiver = LocalHTTPServer(lambda request: Response(next(statuses, 400))).start()
    provider = WebhookProvider(receiver.url, SECRET, initial_backoff=0.01, max_backoff=0.02)
    await provider.start()
    try:
        provider.notify(note(1))
        await until(lambda: provider.delivered == 1)
        assert len(receiver.requests) == 3
        ids = {request.headers[DELIVERY_HEADER] for request in receiver.requests}
        assert len(ids) == 1  # one delivery id across its retries
        provider.notify(note(2))  # answered 400: not retried
        await until(lambda: provider.failed == 1)
        await asyncio.sleep(0.1)
        assert len(receiver.requests) == 4
    finally:
        await provider.close()
        receiver.stop()


async def test_notifications_queued_together_go_in_batches_of_max_batch() -> None:
    receiver = LocalHTTPServer(lambda request: Response(200)).start()
    provider = WebhookProvider(receiver.url, SECRET, max_batch=100, concurrency=1)
    await provider.start()
    try:
        for seq in range(250):  # queued before the sender runs
            provider.notify(note(seq, user=f"user{seq % 7}"))
        await until(lambda: provider.delivered == 250)
        batches = [json.loads(request.body)["notifications"] for request in receiver.requests]
        assert [len(batch) for batch in batches] == [100, 100, 50]
        keys = [(item["message_id"], item["user_id"]) for batch in batches for item in batch]
        assert keys == [(f"m{seq}", f"user{seq % 7}") for seq in range(250)]
        assert len({request.headers[DELIVERY_HEADER] for request in receiver.requests}) == 3
        for request in receiver.requests:
            assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body)
        provider.notify(note(1000))  # light traffic: one at a time, at once
        await until(lambda: provider.delivered == 251)
        assert len(json.loads(receiver.requests[-1].body)["notifications"]) == 1
    finally:
        await provider.close()
        receiver.stop()


async def test_a_slow_receiver_and_a_full_queue_do_not_slow_sends(tmp_path: Path) -> None:
    """A receiver taking 0.5 s per request, 1 delivery at a time, a queue of 20: 300 sends,
    each making an offline notification, take as long as sends of a core without push
    (the two cores' sends alternate, in the same run); the overflow is dropped, counted."""

    def slow(request: Request) -> Response:
        return Response(200, delay=0.5)

    receiver = LocalHTTPServer(slow).start()
    provider = WebhookProvider(
        receiver.url, SECRET, concurrency=1, max_queue=20, max_batch=1, drain_timeout=0
    )
    body = content_pb2.Content(text=content_pb2.TextContent(text="hi")).SerializeToString()
    cores, rooms, senders = [], [], []
    for name, push in (("plain", None), ("pushing", PushSettings(provider))):
        core = ImCore(
            SqliteStorage(tmp_path / f"{name}.db", KeyRing.generate()),
            limits=ImLimits(send_rate_per_second=1e5, send_burst=100_000),
            push=push,
        )
        await core.start()
        alice = core.login("alice", "d", 1, QueueSink())[0]
        rooms.append((await core.create_room(alice, "r", ["bob"])).record.conversation_id)
        cores.append(core)
        senders.append(alice)
    latencies: list[list[float]] = [[], []]
    try:
        for number in range(300):
            for index in (number % 2, 1 - number % 2):
                started = time.perf_counter()
                await cores[index].send(senders[index], rooms[index], f"c{number}", body)
                latencies[index].append(time.perf_counter() - started)
        assert provider.dropped > 200
        assert provider.pending <= 21
    finally:
        for core in cores:
            await core.close()
        receiver.stop()
    base, pushed = latencies
    p50 = statistics.median(base), statistics.median(pushed)
    p99 = sorted(base)[296], sorted(pushed)[296]
    print(f"send latency without -> with push: p50 {p50[0] * 1e6:.0f} -> {p50[1] * 1e6:.0f} us, "
          f"p99 {p99[0] * 1e6:.0f} -> {p99[1] * 1e6:.0f} us")  # fmt: skip
    assert p50[1] < 1.5 * p50[0] + 0.0005
    assert p99[1] < 0.1  # never waits for the 0.5 s receiver
