"""The process's log: stdlib `logging`, as text or JSON lines, each record with its call.

::

    configure_logging("info", "json", secrets=["my-hmac-key"])

Every record written by a handler of this module's making carries, when
known, the call it belongs to -- ``connection_id``, ``transport``, ``peer``,
``route``, ``principal`` (the subject) -- read from the call the running task
serves (`flare_runtime.context.current_call`) at the moment a record is
*written*: nothing is formatted or looked up for records a level filters out,
and serving a call costs one context-variable set (done by the dispatcher).
Records that say so themselves (``extra={...}``: the access log, Flare's own
lines about a connection) keep their own values, and add ``status`` and
``duration_ms``.

Text lines: ``2026-11-28 10:00:00,123 INFO flare_runtime.access: websocket
/chat.v1.Chat/Send OK 0.210 ms peer=... principal=alice [conn=7]``. JSON
lines: one object per record with ``time``, ``level``, ``logger``,
``message``, the fields above that are known, and ``exception`` (the
traceback) when there is one.

Secrets never reach the output: the formatter replaces every configured
secret (the JWT key, IM keys, a DSN's password: `configure_logging`'s
``secrets``) and anything shaped like a bearer token or a JWT with ``***``,
in the message and the traceback alike. Lines a client can cause go through
`flare_runtime.peer_log.PeerLog`, which rate-limits them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from flare_runtime.context import CURRENT_CALL
from flare_runtime.stats import AccessLog, CallMeter, CallRecord
from flare_runtime.status import StatusCode

ACCESS_LOGGER = "flare_runtime.access"
"""The logger of the access log (one INFO line per call)."""

CALL_FIELDS = ("connection_id", "transport", "peer", "route", "principal")
"""What a record says of its call, when it is known."""
EXTRA_FIELDS = ("status", "duration_ms")
"""What the access log adds."""

_TOKEN = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"  # an authorization header value
    r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT
)
MASK = "***"


class CallFields(logging.Filter):
    """Adds the fields of the call the running task serves to each record written.

    Attached to handlers (not loggers), so it runs only for records that are
    written. A field the record already has (``extra=``) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = CURRENT_CALL.get()
        if context is None:
            return True
        values = record.__dict__
        if "route" not in values:
            values["route"] = context.route.path
        if "transport" not in values:
            values["transport"] = context.transport.value
        if "peer" not in values:
            values["peer"] = context.peer
        if "principal" not in values:
            principal = context.principal
            values["principal"] = principal.subject if principal is not None else None
        if "connection_id" not in values:
            values["connection_id"] = context.connection_id
        return True


class Redactor:
    """Replaces secrets and token-shaped text with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _TOKEN.sub(MASK, text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [conn=... route=... principal=...]``, redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        values = record.__dict__
        if values.get("route") is not None and record.name != ACCESS_LOGGER:
            tags = [
                f"{label}={values[name]}"
                for name, label in (
                    ("connection_id", "conn"),
                    ("route", "route"),
                    ("principal", "principal"),
                )
                if values.get(name)
            ]
            text = f"{text} [{' '.join(tags)}]"
        elif values.get("connection_id") and record.name == ACCESS_LOGGER:
            text = f"{text} [conn={values['connection_id']}]"
        return self.redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring), redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        values = record.__dict__
        document: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for name in (*CALL_FIELDS, *EXTRA_FIELDS):
            value = values.get(name)
            if value is not None and value != "":
                document[name] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            document["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(document, ensure_ascii=False, default=str)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(
    level: str = "info",
    format: str = "text",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every record at `level` or above to `stream` (stderr) as `format` lines.

    Replaces the root logger's handlers with one of its own (the call fields,
    redaction of `secrets`) and returns it.
    """
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(CallFields())
    if format == "json":
        handler.setFormatter(JsonFormatter(redact))
    elif format == "text":
        handler.setFormatter(TextFormatter(redact))
    else:
        raise ValueError(f"log format is text or json, got {format!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler


def access_log(logger: logging.Logger | None = None) -> AccessLog:
    """An `AccessLog` (for `ServerStats.set_access_log`): one INFO line per call on
    `logger` (default ``flare_runtime.access``) with route, transport, status, duration,
    peer, principal and connection id, as the line's text and as record fields."""
    log = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)

    def write(meter: CallMeter, code: int, seconds: float, call: CallRecord) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        principal = call.principal
        subject = getattr(principal, "subject", None) if principal is not None else None
        connection = call.connection
        connection_id = getattr(connection, "connection_id", None) if connection else None
        status = StatusCode(code).name
        duration_ms = round(seconds * 1000, 3)
        log.info(
            "%s %s %s %.3f ms peer=%s principal=%s",
            meter.transport,
            meter.route,
            status,
            duration_ms,
            call.peer or "-",
            subject or "-",
            extra={
                "route": meter.route,
                "transport": meter.transport,
                "status": status,
                "duration_ms": duration_ms,
                "peer": call.peer,
                "principal": subject,
                "connection_id": connection_id,
            },
        )

    return write
