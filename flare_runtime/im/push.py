"""Offline push: notifying a push provider when a message is stored for an offline user.

When a message is stored, each member of its conversation but the sender is
checked: a member with no live session (by default), or with no live session
on one of `PushSettings.platforms`, gets a `PushNotification` handed to the
`PushProvider` -- a webhook (`flare_runtime.im.webhook`), or FCM/APNs code of
the application's (docs/push-providers.md shows how to write one).

* **Online is cluster-wide.** In one process a user is online on the devices
  with a session in this process; on a cluster, on those the session registry
  lists on any node (one PostgreSQL query per batch of messages). Only the
  node that stored a message notifies for it, so each offline recipient gets
  one notification per message across the cluster. The presence grace period
  does not count: a device with no session did not get the message live.
* **Never in the way of sends.** `message_stored` only appends to a bounded
  queue (`PushSettings.max_pending`; when full the oldest waiting message is
  dropped, counted in `dropped`, and logged rate-limited). One task drains it
  in batches; a provider's `notify` must return at once (queue its own I/O).
* **Privacy.** By default a notification carries no part of the message body
  (`PushPreview.NONE`): ids, seq, sender, conversation -- enough for the app to
  show "new message" and sync. `PushPreview.CONTENT_TYPE` adds the kind of
  content; `PushPreview.TEXT` the first `preview_chars` characters of a text
  message, which then leave the server in the clear (bodies are encrypted at
  rest; a preview is not): opt in knowingly.
* **At most once.** A notification lost to a full queue, a provider failure,
  or a restart is not retried by the IM; the message itself is stored, and the
  app syncs it when it next connects. (The webhook provider retries its own
  deliveries.)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from flare.im.v1 import content_pb2

from flare_runtime.im.storage.base import StoredMessage
from flare_runtime.peer_log import PeerLog

logger = logging.getLogger("flare_runtime.im.push")


class PushPreview(enum.Enum):
    """How much of a message a notification reveals (module docstring, "Privacy")."""

    NONE = "none"
    CONTENT_TYPE = "content_type"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class PushNotification:
    """One message stored for one recipient who is offline (everywhere, or on `platforms`)."""

    user_id: str
    """The recipient."""
    conversation_id: str
    message_id: str
    epoch: int
    seq: int
    sender_user_id: str
    sent_at_ms: int
    platforms: frozenset[int]
    """The `Platform` values to notify (with `PushSettings.platforms`); empty: every device
    of the user (it has no live session anywhere)."""
    online_platforms: frozenset[int]
    """Platforms on which the user has a live session now (empty when offline everywhere)."""
    content_type: str = ""
    """``text``, ``image``, ``file``, ``extension`` or ``opaque``; set from CONTENT_TYPE."""
    preview: str = ""
    """The start of a text message; set only with `PushPreview.TEXT`."""


class PushProvider(abc.ABC):
    """Where offline notifications go. Implement `notify`; `start` and `close` if needed.

    Contract: `notify` runs on the IM's event loop and must return at once --
    queue the work (an HTTP request, an FCM/APNs call) for a task of your own.
    It must not raise; an exception is logged (rate-limited) and the
    notification dropped. `start` runs in `ImCore.start`, `close` in
    `ImCore.close` (finish or drop what is queued, within your own bound).
    """

    async def start(self) -> None:  # noqa: B027 -- optional hook
        """Start background work (called once, before any `notify`)."""

    @abc.abstractmethod
    def notify(self, notification: PushNotification) -> None:
        """Take one notification; return at once."""

    async def close(self) -> None:  # noqa: B027 -- optional hook
        """Stop background work (called once, after the last `notify`)."""


@dataclass(frozen=True, slots=True)
class PushSettings:
    """Offline push for `ImCore(push=...)`."""

    provider: PushProvider
    platforms: frozenset[int] = frozenset()
    """Empty (the default): notify users with no live session at all. Else the `Platform`
    values (e.g. MOBILE, TABLET) a push reaches: notify a user who has no live session on
    one of them, even when online elsewhere (``PushNotification.platforms`` names them)."""
    preview: PushPreview = PushPreview.NONE
    preview_chars: int = 100
    max_pending: int = 10_000
    """Stored messages waiting to be checked; beyond it the oldest is dropped."""
    batch: int = 64
    """Messages checked together (one lookup of who is online)."""
    exclude: Collection[str] = field(default_factory=frozenset)
    """User ids never notified (bots, system users)."""


Device = tuple[str, int]
"""(device id, platform) of a live session."""

OnlineLookup = Callable[[Sequence[str]], Awaitable[Mapping[str, Sequence[Device]]]]
"""Who among these users has live sessions, and on which devices (absent: none)."""


_CONTENT_TYPES = {
    "text": "text",
    "image": "image",
    "file": "file",
    "extension": "extension",
    "opaque": "opaque",
}


class OfflinePush:
    """The queue between stored messages and the provider (module docstring)."""

    LOOKUP_CHUNK = 1000
    """Users asked about in one lookup."""

    def __init__(self, settings: PushSettings, online: OnlineLookup) -> None:
        self.settings = settings
        self._online = online
        self._pending: deque[tuple[Mapping[str, object], StoredMessage]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = PeerLog()
        self.dropped = 0
        """Stored messages dropped unchecked: the queue was full, or closed before them."""
        self.notified = 0
        """Notifications handed to the provider."""

    async def start(self) -> None:
        await self.settings.provider.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.dropped += len(self._pending)
        self._pending.clear()
        await self.settings.provider.close()

    def message_stored(self, members: Mapping[str, object], message: StoredMessage) -> None:
        """A message was stored by this process; `members` is its conversation's live member
        table (read when the message is checked). Returns at once."""
        pending = self._pending
        if len(pending) >= self.settings.max_pending:
            pending.popleft()
            self.dropped += 1
            self._log.log(
                logger,
                logging.WARNING,
                "offline push queue full (%d): dropped the oldest message (%d dropped so far)",
                self.settings.max_pending,
                self.dropped,
            )
        pending.append((members, message))
        self._wake.set()

    async def _run(self) -> None:
        pending, batch = self._pending, self.settings.batch
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
            items = [pending.popleft() for _ in range(min(batch, len(pending)))]
            try:
                await self._check(items)
            except Exception as error:  # the lookup failed (database down...): drop the batch
                self._log.log(
                    logger,
                    logging.WARNING,
                    "offline push: cannot tell who is online, %d messages dropped: %s",
                    len(items),
                    error,
                )

    async def _check(self, items: list[tuple[Mapping[str, object], StoredMessage]]) -> None:
        exclude = self.settings.exclude
        recipients = [
            [user for user in members if user != message.sender_user_id and user not in exclude]
            for members, message in items
        ]
        users = sorted({user for group in recipients for user in group})
        online: dict[str, Sequence[Device]] = {}
        for start in range(0, len(users), self.LOOKUP_CHUNK):
            online.update(await self._online(users[start : start + self.LOOKUP_CHUNK]))
        wanted = self.settings.platforms
        for (_, message), group in zip(items, recipients, strict=True):
            content_type, preview = self._preview(message)
            for user in group:
                live = frozenset(platform for _, platform in online.get(user, ()))
                if wanted:
                    platforms = wanted - live
                    if not platforms:
                        continue
                elif live:
                    continue
                else:
                    platforms = frozenset()
                self._hand(
                    PushNotification(
                        user_id=user,
                        conversation_id=message.conversation_id,
                        message_id=message.message_id,
                        epoch=message.epoch,
                        seq=message.seq,
                        sender_user_id=message.sender_user_id,
                        sent_at_ms=message.sent_at_ms,
                        platforms=platforms,
                        online_platforms=live,
                        content_type=content_type,
                        preview=preview,
                    )
                )

    def _hand(self, notification: PushNotification) -> None:
        try:
            self.settings.provider.notify(notification)
        except Exception as error:
            self._log.log(logger, logging.ERROR, "push provider failed: %r", error)
        else:
            self.notified += 1

    def _preview(self, message: StoredMessage) -> tuple[str, str]:
        mode = self.settings.preview
        if mode is PushPreview.NONE:
            return "", ""
        content = content_pb2.Content()
        try:
            content.ParseFromString(message.body)
        except Exception:  # stored by a sender: tell nothing rather than fail
            return "", ""
        kind = content.WhichOneof("body")
        content_type = _CONTENT_TYPES.get(kind or "", "")
        if mode is PushPreview.TEXT and kind == "text":
            return content_type, content.text.text[: self.settings.preview_chars]
        return content_type, ""
