"""Authentication plugins: who is calling, established from metadata.

A client presents credentials as metadata, ``authorization: Bearer <token>``:
once per connection on WebSocket and QUIC (``flare.connect(url, token=...)``
sends it in the connection's opening metadata) or on every call (any
transport; gRPC has only this). The server asks its `AuthPlugin` to turn the
metadata into a `Principal`:

* no credentials → ``None`` (anonymous); routes marked
  ``auth: AUTHENTICATED`` then fail with UNAUTHENTICATED;
* bad, expired or unknown credentials → the plugin raises
  ``RpcError(UNAUTHENTICATED, reason)``; on a connection this is remembered
  and reported by every call that needs authentication, while routes that
  need none still work;
* a principal lacking a route's scopes → PERMISSION_DENIED;
* several ``authorization`` entries in one metadata set (a connection's
  opening metadata, or a call's) → UNAUTHENTICATED, whatever they hold: which
  one was meant is ambiguous, so none is picked (`check_single_credential`).

All of this happens before the handler runs (see `flare_runtime.dispatch`).
Connection-level credentials are checked once, at connect, so a call on an
authenticated connection pays nothing for auth.
"""

from __future__ import annotations

import abc
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.metadata import Metadata
from flare_runtime.status import StatusCode

if TYPE_CHECKING:
    from types import ModuleType

    from flare_runtime.jwks import JWKSKeys


@dataclass(frozen=True, slots=True)
class Principal:
    """Who the caller is, as established by an auth plugin."""

    subject: str
    scopes: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


AUTHORIZATION_KEY = "authorization"
"""The metadata key carrying credentials (gRPC's convention)."""


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """The metadata entry presenting `token`: ``authorization: Bearer <token>``."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def check_single_credential(metadata: Metadata) -> None:
    """Raise ``RpcError(UNAUTHENTICATED)`` when `metadata` has several ``authorization``
    entries.

    Which one the caller meant is ambiguous (a bad one then a valid one, say):
    such credentials are refused, never resolved by picking one. The
    `Dispatcher` checks this before any `AuthPlugin` runs.
    """
    count = len(metadata.get_all(AUTHORIZATION_KEY))
    if count > 1:
        raise RpcError(
            StatusCode.UNAUTHENTICATED,
            f"ambiguous credentials: {count} authorization entries, expected one",
        )


def bearer_token(metadata: Metadata) -> str | None:
    """The bearer token in `metadata`, or None when there is no ``authorization`` entry.

    Raises ``RpcError(UNAUTHENTICATED)`` when the entry is not a bearer token,
    or when there are several (`check_single_credential`).
    """
    value = metadata.get(AUTHORIZATION_KEY)
    if value is None:
        return None
    check_single_credential(metadata)
    if isinstance(value, bytes):
        raise RpcError(StatusCode.UNAUTHENTICATED, "authorization metadata must be text")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RpcError(StatusCode.UNAUTHENTICATED, "authorization is not a bearer token")
    return token.strip()


class AuthPlugin(abc.ABC):
    """Turns call or connection metadata into a `Principal`.

    Implementations must be safe to call concurrently and should be fast:
    `authenticate` runs once per connection, and once per call that carries
    its own credentials.
    """

    @abc.abstractmethod
    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        """Return the caller's principal, or None when `metadata` holds no credentials.

        Raise ``RpcError(StatusCode.UNAUTHENTICATED, reason)`` when credentials
        are present but invalid; `reason` reaches the client, so it must not
        leak secrets.
        """


class TokenAuth(AuthPlugin):
    """Static bearer tokens mapped to principals (tests, internal services).

    Tokens are compared in constant time.
    """

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self._tokens = dict(tokens)

    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        raise RpcError(StatusCode.UNAUTHENTICATED, "unknown token")


class JWTAuth(AuthPlugin):
    """Bearer JSON Web Tokens verified with pyjwt.

    The principal's subject is the ``sub`` claim; its scopes come from the
    ``scope`` claim (space separated, OAuth 2 style) or a ``scopes`` list
    (or space-separated string); a ``scopes`` claim of another type is an
    invalid token.
    ``exp`` is required and checked (with `leeway` seconds of clock skew);
    `audience` and `issuer`, when given, must match.

    The verification key is `key`, or with `from_jwks` the key a JWKS URL
    publishes under the token's ``kid`` (fetched, cached and rotated by
    `flare_runtime.jwks.JWKSKeys`).
    """

    def __init__(
        self,
        key: Any,
        *,
        algorithms: Iterable[str] = ("HS256",),
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        # pyjwt and the cryptography it loads (~50 ms, some 14 MB of a process) are
        # imported by the servers that verify tokens, not by every import of this
        # module (a client, the `flare` command, a server without JWTs).
        import jwt  # noqa: PLC0415

        self._jwt: ModuleType = jwt
        self._key = key
        self._algorithms = list(algorithms)
        if not self._algorithms or "none" in (name.lower() for name in self._algorithms):
            raise ConfigurationError("JWTAuth needs at least one real signing algorithm")
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        self.jwks: JWKSKeys | None = None
        """Where keys come from, for a `from_jwks` instance."""

    @classmethod
    def from_jwks(
        cls,
        url: str,
        *,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        **jwks_options: Any,
    ) -> JWTAuth:
        """Verify tokens with the keys a JWKS `url` publishes (an OpenID provider's
        ``jwks_uri``), chosen by each token's ``kid``.

        `algorithms` must be asymmetric (RS*, PS*, ES*, EdDSA). `jwks_options`
        go to `flare_runtime.jwks.JWKSKeys` (``default_ttl``, ``min_ttl``,
        ``max_ttl``, ``refetch_interval``, ``timeout``, ``max_bytes``,
        ``max_keys``). Needs ``pip install 'flare-rpc[jwks]'`` (httpx).
        docs/runtime.md, "JWKS", has the caching and rotation rules.
        """
        from flare_runtime.jwks import JWKSKeys  # noqa: PLC0415 -- httpx only when used

        names = list(algorithms)
        if any(name.upper().startswith("HS") for name in names):
            raise ConfigurationError(
                "JWTAuth.from_jwks takes asymmetric algorithms (RS*, PS*, ES*, EdDSA), not HS*"
            )
        auth = cls(None, algorithms=names, audience=audience, issuer=issuer, leeway=leeway)
        auth.jwks = JWKSKeys(url, algorithms=names, **jwks_options)
        return auth

    async def _verification_key(self, token: str) -> tuple[Any, list[str]]:
        """The key and algorithms to verify `token` with."""
        if self.jwks is None:
            return self._key, self._algorithms
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise RpcError(StatusCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise RpcError(StatusCode.UNAUTHENTICATED, "invalid token: 'kid' is not a string")
        key, declared = await self.jwks.signing_key(kid)
        if declared is None:
            return key, self._algorithms
        return key, [declared]

    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        jwt = self._jwt
        key, algorithms = await self._verification_key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise RpcError(StatusCode.UNAUTHENTICATED, "token expired") from None
        except jwt.InvalidTokenError as exc:
            # pyjwt's messages name the failed check, never the key.
            raise RpcError(StatusCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        scopes = claims.get("scopes")
        if scopes is None:
            scopes = str(claims.get("scope", "")).split()
        elif isinstance(scopes, str):
            scopes = scopes.split()  # not a set of characters
        elif not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise RpcError(
                StatusCode.UNAUTHENTICATED,
                "invalid token: scopes must be a list of strings or a space-separated string",
            )
        return Principal(subject=str(claims["sub"]), scopes=frozenset(scopes), claims=claims)


def issue_jwt(
    key: Any,
    subject: str,
    *,
    expires_in: float = 3600.0,
    scopes: Iterable[str] = (),
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """Sign a token `JWTAuth` accepts (for tests, demos and simple issuers)."""
    import jwt  # noqa: PLC0415 -- see JWTAuth.__init__

    now = int(time.time())
    payload: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(expires_in), **claims}
    scope_list = list(scopes)
    if scope_list:
        payload["scope"] = " ".join(scope_list)
    return jwt.encode(payload, key, algorithm=algorithm)
