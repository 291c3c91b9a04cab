"""Signing keys from a JWKS URL (RFC 7517), for `JWTAuth.from_jwks`.

`JWKSKeys` fetches the key set with httpx (``pip install 'flare-rpc[jwks]'``)
on the event loop, never blocking it, and keeps it:

* **Cached.** A fetched set is used until its ``Cache-Control: max-age``
  expires (clamped to [`min_ttl`, `max_ttl`]; `default_ttl` without one). One
  fetch runs at a time; callers arriving meanwhile wait for it.
* **Rotation followed.** A token naming a key id (``kid``) the set lacks makes
  the set be fetched again -- at most once per `refetch_interval`, so tokens
  with made-up key ids cannot make the server hammer the JWKS endpoint.
  Keys that left the set stop verifying once the new set is fetched.
* **Stale if error.** When a fetch fails (endpoint down, garbage, too large,
  too slow), the keys already held keep working and the next try waits
  `refetch_interval`; failures are logged, rate-limited.
* **Bounded.** A document over `max_bytes`, with more than `max_keys` keys,
  not JSON, or not a key set is a failed fetch; the whole fetch (connect,
  headers, body) is bounded by `timeout`, so a slow server cannot hold it.
  Keys that are not signing keys (``use`` other than ``sig``), of unsupported
  types or of an algorithm not accepted, are skipped.

Errors callers see are `RpcError`: UNAUTHENTICATED for a token naming a key
the set does not hold (``unknown signing key 'kid'``), UNAVAILABLE when no
key set could be fetched at all (a server-side problem the client may retry).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.peer_log import PeerLog
from flare_runtime.status import StatusCode

if TYPE_CHECKING:
    from types import ModuleType

logger = logging.getLogger("flare_runtime.auth")

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


def cache_seconds(cache_control: str | None, default: float, low: float, high: float) -> float:
    """How long a response with this ``Cache-Control`` header may be used, clamped to [low, high].

    ``max-age=N`` gives N; ``no-cache`` / ``no-store`` give `low`; neither, `default`.
    """
    if cache_control:
        if _NO_CACHE.search(cache_control):
            return low
        found = _MAX_AGE.search(cache_control)
        if found:
            return min(high, max(low, float(found.group(1))))
    return min(high, max(low, default))


class JWKSKeys:
    """The signing keys published at a JWKS `url`, fetched and cached (module docstring).

    `algorithms`: the JWS algorithms tokens may use (asymmetric only).
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: Iterable[str],
        default_ttl: float = 300.0,
        min_ttl: float = 30.0,
        max_ttl: float = 86400.0,
        refetch_interval: float = 30.0,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
        max_keys: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self._httpx: ModuleType = importlib.import_module("httpx")
        except ImportError:
            raise ConfigurationError(
                "JWTAuth.from_jwks needs httpx: pip install 'flare-rpc[jwks]'"
            ) from None
        if not url.startswith(("https://", "http://")):
            raise ConfigurationError(f"JWKS URL must be http(s)://, got {url!r}")
        import jwt  # noqa: PLC0415 -- see JWTAuth.__init__

        self._jwt: ModuleType = jwt
        self.url = url
        self._algorithms = frozenset(algorithms)
        self._default_ttl = default_ttl
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_keys = max_keys
        self._clock = clock
        self._keys: dict[str | None, tuple[Any, str | None]] = {}
        """kid (None: a key without one) -> (the public key, the ``alg`` its JWK declares)."""
        self._fetched = False
        self._expires = 0.0
        self._last_attempt = -float("inf")
        self._fetching: asyncio.Future[None] | None = None
        self._client: Any = None
        self.fetches = 0
        """How many fetches were started (tests and metrics)."""
        self._log = PeerLog()

    async def close(self) -> None:
        """Close the HTTP client (its pooled connection)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def signing_key(self, kid: str | None) -> tuple[Any, str | None]:
        """The key to verify a token whose header names `kid` (None: no ``kid``), and the
        algorithm its JWK declares (None: any of `algorithms` that fits the key).

        Raises ``RpcError(UNAUTHENTICATED)`` for a key the set does not hold,
        ``RpcError(UNAVAILABLE)`` when no key set could ever be fetched.
        """
        now = self._clock()
        if now >= self._expires and now - self._last_attempt >= self._min_retry():
            await self._refresh()
        key = self._lookup(kid)
        if key is None and now - self._last_attempt >= self._refetch_interval:
            await self._refresh()  # rotation: a new key may have been published
            key = self._lookup(kid)
        if key is not None:
            return key
        if not self._fetched:
            raise RpcError(StatusCode.UNAVAILABLE, "cannot verify tokens: signing keys unavailable")
        if kid is None:
            raise RpcError(
                StatusCode.UNAUTHENTICATED,
                f"invalid token: no 'kid' in its header, and the key set holds {len(self._keys)} "
                "keys",
            )
        raise RpcError(StatusCode.UNAUTHENTICATED, f"invalid token: unknown signing key {kid!r}")

    def _min_retry(self) -> float:
        # Before the first success, and after failures: not more often than refetches.
        return self._refetch_interval if self._last_attempt > -float("inf") else 0.0

    def _lookup(self, kid: str | None) -> tuple[Any, str | None] | None:
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            return self._keys.get(None)
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        """Fetch the set once (callers arriving meanwhile share the fetch)."""
        if self._fetching is not None:
            await asyncio.shield(self._fetching)
            return
        loop = asyncio.get_running_loop()
        self._fetching = done = loop.create_future()
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            keys, ttl = await self._fetch()
        except Exception as error:
            self._log.log(logger, logging.WARNING, "cannot fetch JWKS from %s: %s", self.url, error)
            if self._fetched:  # keep the old keys; try again after refetch_interval
                self._expires = self._last_attempt + self._refetch_interval
        else:
            self._keys = keys
            self._fetched = True
            self._expires = self._clock() + ttl
        finally:
            self._fetching = None
            done.set_result(None)

    async def _fetch(self) -> tuple[dict[str | None, tuple[Any, str | None]], float]:
        httpx = self._httpx
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                headers={"accept": "application/json"},
            )
        async with asyncio.timeout(self._timeout):
            async with self._client.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP status {response.status_code}")
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self._max_bytes:
                    raise ValueError(f"document of {length} bytes, the limit is {self._max_bytes}")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise ValueError(f"document over {self._max_bytes} bytes")
                cache_control = response.headers.get("cache-control")
        ttl = cache_seconds(cache_control, self._default_ttl, self._min_ttl, self._max_ttl)
        return self._parse(bytes(body)), ttl

    def _parse(self, body: bytes) -> dict[str | None, tuple[Any, str | None]]:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("not JSON") from None
        found = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(found, list):
            raise ValueError("not a JWK set (no 'keys' list)")
        if len(found) > self._max_keys:
            raise ValueError(f"{len(found)} keys, the limit is {self._max_keys}")
        keys: dict[str | None, tuple[Any, str | None]] = {}
        for jwk in found:
            key = self._signing_key(jwk)
            if key is not None:
                keys.setdefault(jwk.get("kid"), key)
        return keys

    def _signing_key(self, jwk: object) -> tuple[Any, str | None] | None:
        """One entry's (public key, declared ``alg``), or None when it is not a usable
        signing key."""
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            return None
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            return None
        if jwk.get("kty") == "oct":
            return None  # a shared secret has no place in a published key set
        algorithm = jwk.get("alg")
        if algorithm is not None and algorithm not in self._algorithms:
            return None
        try:
            return self._jwt.PyJWK(jwk).key, algorithm
        except Exception:  # any malformed key: skip it, keep the others
            return None
