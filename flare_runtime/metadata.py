"""Call metadata: ordered, multi-valued, case-insensitive keys, as in gRPC.

Keys are lower-cased ASCII; keys ending in ``-bin`` carry `bytes` values, all
others carry `str` values (the same rule gRPC applies).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeAlias

MetadataValue: TypeAlias = str | bytes
MetadataLike: TypeAlias = "Mapping[str, MetadataValue] | Iterable[tuple[str, MetadataValue]]"


class Metadata(Mapping[str, MetadataValue]):
    """An immutable multi-map of metadata entries.

    ``metadata[key]`` returns the last value for `key`; `get_all` returns all
    of them in order. Iterating yields each distinct key once.
    """

    __slots__ = ("_entries", "_index")

    def __init__(self, entries: MetadataLike | None = None) -> None:
        pairs: list[tuple[str, MetadataValue]] = []
        if entries is not None:
            items = entries.items() if isinstance(entries, Mapping) else entries
            for key, value in items:
                pairs.append(_checked(key, value))
        self._entries: tuple[tuple[str, MetadataValue], ...] = tuple(pairs)
        index: dict[str, MetadataValue] = {}
        for key, value in self._entries:
            index[key] = value
        self._index = index

    @classmethod
    def coerce(cls, entries: MetadataLike | None) -> Metadata:
        """Return `entries` as `Metadata` (no copy when it already is)."""
        if isinstance(entries, Metadata):
            return entries
        if not entries:
            return EMPTY_METADATA
        return cls(entries)

    def __getitem__(self, key: str) -> MetadataValue:
        return self._index[key.lower()]

    # Mapping's defaults go through __getitem__ and a KeyError; these are on
    # every call's path (auth checks), so answer from the index directly.
    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def get(self, key: str, default: MetadataValue | None = None) -> MetadataValue | None:  # type: ignore[override]
        """The last value of `key`, or `default`."""
        return self._index.get(key.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Metadata({list(self._entries)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Metadata):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._entries)

    def get_all(self, key: str) -> list[MetadataValue]:
        """Every value of `key`, in the order they were added."""
        key = key.lower()
        return [value for entry_key, value in self._entries if entry_key == key]

    def entries(self) -> tuple[tuple[str, MetadataValue], ...]:
        """All (key, value) pairs in order, duplicates included."""
        return self._entries

    def __add__(self, other: MetadataLike) -> Metadata:
        return Metadata(self._entries + Metadata.coerce(other)._entries)


EMPTY_METADATA = Metadata()


def _checked(key: str, value: MetadataValue) -> tuple[str, MetadataValue]:
    if not isinstance(key, str) or not key:
        raise ValueError(f"metadata key must be a non-empty str, got {key!r}")
    key = key.lower()
    if not key.isascii() or any(ch.isspace() or ch == ":" for ch in key):
        raise ValueError(f"invalid metadata key {key!r}")
    if key.endswith("-bin"):
        if not isinstance(value, bytes):
            raise ValueError(f"metadata key {key!r} ends in -bin and needs a bytes value")
    elif not isinstance(value, str):
        raise ValueError(f"metadata key {key!r} needs a str value (use a -bin key for bytes)")
    return key, value
