"""A hostile (or broken) JWKS endpoint, and hostile tokens, against `JWTAuth.from_jwks`.

Whatever the endpoint answers, the server stays up, its memory bounded, the
fetch bounded in time; keys it already held keep working, and tokens are
refused with a clear UNAUTHENTICATED (or UNAVAILABLE while no key set was
ever fetched). Failed fetches are logged, rate-limited.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from flare_runtime.auth import JWTAuth, bearer_metadata
from flare_runtime.errors import RpcError
from flare_runtime.metadata import Metadata
from flare_runtime.status import StatusCode
from tests.http_server import LocalHTTPServer, Response

KEY = ec.generate_private_key(ec.SECP256R1())
GOOD_JWK = {**json.loads(ECAlgorithm.to_jwk(KEY.public_key())), "kid": "good", "alg": "ES256"}


def _token(kid: object = "good", algorithm: str = "ES256", key: Any = KEY) -> str:
    return jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 60},
        key,
        algorithm=algorithm,
        headers={"kid": kid},
    )


def _raw_token(header: dict[str, object]) -> str:
    """A token with this header, signed by nobody."""
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.e30.c2ln"


async def _outcome(document: Response, token: str | None = None, **options: Any) -> RpcError | str:
    """Serve `document` as the JWKS; authenticate `token`; the subject or the error."""
    server = LocalHTTPServer(lambda request: document).start()
    auth = JWTAuth.from_jwks(server.url, **options)
    assert auth.jwks is not None
    try:
        principal = await auth.authenticate(Metadata(bearer_metadata(token or _token())), "p")
        assert principal is not None
        return principal.subject
    except RpcError as error:
        return error
    finally:
        await auth.jwks.close()
        server.stop()


def _json(value: object, **headers: str) -> Response:
    return Response(200, json.dumps(value).encode(), headers)


@pytest.mark.parametrize(
    "document",
    [
        Response(200, b"<html>not json</html>"),
        Response(200, b"\xff\xfe garbage"),
        Response(200, b"[" * 100_000 + b"]" * 100_000),  # nesting deeper than the parser allows
        _json({"keys": "not a list"}),
        _json([GOOD_JWK]),
        Response(302, b"", {"location": "http://127.0.0.1:1/elsewhere"}),
        Response(500, b"oops"),
    ],
    ids=["html", "bytes", "deep", "keys-not-list", "array", "redirect", "error"],
)
async def test_a_garbage_jwks_is_a_failed_fetch(document: Response) -> None:
    """A JWKS answer that is not a key set (HTML, bytes, deep nesting, wrong shape, a
    redirect, an error) → UNAVAILABLE, no traceback, the server goes on."""
    outcome = await _outcome(document)
    assert isinstance(outcome, RpcError)
    assert outcome.code is StatusCode.UNAVAILABLE


async def test_a_huge_jwks_document_is_cut_off_at_the_limit() -> None:
    """A 5 MB JWKS (declared length, or sent without one) → refused once `max_bytes` have
    arrived; nothing more is read."""
    body = json.dumps({"keys": [GOOD_JWK], "padding": "x" * 5_000_000}).encode()
    declared = await _outcome(Response(200, body), max_bytes=64 * 1024)
    assert isinstance(declared, RpcError)
    assert declared.code is StatusCode.UNAVAILABLE
    unannounced = await _outcome(Response(200, body, send_length=False), max_bytes=64 * 1024)
    assert isinstance(unannounced, RpcError)
    assert unannounced.code is StatusCode.UNAVAILABLE


async def test_too_many_keys_is_a_failed_fetch() -> None:
    """A key set of 10,000 keys (limit 100) → UNAVAILABLE."""
    outcome = await _outcome(_json({"keys": [GOOD_JWK] * 10_000}))
    assert isinstance(outcome, RpcError)
    assert outcome.code is StatusCode.UNAVAILABLE


async def test_a_slowloris_jwks_is_cut_off_by_the_fetch_timeout() -> None:
    """A JWKS server sending its body one byte every 0.2 s → the fetch gives up after
    `timeout` (0.5 s), not after the whole body."""
    body = json.dumps({"keys": [GOOD_JWK]}).encode()
    started = time.monotonic()
    outcome = await _outcome(Response(200, body, trickle=0.2), timeout=0.5)
    assert isinstance(outcome, RpcError)
    assert outcome.code is StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 5


async def test_malformed_keys_are_skipped_and_the_good_one_still_verifies() -> None:
    """A key set mixing broken entries (not objects, unknown kty, a broken RSA key, a
    shared secret, an encryption key, a non-string kid, a key of another algorithm) with
    one good key → the good key verifies."""
    document = _json(
        {
            "keys": [
                "nope",
                42,
                {"kty": "XYZ", "kid": "a"},
                {"kty": "RSA", "kid": "b", "n": "!!", "e": "AQAB"},
                {"kty": "oct", "kid": "c", "k": "c2VjcmV0"},
                {**GOOD_JWK, "kid": "d", "use": "enc"},
                {**GOOD_JWK, "kid": 7},
                {**GOOD_JWK, "kid": "e", "alg": "ES512"},
                GOOD_JWK,
            ]
        }
    )
    assert await _outcome(document) == "alice"
    for kid in ("c", "d", "e"):
        refused = await _outcome(document, _token(kid))
        assert isinstance(refused, RpcError)
        assert refused.message == f"invalid token: unknown signing key {kid!r}"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not.a.token", "invalid token: "),
        ("e30.e30.sig", "invalid token: "),
        (_raw_token({"alg": "ES256", "kid": ["list"]}), "invalid token: "),
        (_token(algorithm="HS256", key=b"k" * 32), "invalid token: "),
    ],
    ids=["garbage", "empty-header", "kid-not-string", "hs256-confusion"],
)
async def test_hostile_tokens_are_unauthenticated(token: str, message: str) -> None:
    """A token whose header is garbage, names a non-string kid, or uses HS256 against the
    published public key (algorithm confusion) → UNAUTHENTICATED."""
    outcome = await _outcome(_json({"keys": [GOOD_JWK]}), token)
    assert isinstance(outcome, RpcError)
    assert outcome.code is StatusCode.UNAUTHENTICATED
    assert outcome.message.startswith(message)


async def test_failed_fetches_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A JWKS endpoint failing on every fetch, 200 fetches → a handful of log lines, not 200."""
    server = LocalHTTPServer(lambda request: Response(500)).start()
    now = [0.0]
    auth = JWTAuth.from_jwks(server.url, refetch_interval=1, clock=lambda: now[0])
    assert auth.jwks is not None
    try:
        with caplog.at_level(logging.WARNING, logger="flare_runtime.auth"):
            for _ in range(200):
                now[0] += 2
                with pytest.raises(RpcError):
                    await auth.authenticate(Metadata(bearer_metadata(_token())), "p")
        assert auth.jwks.fetches == 200
        lines = [r for r in caplog.records if "cannot fetch JWKS" in r.getMessage()]
        assert 1 <= len(lines) <= 20
    finally:
        await auth.jwks.close()
        server.stop()
