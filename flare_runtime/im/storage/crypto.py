"""Encryption of message bodies at rest: AES-GCM with rotatable keys.

Every stored body carries the id of the key that sealed it, so adding a new
key (`KeyRing.rotated`) seals new messages with it while old rows stay
readable with the old key: rotation never rewrites history. Retire a key only
after the messages it sealed have been trimmed.

Sealed layout: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The
associated data binds a body to its row (conversation, epoch, seq), so a body
copied onto another row fails to open instead of showing the wrong message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flare_runtime.im.storage.base import StorageError

NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
"""Bytes a sealed body holds beyond its plaintext."""


def row_associated_data(conversation_id: str, epoch: int, seq: int) -> bytes:
    """The AES-GCM associated data of the body stored at (conversation, epoch, seq)."""
    return f"{conversation_id}\x00{epoch}\x00{seq}".encode()


class KeyRing:
    """Named AES-256-GCM keys; the current one seals, any of them opens.

    Key ids are small positive integers stored next to each row. A `KeyRing`
    is immutable; `rotated` returns a new ring.
    """

    __slots__ = ("_ciphers", "_current_id", "_keys")

    def __init__(self, keys: Mapping[int, bytes], current_key_id: int) -> None:
        if current_key_id not in keys:
            raise ValueError(f"current key id {current_key_id} is not in the ring")
        for key_id, key in keys.items():
            if key_id <= 0:
                raise ValueError(f"key ids are positive, got {key_id}")
            if len(key) not in (16, 24, 32):
                raise ValueError(f"key {key_id} must be 16, 24 or 32 bytes, got {len(key)}")
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current_id = current_key_id

    @classmethod
    def generate(cls, key_id: int = 1) -> KeyRing:
        """A ring with one fresh random 256-bit key (for tests and first start)."""
        return cls({key_id: AESGCM.generate_key(bit_length=KEY_BYTES * 8)}, key_id)

    @property
    def current_key_id(self) -> int:
        """The id of the key new bodies are sealed with."""
        return self._current_id

    def rotated(self, key_id: int, key: bytes | None = None) -> KeyRing:
        """A ring that also holds `key` (random when None) and seals with it from now on."""
        if key_id in self._keys:
            raise ValueError(f"key id {key_id} is already in the ring")
        new_key = key if key is not None else AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        return KeyRing({**self._keys, key_id: new_key}, key_id)

    def seal(self, plaintext: bytes, associated_data: bytes) -> tuple[int, bytes]:
        """Encrypt with the current key; returns ``(key_id, sealed)``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current_id].encrypt(nonce, plaintext, associated_data)
        return self._current_id, nonce + sealed

    def open(self, key_id: int, sealed: bytes, associated_data: bytes) -> bytes:
        """Decrypt a body sealed by `seal`; raises `StorageError` when it cannot."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise StorageError(f"message body sealed with unknown key id {key_id}")
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise StorageError(
                f"message body failed authentication under key id {key_id}"
            ) from None
