"""The `Server` a configuration describes: ``flare serve`` with no Python glue.

`build_server` makes, from a `FlareConfig`:

* the services: those ``target`` names (a list of handlers, or a callable
  returning one, sync or async), the IM service when ``[im] enabled`` (its
  `ImCore` on SQLite or PostgreSQL, with a Redis cluster node when
  ``[broker] url`` is set), the admin service when ``[admin] enabled``;
* the auth plugin (``[auth]``), the `ServerOptions` (``[limits]``,
  ``[transports.quic]``), reflection (``[serve] reflection``);
* lifecycle hooks: the IM core (and its cluster node) started before the
  listeners and closed after they drained; the metrics endpoint
  (``[metrics] listen``) likewise; the access log (``[logging] access_log``).

``target`` may also name a whole `Server` (or a callable returning one): it
is then served as it is, with the built-in parts added to it; the keys that
would build a second server's auth and options (``[auth]``, ``[limits]``,
``[transports]``) must then be left unset, and a `ConfigError` says so.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
import inspect
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_runtime.auth import AuthPlugin, JWTAuth
from flare_runtime.config.load import ConfigError, LoadedConfig
from flare_runtime.config.schema import AuthSection, FlareConfig, ImPushSection
from flare_runtime.errors import ConfigurationError
from flare_runtime.server import Server, ServerOptions, TLSFiles

if TYPE_CHECKING:
    from flare_runtime.cluster.node import ClusterNode
    from flare_runtime.im.core import ImCore
    from flare_runtime.observability.metrics import MetricsEndpoint

logger = logging.getLogger("flare_runtime.config")


def tls_files(config: FlareConfig) -> TLSFiles | None:
    """The listeners' TLS pair, or None; ConfigError when only one half is given."""
    cert, key = config.tls.cert_file, config.tls.key_file
    if bool(cert) != bool(key):
        raise ConfigError("tls: give both cert_file and key_file (--tls-cert and --tls-key)")
    return TLSFiles(cert, key) if cert and key else None


def server_options(config: FlareConfig) -> ServerOptions:
    """``[limits]`` with ``[transports.quic]`` as its QUIC settings."""
    return dataclasses.replace(config.limits, transports={"quic": config.transports.quic})


def auth_plugin(section: AuthSection) -> AuthPlugin | None:
    """The auth plugin ``[auth]`` describes, or None when it names no key."""
    given = [
        name
        for name in ("jwt_secret", "jwt_secret_file", "jwt_public_key_file", "jwks_url")
        if getattr(section, name)
    ]
    if not given:
        return None
    if len(given) > 1:
        raise ConfigError(f"auth: give one of {', '.join(given)}, not several")
    options: dict[str, Any] = {
        "audience": section.audience,
        "issuer": section.issuer,
        "leeway": section.leeway,
    }
    if section.algorithms is not None:
        options["algorithms"] = section.algorithms
    if section.jwks_url:
        try:
            return JWTAuth.from_jwks(section.jwks_url, **options)
        except ConfigurationError as error:
            raise ConfigError(f"auth.jwks_url: {error}") from None
        except ImportError:
            raise ConfigError("auth.jwks_url: run: pip install 'flare-rpc[jwks]'") from None
    options.setdefault("algorithms", ["HS256"])
    if section.jwt_secret:
        key: Any = section.jwt_secret
    else:
        name = "jwt_secret_file" if section.jwt_secret_file else "jwt_public_key_file"
        text = read_key_file(f"auth.{name}", getattr(section, name))
        key = text.strip() if section.jwt_secret_file else text
    try:
        return JWTAuth(key, **options)
    except ConfigurationError as error:
        raise ConfigError(f"auth: {error}") from None


def read_key_file(key: str, path: str) -> str:
    """The text of the file configuration `key` names; a one-line `ConfigError` naming the key
    and the file when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{key}: {path}: {error.strerror or error}") from None


async def load_target(target: str) -> Any:
    """Import ``module:attr`` (cwd and ./generated on the path); call it if callable
    (awaiting what an async one returns). A `Server`, or an iterable of services."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"target: expected module:attr, got {target!r}")
    for path in (Path.cwd() / "generated", Path.cwd()):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    module = importlib.import_module(module_name)
    value = getattr(module, attribute, None)
    if value is None:
        raise ConfigError(f"target: {module_name} has no attribute {attribute!r}")
    if not isinstance(value, Server) and callable(value):
        value = value()
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, Server):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(
            f"target: {target} is neither a flare_runtime.Server nor a list of services"
        )
    return list(value)


@dataclass(frozen=True, slots=True)
class Built:
    """What `build` made: the server, and its metrics endpoint when configured."""

    server: Server
    metrics: MetricsEndpoint | None = None


async def build_server(loaded: LoadedConfig) -> Server:
    """The `Server` `loaded` describes, its parts not started yet (its startup hooks do)."""
    return (await build(loaded)).server


async def build(loaded: LoadedConfig) -> Built:
    """`build_server`, also returning the metrics endpoint (its port is known once the
    server started)."""
    config = loaded.config
    target = await load_target(config.target) if config.target else []
    if isinstance(target, Server):
        clashing = [
            key for key in loaded.sources if key.startswith(("auth.", "limits.", "transports."))
        ]
        if clashing:
            raise ConfigError(
                f"target: {config.target} is a whole Server, which has its own auth and "
                f"options; these keys would be ignored: {', '.join(sorted(clashing))} "
                "(make the target a list of services to use them)"
            )
        server = target
    else:
        server = Server(
            target,
            auth=auth_plugin(config.auth),
            options=server_options(config),
            reflection=config.serve.reflection,
        )
    core: ImCore | None = None
    if config.im.enabled:
        core = _add_im(server, config)
    if config.admin.enabled:
        from flare_runtime.admin.service import AdminService  # noqa: PLC0415

        if server.auth is None:
            raise ConfigError(
                "admin.enabled: the admin API needs callers with the flare.admin scope, "
                "so an auth plugin: configure [auth] (e.g. jwt_secret_file)"
            )

        server.add(AdminService(server, im=core))
    if config.logging.access_log:
        from flare_runtime.observability.logs import access_log  # noqa: PLC0415

        server.stats.set_access_log(access_log())
    metrics: MetricsEndpoint | None = None
    if config.metrics.listen:
        from flare_runtime.observability.metrics import serve_metrics  # noqa: PLC0415

        metrics = serve_metrics(
            server, config.metrics.listen, im=core, interval=config.metrics.publish_interval
        )
    return Built(server, metrics)


def _add_im(server: Server, config: FlareConfig) -> ImCore:
    from flare_runtime.im.core import DevicePolicy, ImCore  # noqa: PLC0415
    from flare_runtime.im.service import ImService  # noqa: PLC0415

    section = config.im
    keyring = _keyring(section.keys, section.active_key)
    database = section.database
    postgres = database.startswith(("postgresql://", "postgres://"))
    storage: Any
    if postgres:
        from flare_runtime.im.storage.postgres import PostgresStorage  # noqa: PLC0415

        storage = PostgresStorage(database, keyring, schema=section.schema)
    else:
        from flare_runtime.im.storage import SqliteStorage  # noqa: PLC0415

        storage = SqliteStorage(database, keyring)
    node: ClusterNode | None = None
    if config.broker.url:
        if not postgres:
            raise ConfigError(
                "broker.url: the IM on a cluster needs PostgreSQL storage "
                "(set im.database to a postgresql:// DSN)"
            )
        from flare_runtime.cluster.node import ClusterNode  # noqa: PLC0415
        from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: PLC0415

        node = ClusterNode(RedisBroker(config.broker.url), namespace=config.broker.namespace)
    core = ImCore(
        storage,
        policy=DevicePolicy(section.device_policy),
        limits=section.limits,
        cluster=node,
        push=push_settings(section.push),
    )
    server.add(ImService(core))
    server.add_push_types(ImService.PUSH_TYPES)
    server.parts.append(core)
    rooms = list(section.rooms)

    async def start(_: Server) -> None:
        await core.start()
        for room in rooms:
            await core.ensure_room(room, room)

    async def close(_: Server) -> None:
        await core.close()
        if node is not None:
            await node.close()

    server.on_startup.append(start)
    server.on_shutdown.append(close)
    return core


def push_settings(section: ImPushSection) -> Any:
    """The `PushSettings` ``[im.push]`` describes (a `WebhookProvider`), or None without a URL."""
    secrets = [name for name in ("webhook_secret", "webhook_secret_file") if getattr(section, name)]
    if not section.webhook_url:
        if secrets:
            raise ConfigError(f"im.push.{secrets[0]}: given without im.push.webhook_url")
        return None
    from flare.im.v1 import im_pb2  # noqa: PLC0415

    from flare_runtime.im.push import PushPreview, PushSettings  # noqa: PLC0415
    from flare_runtime.im.webhook import WebhookProvider  # noqa: PLC0415

    if len(secrets) != 1:
        raise ConfigError(
            "im.push: the webhook needs one of webhook_secret, webhook_secret_file "
            "(the key its requests are signed with)"
        )
    secret = section.webhook_secret
    if section.webhook_secret_file:
        secret = read_key_file("im.push.webhook_secret_file", section.webhook_secret_file).strip()
    assert secret is not None
    platforms: set[int] = set()
    for name in section.platforms:
        try:
            platforms.add(im_pb2.Platform.Value(f"PLATFORM_{name.upper()}"))
        except ValueError:
            raise ConfigError(
                f"im.push.platforms: unknown platform {name!r} (web, desktop, mobile or tablet)"
            ) from None
    try:
        provider = WebhookProvider(
            section.webhook_url,
            secret,
            max_queue=section.max_queue,
            max_attempts=section.max_attempts,
            timeout=section.timeout,
        )
    except ConfigurationError as error:
        raise ConfigError(f"im.push: {error}") from None
    return PushSettings(
        provider,
        platforms=frozenset(platforms),
        preview=PushPreview(section.preview),
        preview_chars=section.preview_chars,
        exclude=frozenset(section.exclude),
    )


def _keyring(keys: dict[str, str], active: int | None) -> Any:
    from flare_runtime.im.storage import KeyRing  # noqa: PLC0415

    if not keys:
        raise ConfigError(
            "im.keys: the IM needs at least one message key, e.g. "
            'keys = {1 = "<base64 of 32 random bytes>"} (or FLARE_IM_KEYS=1=<base64>)'
        )
    ring: dict[int, bytes] = {}
    for name, text in keys.items():
        if not name.isdigit() or int(name) <= 0:
            raise ConfigError(f"im.keys: key ids are positive integers, got {name!r}")
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"im.keys.{name}: not base64") from None
        if len(key) not in (16, 24, 32):
            raise ConfigError(f"im.keys.{name}: a key is 16, 24 or 32 bytes, got {len(key)}")
        ring[int(name)] = key
    current = active if active is not None else max(ring)
    if current not in ring:
        raise ConfigError(f"im.active_key: {current} is not in im.keys")
    return KeyRing(ring, current)
