"""Durable state of the IM core: the `Storage` interface and its backends.

* `SqliteStorage` - embedded, the default: nothing to install.
* `PostgresStorage` - PostgreSQL through asyncpg, for several processes/hosts.

Both seal message bodies with a `KeyRing` (AES-GCM, key id per row).
"""

from __future__ import annotations

from flare_runtime.im.storage.base import (
    AppendResult,
    ConversationExistsError,
    ConversationKind,
    ConversationRecord,
    Membership,
    NewMessage,
    Receipt,
    Role,
    Storage,
    StorageError,
    StoredMessage,
)
from flare_runtime.im.storage.crypto import KeyRing
from flare_runtime.im.storage.sqlite import SqliteStorage

__all__ = [
    "AppendResult",
    "ConversationExistsError",
    "ConversationKind",
    "ConversationRecord",
    "KeyRing",
    "Membership",
    "NewMessage",
    "Receipt",
    "Role",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredMessage",
]
