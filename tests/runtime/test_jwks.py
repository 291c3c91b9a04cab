"""`JWTAuth.from_jwks` against a real local JWKS server: keys, caching, rotation, downtime.

Time is a manual clock passed to `JWKSKeys`, so TTLs and the refetch rate
limit are stepped, not slept through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from flare_runtime.auth import JWTAuth, Principal, bearer_metadata
from flare_runtime.client import connect
from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.jwks import cache_seconds
from flare_runtime.metadata import Metadata
from flare_runtime.server import Server
from flare_runtime.status import StatusCode
from flare_runtime.testing.service import SERVICE, ConformanceService, Routes, StringValue
from flare_runtime.testing.timing import UNIT
from tests.http_server import LocalHTTPServer, Request, Response


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """Signing keys by kid, and the JWKS document publishing some of them."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.published: list[str] = []
        self.cache_control = "max-age=300"

    def add_rsa(self, kid: str) -> None:
        self.private[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def add_ec(self, kid: str) -> None:
        self.private[kid] = ec.generate_private_key(ec.SECP256R1())

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.private[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk["alg"] = "RS256"
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
            jwk["alg"] = "ES256"
        return {**jwk, "kid": kid, "use": "sig"}

    def respond(self, request: Request) -> Response:
        document = {"keys": [self.jwk(kid) for kid in self.published]}
        headers = {"content-type": "application/json", "cache-control": self.cache_control}
        return Response(200, json.dumps(document).encode(), headers)

    def token(self, kid: str | None, subject: str = "alice", **claims: Any) -> str:
        signer = kid if kid is not None else self.published[0]
        key = self.private[signer]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        headers = {} if kid is None else {"kid": kid}
        payload = {"sub": subject, "exp": int(time.time()) + 600, "scope": "read", **claims}
        return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """RSA keys are slow to make: once per module."""
    issuer = Issuer()
    for kid in ("rsa-1", "rsa-2"):
        issuer.add_rsa(kid)
    issuer.add_ec("ec-1")
    return issuer.private


@pytest.fixture
def issuer(keys: dict[str, Any]) -> Iterator[tuple[Issuer, LocalHTTPServer]]:
    issuer = Issuer()
    issuer.private = dict(keys)
    issuer.published = ["rsa-1", "ec-1"]
    server = LocalHTTPServer(issuer.respond).start()
    yield issuer, server
    server.stop()


async def _principal(auth: JWTAuth, token: str) -> Principal | None:
    return await auth.authenticate(Metadata(bearer_metadata(token)), "peer")


async def _refused(auth: JWTAuth, token: str) -> RpcError:
    with pytest.raises(RpcError) as raised:
        await _principal(auth, token)
    return raised.value


async def test_rs256_and_es256_tokens_verify_with_the_published_keys(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    keys, server = issuer
    auth = JWTAuth.from_jwks(f"{server.url}/jwks.json", audience=None)
    try:
        for kid in ("rsa-1", "ec-1"):
            principal = await _principal(auth, keys.token(kid, subject=kid))
            assert principal is not None
            assert (principal.subject, principal.scopes) == (kid, frozenset({"read"}))
        # One fetch served both (the set is cached).
        assert len(server.requests) == 1
        assert server.requests[0].path == "/jwks.json"
        # A token signed by a key the set does not publish under that kid.
        forged = jwt.encode(
            {"sub": "mallory", "exp": int(time.time()) + 60},
            keys.private["rsa-2"],
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        )
        error = await _refused(auth, forged)
        assert error.code is StatusCode.UNAUTHENTICATED
        assert "Signature verification failed" in error.message
    finally:
        assert auth.jwks is not None
        await auth.jwks.close()


async def test_rotation_a_new_kid_is_fetched_and_a_removed_one_stops_verifying(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    keys, server = issuer
    clock = Clock()
    auth = JWTAuth.from_jwks(server.url, refetch_interval=30, clock=clock)
    assert auth.jwks is not None
    try:
        old = keys.token("rsa-1")
        assert await _principal(auth, old) is not None
        # The issuer rotates: rsa-2 appears, rsa-1 disappears.
        keys.published = ["rsa-2", "ec-1"]
        clock.now += 31
        new = keys.token("rsa-2")
        assert await _principal(auth, new) is not None  # unknown kid -> refetched
        assert auth.jwks.fetches == 2
        error = await _refused(auth, old)
        assert (error.code, error.message) == (
            StatusCode.UNAUTHENTICATED,
            "invalid token: unknown signing key 'rsa-1'",
        )
    finally:
        await auth.jwks.close()


async def test_unknown_kids_refetch_at_most_once_per_interval(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    """Tokens with made-up kids cannot make the server hammer the JWKS endpoint."""
    keys, server = issuer
    clock = Clock()
    auth = JWTAuth.from_jwks(server.url, refetch_interval=30, clock=clock)
    assert auth.jwks is not None
    try:
        assert await _principal(auth, keys.token("ec-1")) is not None
        clock.now += 31
        for number in range(50):
            token = jwt.encode(
                {"sub": "x", "exp": int(time.time()) + 60},
                keys.private["ec-1"],
                algorithm="ES256",
                headers={"kid": f"random-{number}"},
            )
            error = await _refused(auth, token)
            assert error.message == f"invalid token: unknown signing key 'random-{number}'"
            clock.now += 0.1
        assert auth.jwks.fetches == 2  # the first one, and one refetch for 50 unknown kids
        assert len(server.requests) == 2
    finally:
        await auth.jwks.close()


async def test_cache_control_max_age_decides_when_the_set_is_fetched_again(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    keys, server = issuer
    keys.cache_control = "public, max-age=120"
    clock = Clock()
    auth = JWTAuth.from_jwks(server.url, clock=clock, min_ttl=10)
    assert auth.jwks is not None
    try:
        token = keys.token("rsa-1")
        assert await _principal(auth, token) is not None
        clock.now += 119
        assert await _principal(auth, token) is not None
        assert auth.jwks.fetches == 1
        clock.now += 2
        assert await _principal(auth, token) is not None
        assert auth.jwks.fetches == 2
    finally:
        await auth.jwks.close()


def test_cache_seconds_reads_max_age_and_no_cache_within_bounds() -> None:
    assert cache_seconds("max-age=60", 300, 30, 3600) == 60
    assert cache_seconds("public, max-age=999999", 300, 30, 3600) == 3600
    assert cache_seconds("max-age=1", 300, 30, 3600) == 30
    assert cache_seconds("no-store", 300, 30, 3600) == 30
    assert cache_seconds(None, 300, 30, 3600) == 300
    assert cache_seconds("s-maxage=5, private", 300, 30, 3600) == 300


async def test_while_the_jwks_is_down_cached_keys_keep_working(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    keys, server = issuer
    clock = Clock()
    auth = JWTAuth.from_jwks(server.url, clock=clock, refetch_interval=30)
    assert auth.jwks is not None
    try:
        token = keys.token("rsa-1")
        assert await _principal(auth, token) is not None
        await server.stopped()
        clock.now += 3600  # the set has expired; refetching it fails
        assert await _principal(auth, token) is not None
        assert auth.jwks.fetches == 2
        error = await _refused(auth, keys.token("rsa-2"))
        assert error.message == "invalid token: unknown signing key 'rsa-2'"
        # Back up, with rsa-2 published: found once the refetch interval has passed.
        keys.published = ["rsa-1", "rsa-2"]
        server.start()
        clock.now += 31
        assert await _principal(auth, keys.token("rsa-2")) is not None
    finally:
        await auth.jwks.close()


async def test_no_key_set_ever_fetched_is_unavailable_not_unauthenticated() -> None:
    server = LocalHTTPServer(lambda request: Response(503)).start()
    auth = JWTAuth.from_jwks(server.url)
    assert auth.jwks is not None
    try:
        token = jwt.encode(
            {"sub": "a", "exp": int(time.time()) + 60},
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "k"},
        )
        error = await _refused(auth, token)
        assert (error.code, error.message) == (
            StatusCode.UNAVAILABLE,
            "cannot verify tokens: signing keys unavailable",
        )
    finally:
        await auth.jwks.close()
        server.stop()


async def test_a_token_without_kid_uses_the_only_key(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    keys, server = issuer
    keys.published = ["ec-1"]
    auth = JWTAuth.from_jwks(server.url)
    assert auth.jwks is not None
    try:
        assert await _principal(auth, keys.token(None)) is not None
        keys.published = ["ec-1", "rsa-1"]
        two = JWTAuth.from_jwks(server.url)
        assert two.jwks is not None
        error = await _refused(two, keys.token(None))
        assert error.message == (
            "invalid token: no 'kid' in its header, and the key set holds 2 keys"
        )
        await two.jwks.close()
    finally:
        await auth.jwks.close()


def test_symmetric_algorithms_and_bad_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="asymmetric"):
        JWTAuth.from_jwks("https://issuer.example/jwks", algorithms=("HS256",))
    with pytest.raises(ConfigurationError, match="http"):
        JWTAuth.from_jwks("file:///etc/passwd")


async def test_a_flare_server_authenticates_connections_with_jwks_keys(
    issuer: tuple[Issuer, LocalHTTPServer],
) -> None:
    """End to end: a WebSocket connection's token verified with a key from the JWKS."""
    keys, jwks_server = issuer
    auth = JWTAuth.from_jwks(jwks_server.url)
    server = Server([(SERVICE, ConformanceService())], auth=auth)
    await server.start(listen={"websocket": "127.0.0.1:0"})
    try:
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        async with await connect(url, token=keys.token("rsa-1", subject="carol")) as channel:
            reply = await channel.unary_unary(Routes.WHO_AM_I, StringValue(), timeout=10 * UNIT)
            assert reply.value == "carol"
    finally:
        await server.shutdown(grace=0)
        assert auth.jwks is not None
        await auth.jwks.close()
