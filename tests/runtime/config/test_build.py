"""``[auth]`` becomes the auth plugin it describes (flare_runtime.config.build)."""

from __future__ import annotations

import pytest

from flare_runtime.auth import JWTAuth, issue_jwt
from flare_runtime.config.build import auth_plugin
from flare_runtime.config.load import ConfigError
from flare_runtime.config.schema import AuthSection
from flare_runtime.metadata import Metadata

SECRET = "flare-config-test-signing-key-0123456789abcdef"


def test_no_key_means_no_auth() -> None:
    assert auth_plugin(AuthSection()) is None


async def test_a_secret_verifies_hs256_tokens_when_algorithms_is_unset() -> None:
    plugin = auth_plugin(AuthSection(jwt_secret=SECRET))
    assert isinstance(plugin, JWTAuth)
    metadata = Metadata({"authorization": f"Bearer {issue_jwt(SECRET, 'alice')}"})
    principal = await plugin.authenticate(metadata, "127.0.0.1:1")
    assert principal is not None and principal.subject == "alice"


def test_jwks_url_with_algorithms_unset_takes_the_asymmetric_defaults() -> None:
    plugin = auth_plugin(AuthSection(jwks_url="http://127.0.0.1:9/jwks.json"))
    assert isinstance(plugin, JWTAuth)


def test_jwks_url_with_an_hs_algorithm_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^auth\.jwks_url: .*asymmetric"):
        auth_plugin(AuthSection(jwks_url="http://127.0.0.1:9/jwks.json", algorithms=["HS256"]))


def test_two_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="give one of jwt_secret, jwks_url"):
        auth_plugin(AuthSection(jwt_secret=SECRET, jwks_url="http://127.0.0.1:9/jwks.json"))
