"""Session ticket stores: single use, bounded, newest first."""

from __future__ import annotations

import datetime

import pytest
from aioquic.tls import CipherSuite, SessionTicket

from flare_runtime.transports.quic_tickets import (
    MemoryTicketStore,
    ServerTicketStore,
    TicketStore,
)


def make_ticket(label: bytes, *, expired: bool = False) -> SessionTicket:
    now = datetime.datetime.now(datetime.UTC)
    lifetime = datetime.timedelta(hours=-1 if expired else 1)
    return SessionTicket(
        age_add=0,
        cipher_suite=CipherSuite.AES_128_GCM_SHA256,
        not_valid_after=now + lifetime,
        not_valid_before=now - datetime.timedelta(hours=2),
        resumption_secret=b"s" * 32,
        server_name="localhost",
        ticket=label,
    )


def test_memory_store_gives_each_ticket_once_newest_first() -> None:
    store: TicketStore = MemoryTicketStore()
    store.add("a:1", make_ticket(b"old"))
    store.add("a:1", make_ticket(b"new"))
    store.add("b:2", make_ticket(b"other"))
    taken = [store.take("a:1"), store.take("a:1"), store.take("a:1")]
    assert [t.ticket if t else None for t in taken] == [b"new", b"old", None]
    other = store.take("b:2")
    assert other is not None and other.ticket == b"other"


def test_memory_store_skips_expired_tickets() -> None:
    store = MemoryTicketStore()
    store.add("a:1", make_ticket(b"valid"))
    store.add("a:1", make_ticket(b"expired", expired=True))
    ticket = store.take("a:1")
    assert ticket is not None and ticket.ticket == b"valid"
    assert len(store) == 0


def test_memory_store_is_bounded() -> None:
    store = MemoryTicketStore(per_server=2, max_servers=3)
    for server in range(10):
        for n in range(5):
            store.add(f"s{server}", make_ticket(f"{server}-{n}".encode()))
    assert len(store) == 6
    assert store.take("s0") is None
    kept = store.take("s9")
    assert kept is not None and kept.ticket == b"9-4"
    with pytest.raises(ValueError):
        MemoryTicketStore(per_server=0)


def test_server_store_tickets_are_single_use() -> None:
    store = ServerTicketStore()
    store.add(make_ticket(b"label"))
    assert store.take(b"label") is not None
    assert store.take(b"label") is None  # a replayed ClientHello gets no resumption
    assert (store.issued, store.resumed) == (1, 1)


def test_server_store_forgets_oldest_beyond_capacity_and_expired() -> None:
    store = ServerTicketStore(capacity=2)
    for label in (b"1", b"2", b"3"):
        store.add(make_ticket(label))
    assert len(store) == 2
    assert store.take(b"1") is None
    assert store.take(b"3") is not None
    store.add(make_ticket(b"stale", expired=True))
    assert store.take(b"stale") is None
