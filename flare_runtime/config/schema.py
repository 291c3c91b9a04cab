"""The configuration's schema: every key ``flare serve`` reads, its type, default and doc.

The schema is a tree of dataclasses rooted at `FlareConfig`. Flare's own
sections (`ListenSection`, `AuthSection`...) document each field in its
metadata (`setting`); the runtime's option classes are embedded as they are
(`ServerOptions` as ``[limits]``, `ProtocolConfig` as ``[limits.protocol]``,
`QuicServerSettings` as ``[transports.quic]``, `ImLimits` as ``[im.limits]``),
so a knob added to one of them is a configuration key at once, documented by
its attribute docstring. `keys` walks the tree into flat `Key` entries: what
the loader checks a file against, what the environment is read for, and what
docs/operations.md is generated from.

Fields of a type a file cannot spell (a ticket store object, the per-transport
settings map) are not keys; they stay Python-only.
"""

# `setting(...)` returns a dataclass field (with its docs in the metadata): RUF009 cannot tell.
# ruff: noqa: RUF009

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from flare_runtime.im.limits import ImLimits
from flare_runtime.server import ServerOptions

ENV_PREFIX = "FLARE_"
"""Environment variables ``FLARE_<TABLE>_<KEY>`` override the file (dots become ``_``)."""

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
Secret = Literal["value", "url"]
"""How a secret is masked: the whole value, or the password of a URL."""


def setting(
    default: Any,
    doc: str,
    *,
    secret: Secret | None = None,
    flag: str | None = None,
    factory: Any = None,
) -> Any:
    """A documented configuration field (`secret`: how `--print-config` masks it)."""
    metadata = {"doc": doc, "secret": secret, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ------------------------------------------------------------------ Flare's own sections


@dataclass(frozen=True, slots=True)
class ServeSection:
    """How ``flare serve`` runs the server."""

    workers: int | Literal["auto"] = setting(
        1,
        'Worker processes sharing the ports (``"auto"``: one per CPU). Above 1, a supervisor '
        "forks them (docs/cluster.md, Workers).",
        flag="--workers",
    )
    grace: float = setting(
        10.0, "Seconds calls in flight may take to finish on shutdown.", flag="--grace"
    )
    uvloop: bool = setting(False, "Run the event loop on uvloop.", flag="--uvloop")
    preload: list[str] = setting(
        None,
        "With workers: modules the supervisor imports before forking (shared memory).",
        flag="--preload",
        factory=list,
    )
    reflection: bool = setting(
        True, "Serve the reflection service (what ``flare list/describe/call`` use)."
    )

    def __post_init__(self) -> None:
        if self.workers != "auto" and self.workers < 1:
            raise ValueError(f'workers must be at least 1 (or "auto"), got {self.workers}')
        if not self.grace >= 0:
            raise ValueError(f"grace must be zero or more seconds, got {self.grace}")


@dataclass(frozen=True, slots=True)
class TlsSection:
    """TLS 1.3 for every listener (QUIC always needs it)."""

    cert_file: str | None = setting(None, "PEM certificate chain.", flag="--tls-cert")
    key_file: str | None = setting(None, "PEM private key.", flag="--tls-key")


@dataclass(frozen=True, slots=True)
class AuthSection:
    """Who may call: JSON Web Tokens given at connect or per call (`JWTAuth`).

    No key given: no auth plugin (every principal is anonymous; routes that
    need authentication fail UNAUTHENTICATED).
    """

    jwt_secret: str | None = setting(None, "HMAC key of HS256/384/512 tokens.", secret="value")
    jwt_secret_file: str | None = setting(None, "A file holding the HMAC key (one line).")
    jwt_public_key_file: str | None = setting(
        None, "PEM public key of RS*/ES*/EdDSA tokens (set ``algorithms`` to match)."
    )
    jwks_url: str | None = setting(
        None, "URL of a JSON Web Key Set to verify tokens with (keys cached, rotation followed)."
    )
    algorithms: list[str] | None = setting(
        None,
        "Accepted signing algorithms (unset: HS256 with a secret or public key, RS256 and ES256 "
        "with ``jwks_url``).",
    )
    audience: str | None = setting(None, "Required ``aud`` claim.")
    issuer: str | None = setting(None, "Required ``iss`` claim.")
    leeway: float = setting(0.0, "Seconds of clock skew allowed on ``exp``.")


@dataclass(frozen=True, slots=True)
class ImPushSection:
    """Offline push (docs/push-providers.md): each message stored for a member with no live
    session is POSTed, HMAC-signed and batched, to a webhook that notifies their devices."""

    webhook_url: str | None = setting(
        None,
        "``https://`` URL the notifications are POSTed to (unset: no offline push).",
        secret="url",
    )
    webhook_secret: str | None = setting(
        None,
        "Key of the requests' ``Flare-Signature`` (HMAC-SHA256; at least 16 bytes).",
        secret="value",
    )
    webhook_secret_file: str | None = setting(None, "A file holding that key (one line).")
    platforms: list[str] = setting(
        None,
        "Platforms a push reaches (``web``, ``desktop``, ``mobile``, ``tablet``): a member "
        "with no live session on one of them is notified even when online elsewhere. "
        "Empty: only members with no live session at all.",
        factory=list,
    )
    preview: Literal["none", "content_type", "text"] = setting(
        "none",
        "What a notification reveals of the message: nothing, its content type, or the first "
        "``preview_chars`` characters of a text (sent to the webhook in clear).",
    )
    preview_chars: int = setting(100, "Characters of a text preview.")
    exclude: list[str] = setting(
        None, "User ids never notified (bots, system users).", factory=list
    )
    max_queue: int = setting(
        10_000, "Notifications waiting for the webhook; beyond it the oldest is dropped."
    )
    max_attempts: int = setting(
        8, "Tries of one request (a failure, a timeout, 408, 429 or 5xx is retried)."
    )
    timeout: float = setting(10.0, "Seconds one request may take up to the answer's headers.")


@dataclass(frozen=True, slots=True)
class ImSection:
    """The instant-messaging service (``flare.im.v1.ImService``, docs/im.md), built in."""

    enabled: bool = setting(False, "Serve the IM service.")
    database: str = setting(
        "flare-im.db",
        "A SQLite file (one process), or a ``postgresql://`` DSN (workers, cluster).",
        secret="url",
    )
    schema: str = setting("flare_im", "PostgreSQL schema of the IM's tables.")
    keys: dict[str, str] = setting(
        None,
        'Message-body keys by id: ``{1 = "<base64 of 32 bytes>"}`` (AES-256-GCM; '
        "bodies are sealed with ``active_key``, opened with any).",
        secret="value",
        factory=dict,
    )
    active_key: int | None = setting(None, "The key id that seals new bodies (default: highest).")
    device_policy: Literal["allow_all", "one_per_platform", "one_in_total"] = setting(
        "allow_all", "How many sessions one user may hold (docs/im.md, Sessions)."
    )
    rooms: list[str] = setting(
        None, "Rooms created at startup when missing (id = title).", factory=list
    )
    limits: ImLimits = field(default_factory=ImLimits)
    push: ImPushSection = field(default_factory=ImPushSection)


@dataclass(frozen=True, slots=True)
class BrokerSection:
    """The cluster broker linking IM nodes (docs/cluster.md); needs PostgreSQL storage."""

    url: str | None = setting(
        None, "``redis://`` URL of the broker; unset: no cluster.", secret="url"
    )
    namespace: str = setting("flare", "Channel prefix: clusters sharing a Redis stay apart.")


@dataclass(frozen=True, slots=True)
class MetricsSection:
    """Prometheus metrics and health probes over HTTP (docs/operations.md, Metrics)."""

    listen: str | None = setting(
        None,
        "HOST:PORT of the HTTP endpoint serving /metrics, /healthz and /readyz; unset: off.",
        flag="--metrics",
    )
    publish_interval: float = setting(
        1.0,
        "With workers: seconds between each worker's publication of its counters "
        "(a scrape sees the others' as of their last one).",
    )

    def __post_init__(self) -> None:
        if not 0 < self.publish_interval <= 3600:
            raise ValueError(
                f"publish_interval must be above 0 and at most 3600 s, got {self.publish_interval}"
            )


@dataclass(frozen=True, slots=True)
class LoggingSection:
    """The process's log (stdlib `logging`, on stderr)."""

    level: LogLevel = setting("info", "Least severe level written.", flag="--log-level")
    format: LogFormat = setting(
        "text",
        "``text`` (one line per record) or ``json`` (one object per line).",
        flag="--log-format",
    )
    access_log: bool = setting(
        False, "One line per call (route, status, duration, peer, principal).", flag="--access-log"
    )


@dataclass(frozen=True, slots=True)
class AdminSection:
    """The admin service ``flare.admin.v1.Admin`` (``flare admin``), served on the listeners."""

    enabled: bool = setting(
        False, "Serve the admin service (every call needs the ``flare.admin`` scope)."
    )


def _quic_settings_class() -> type[Any]:
    from flare_runtime.transports.quic_settings import QuicServerSettings  # noqa: PLC0415

    return QuicServerSettings


def _default_quic_settings() -> Any:
    return _quic_settings_class()()


@dataclass(frozen=True, slots=True)
class TransportsSection:
    """Settings of individual transports (``ServerOptions.transports``)."""

    quic: Any = field(default_factory=_default_quic_settings)


@dataclass(frozen=True, slots=True)
class FlareConfig:
    """Everything ``flare serve`` takes (docs/operations.md is generated from it)."""

    target: str | None = setting(
        None,
        "``module:attr`` of your own services: a list of handlers (or a callable returning "
        "one), served beside the built-in parts; or a whole `Server`.",
    )
    listen: dict[str, str] = setting(
        None,
        "Transport name -> HOST:PORT: ``websocket``, ``quic``, ``grpc`` or a plugin's "
        "(``:8080`` listens on every interface; port 0 picks one).",
        factory=dict,
    )
    serve: ServeSection = field(default_factory=ServeSection)
    tls: TlsSection = field(default_factory=TlsSection)
    auth: AuthSection = field(default_factory=AuthSection)
    limits: ServerOptions = field(default_factory=ServerOptions)
    transports: TransportsSection = field(default_factory=TransportsSection)
    im: ImSection = field(default_factory=ImSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    admin: AdminSection = field(default_factory=AdminSection)


FOREIGN_TABLES = frozenset({"gen", "schema"})
"""Tables of flare.toml other commands own (``flare gen``, ``flare schema``): not checked."""


# ------------------------------------------------------------------ walking the tree


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key: where it lives, what it holds, how it is documented."""

    path: str
    """Dotted, as in the file: ``limits.protocol.keepalive_interval``."""
    type: Any
    """The field's type (resolved annotation)."""
    default: Any
    doc: str
    secret: Secret | None = None
    flag: str | None = None

    @property
    def env(self) -> str:
        """The environment variable that overrides it."""
        return ENV_PREFIX + self.path.replace(".", "_").upper()

    @property
    def table(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the schema (a dataclass)."""

    path: str
    cls: type[Any]
    doc: str


def table_class(path: str, annotation: Any) -> type[Any] | None:
    """The dataclass a field of `annotation` at `path` holds, or None for a plain value."""
    if path == "transports.quic":
        return _quic_settings_class()
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation
    return None


def tables(root: type[Any] = FlareConfig, prefix: str = "") -> Iterator[Table]:
    """Every table, depth first, the root ("") first."""
    yield Table(prefix, root, _class_doc(root))
    hints = type_hints(root)
    for item in dataclasses.fields(root):
        path = f"{prefix}.{item.name}" if prefix else item.name
        cls = table_class(path, hints[item.name])
        if cls is not None:
            yield from tables(cls, path)


def keys(root: type[Any] = FlareConfig, prefix: str = "") -> Iterator[Key]:
    """Every key of the schema, in declaration order."""
    hints = type_hints(root)
    docs = attribute_docs(root)
    instance = root()
    for item in dataclasses.fields(root):
        path = f"{prefix}.{item.name}" if prefix else item.name
        annotation = hints[item.name]
        cls = table_class(path, annotation)
        if cls is not None:
            yield from keys(cls, path)
            continue
        if not supported(annotation):
            continue
        yield Key(
            path=path,
            type=annotation,
            default=getattr(instance, item.name),
            doc=item.metadata.get("doc") or docs.get(item.name, ""),
            secret=item.metadata.get("secret"),
            flag=item.metadata.get("flag"),
        )


def supported(annotation: Any) -> bool:
    """Whether a file can spell a value of `annotation`."""
    if annotation in (str, int, float, bool):
        return True
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(a is type(None) or supported(a) for a in arguments)
    if origin is list:
        return arguments == (str,)
    if origin is dict:
        return arguments == (str, str)
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


_HINTS: dict[type[Any], dict[str, Any]] = {}
_DOCS: dict[type[Any], dict[str, str]] = {}


def type_hints(cls: type[Any]) -> dict[str, Any]:
    """A dataclass's resolved field annotations (cached)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _class_doc(cls: type[Any]) -> str:
    return inspect.cleandoc(cls.__doc__ or "")


def attribute_docs(cls: type[Any]) -> dict[str, str]:
    """A dataclass's attribute docstrings (the string after each field), by field name."""
    docs = _DOCS.get(cls)
    if docs is None:
        docs = _DOCS[cls] = _read_attribute_docs(cls)
    return docs


def _read_attribute_docs(cls: type[Any]) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    body = ast.parse(source).body[0]
    if not isinstance(body, ast.ClassDef):
        return found
    previous: str | None = None
    for node in body.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            previous = node.target.id
            continue
        if (
            previous is not None
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found[previous] = inspect.cleandoc(node.value.value)
        previous = None
    return found
