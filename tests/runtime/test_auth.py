"""Auth plugins: bearer parsing, static tokens, JWT."""

from __future__ import annotations

import subprocess
import sys
import time

import jwt
import pytest

from flare_runtime.auth import (
    JWTAuth,
    Principal,
    TokenAuth,
    bearer_metadata,
    bearer_token,
    issue_jwt,
)
from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.metadata import Metadata
from flare_runtime.status import StatusCode

KEY = "test-signing-key-0123456789abcdef-0123456789"


def test_bearer_token_parsing() -> None:
    assert bearer_token(Metadata()) is None
    assert bearer_token(Metadata(bearer_metadata("abc"))) == "abc"
    assert bearer_token(Metadata({"authorization": "bearer  xyz "})) == "xyz"
    for bad in ("Basic abc", "Bearer", "Bearer   "):
        with pytest.raises(RpcError) as caught:
            bearer_token(Metadata({"authorization": bad}))
        assert caught.value.code is StatusCode.UNAUTHENTICATED


async def test_token_auth() -> None:
    auth = TokenAuth({"s3cret": Principal("svc")})
    assert await auth.authenticate(Metadata(bearer_metadata("s3cret")), "p") == Principal("svc")
    assert await auth.authenticate(Metadata(), "p") is None
    with pytest.raises(RpcError):
        await auth.authenticate(Metadata(bearer_metadata("other")), "p")


async def test_jwt_auth_accepts_scopes_and_rejects_bad_tokens() -> None:
    auth = JWTAuth(KEY, audience="flare", leeway=0)
    token = issue_jwt(KEY, "alice", scopes=["chat", "admin"], aud="flare")
    principal = await auth.authenticate(Metadata(bearer_metadata(token)), "p")
    assert principal is not None
    assert principal.subject == "alice"
    assert principal.scopes == {"chat", "admin"}
    assert principal.claims["aud"] == "flare"

    expired = issue_jwt(KEY, "alice", expires_in=-10, aud="flare")
    wrong_key = issue_jwt("another-key-0123456789abcdef-0123456789ab", "alice", aud="flare")
    wrong_audience = issue_jwt(KEY, "alice", aud="elsewhere")
    cases = {expired: "token expired", wrong_key: "invalid token", wrong_audience: "invalid"}
    for token, message in cases.items():
        with pytest.raises(RpcError) as caught:
            await auth.authenticate(Metadata(bearer_metadata(token)), "p")
        assert caught.value.code is StatusCode.UNAUTHENTICATED
        assert message in caught.value.message
        assert KEY not in caught.value.message


def test_jwt_auth_refuses_the_none_algorithm() -> None:
    with pytest.raises(ConfigurationError):
        JWTAuth(KEY, algorithms=["none"])


async def test_jwt_scopes_claim_as_a_string_or_of_a_bad_type() -> None:
    """A ``scopes`` string is split on spaces (not into characters); a number is an invalid
    token (UNAUTHENTICATED), not a TypeError."""
    auth = JWTAuth(KEY)

    def signed(scopes: object) -> Metadata:
        claims = {"sub": "alice", "exp": int(time.time()) + 60, "scopes": scopes}
        return Metadata(bearer_metadata(jwt.encode(claims, KEY, algorithm="HS256")))

    principal = await auth.authenticate(signed("chat chat.write"), "p")
    assert principal is not None
    assert principal.scopes == {"chat", "chat.write"}
    for bad in (5, {"chat": True}, ["chat", 5]):
        with pytest.raises(RpcError) as caught:
            await auth.authenticate(signed(bad), "p")
        assert caught.value.code is StatusCode.UNAUTHENTICATED
        assert "scopes" in caught.value.message


def test_a_server_without_jwt_auth_does_not_load_pyjwt_or_cryptography() -> None:
    """pyjwt and cryptography cost a process some 14 MB: only JWTAuth and issue_jwt load them
    (every worker of ``flare serve --workers N`` pays what it imports)."""
    probe = (
        "import sys, flare_runtime.server, flare_runtime.transports.websocket\n"
        "from flare_runtime.auth import TokenAuth\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('jwt', 'cryptography')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
