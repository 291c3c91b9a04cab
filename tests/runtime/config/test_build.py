"""Sections become the parts they describe (flare_runtime.config.build): ``[auth]`` the auth
plugin, ``[im.push]`` the offline push webhook (end to end through ``flare serve``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2, im_pb2

from flare_runtime.auth import JWTAuth, issue_jwt
from flare_runtime.config.build import auth_plugin, push_settings
from flare_runtime.config.load import ConfigError
from flare_runtime.config.schema import AuthSection, ImPushSection
from flare_runtime.im.client import ImClient
from flare_runtime.im.push import PushPreview
from flare_runtime.im.webhook import SIGNATURE_HEADER, WebhookProvider, verify_signature
from flare_runtime.metadata import Metadata
from flare_runtime.testing.operated import Operated
from flare_runtime.testing.timing import UNIT, wait_until
from tests.http_server import LocalHTTPServer, Response

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


WEBHOOK_SECRET = "whsec-config-0123456789abcdef"


def test_no_webhook_url_means_no_offline_push() -> None:
    assert push_settings(ImPushSection()) is None


def test_a_webhook_section_becomes_push_settings(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(WEBHOOK_SECRET + "\n")
    settings = push_settings(
        ImPushSection(
            webhook_url="https://push.example.com/hook",
            webhook_secret_file=str(tmp_path / "secret"),
            platforms=["mobile", "Tablet"],
            preview="content_type",
            exclude=["bot"],
        )
    )
    assert isinstance(settings.provider, WebhookProvider)
    assert settings.platforms == {im_pb2.PLATFORM_MOBILE, im_pb2.PLATFORM_TABLET}
    assert settings.preview is PushPreview.CONTENT_TYPE
    assert settings.exclude == {"bot"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            ImPushSection(webhook_url="https://push.example.com/hook"),
            "im.push: the webhook needs one of webhook_secret, webhook_secret_file",
        ),
        (
            ImPushSection(
                webhook_url="https://push.example.com/hook",
                webhook_secret=WEBHOOK_SECRET,
                webhook_secret_file="secret",
            ),
            "im.push: the webhook needs one of",
        ),
        (
            ImPushSection(webhook_url="https://push.example.com/hook", webhook_secret="short"),
            "im.push: webhook secret must be at least 16 bytes",
        ),
        (
            ImPushSection(webhook_url="ftp://push.example.com/hook", webhook_secret=WEBHOOK_SECRET),
            "im.push: webhook URL must be http(s)://",
        ),
        (
            ImPushSection(
                webhook_url="https://push.example.com/hook",
                webhook_secret_file="/no/such/secret",
            ),
            "im.push.webhook_secret_file: /no/such/secret: No such file or directory",
        ),
    ],
)
def test_a_bad_webhook_section_is_one_line_naming_the_key(
    section: ImPushSection, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        push_settings(section)
    assert str(raised.value).startswith(message)


async def test_flare_serve_pushes_to_the_webhook_its_file_names(tmp_path: Path) -> None:
    """``flare serve`` with ``[im.push]`` in flare.toml: a message to a member with no live
    session reaches the webhook, signed with the configured key, with a text preview."""
    receiver = LocalHTTPServer(lambda request: Response(204)).start()
    config = f"""\
listen = {{websocket = "127.0.0.1:0"}}
[auth]
jwt_secret = "{SECRET}"
[im]
enabled = true
database = "im.db"
keys = {{1 = "{base64.b64encode(bytes(range(32))).decode()}"}}
[im.push]
webhook_url = "{receiver.url}/hook"
webhook_secret = "{WEBHOOK_SECRET}"
preview = "text"
"""
    try:
        with Operated.start(tmp_path, config, metrics=False) as served:
            url = f"ws://127.0.0.1:{served.ports['websocket']}"
            alice = ImClient(url, token=issue_jwt(SECRET, "alice"), device_id="laptop")
            await alice.start()
            try:
                direct = await alice.im.open_direct(im_pb2.OpenDirectRequest(peer_user_id="bob"))
                text = content_pb2.Content(text=content_pb2.TextContent(text="are you there?"))
                await alice.send(direct.conversation_id, text)
                await wait_until(lambda: receiver.requests, 10 * UNIT)
            finally:
                await alice.close()
            assert served.stop() == 0
        (request,) = receiver.requests
        assert request.path == "/hook"
        assert verify_signature(
            WEBHOOK_SECRET.encode(), request.headers[SIGNATURE_HEADER], request.body
        )
        (notification,) = json.loads(request.body)["notifications"]
        assert (notification["user_id"], notification["sender_user_id"]) == ("bob", "alice")
        assert notification["preview"] == "are you there?"
    finally:
        await receiver.stopped()
