"""KeyRing: AES-GCM sealing bound to its row, rotation, typed failures."""

from __future__ import annotations

import pytest

from flare_runtime.im.storage import KeyRing, StorageError
from flare_runtime.im.storage.crypto import NONCE_BYTES, row_associated_data


def test_seal_and_open_round_trip_with_fresh_nonces() -> None:
    ring = KeyRing.generate()
    aad = row_associated_data("room", 1, 7)
    first = ring.seal(b"secret body", aad)
    second = ring.seal(b"secret body", aad)
    assert first[0] == second[0] == 1
    assert first[1][:NONCE_BYTES] != second[1][:NONCE_BYTES]
    assert b"secret" not in first[1]
    assert ring.open(*first, aad) == b"secret body"


def test_a_body_moved_to_another_row_or_altered_does_not_open() -> None:
    ring = KeyRing.generate()
    key_id, sealed = ring.seal(b"body", row_associated_data("room", 1, 7))
    with pytest.raises(StorageError, match="failed authentication"):
        ring.open(key_id, sealed, row_associated_data("room", 1, 8))
    with pytest.raises(StorageError, match="failed authentication"):
        ring.open(key_id, sealed, row_associated_data("other", 1, 7))
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(StorageError, match="failed authentication"):
        ring.open(key_id, flipped, row_associated_data("room", 1, 7))


def test_rotation_seals_with_the_new_key_and_opens_old_rows() -> None:
    old = KeyRing.generate(key_id=1)
    aad = row_associated_data("room", 1, 1)
    old_row = old.seal(b"before", aad)
    new = old.rotated(2)
    assert new.current_key_id == 2 and old.current_key_id == 1
    new_row = new.seal(b"after", aad)
    assert new_row[0] == 2
    assert new.open(*old_row, aad) == b"before"
    with pytest.raises(StorageError, match="unknown key id 2"):
        old.open(*new_row, aad)


def test_bad_rings_are_refused() -> None:
    with pytest.raises(ValueError, match="not in the ring"):
        KeyRing({1: b"k" * 32}, 2)
    with pytest.raises(ValueError, match="16, 24 or 32"):
        KeyRing({1: b"short"}, 1)
    with pytest.raises(ValueError, match="positive"):
        KeyRing({0: b"k" * 32}, 0)
    with pytest.raises(ValueError, match="already"):
        KeyRing.generate(key_id=1).rotated(1)
