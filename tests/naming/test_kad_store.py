"""The name namespace plugged into the kad record store, which asks its
replacement policy (with the clock) whether a PUT replaces the held record."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey
from overlay.kad.errors import InvalidRecord, StaleRecord
from overlay.kad.records import Record, default_registry
from overlay.kad.store import MemoryRecordStore, StoreConfig
from overlay.naming import Expired, NameNamespace, make_transfer
from tests.naming.helpers import CONFIG, NOW, nonce_for, record

KEY = b"/ovl-name/alice.ovl"


def _store() -> MemoryRecordStore:
    registry = default_registry()
    registry.register("ovl-name", NameNamespace(CONFIG, wrap_error=lambda e: InvalidRecord(str(e))))
    return MemoryRecordStore(StoreConfig(), registry)


def test_store_pins_the_owner_and_takes_newer_records(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    store = _store()
    store.put(Record(KEY, record(alice, sequence=2).to_bytes()), None, NOW)
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, record(mallory, sequence=9).to_bytes()), None, NOW)
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, record(alice, sequence=1).to_bytes()), None, NOW)
    newer = record(alice, sequence=3).to_bytes()
    store.put(Record(KEY, newer), None, NOW)
    held = store.get(KEY, NOW)
    assert held is not None and held.record.value == newer


def test_store_refuses_invalid_name_records(alice: Ed25519PrivateKey) -> None:
    store = _store()
    with pytest.raises(InvalidRecord) as info:
        store.put(Record(KEY, record(alice, expires=NOW).to_bytes()), None, NOW)
    assert isinstance(info.value.__cause__, Expired)
    with pytest.raises(InvalidRecord):
        store.put(Record(b"/ovl-name/bob.ovl", record(alice).to_bytes()), None, NOW)
    assert store.get(KEY, NOW) is None


def test_store_frees_an_expired_name_for_a_new_owner(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey
) -> None:
    store = _store()
    store.put(Record(KEY, record(alice, expires=NOW + 600).to_bytes()), None, NOW)
    later = NOW + 601
    bobs = record(bob, expires=later + 3600).to_bytes()
    # Before Alice's record ends, her ownership is pinned...
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, bobs), None, NOW + 599)
    held = store.get(KEY, NOW + 599)
    assert held is not None and held.record.value != bobs
    # ...after it, well within the store's own 36 h TTL, Bob may register.
    assert NOW + 601 < held.expires_at
    store.put(Record(KEY, bobs), None, later)
    held = store.get(KEY, later)
    assert held is not None and held.record.value == bobs


def test_store_accepts_a_transfer_from_the_owner(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    store = _store()
    store.put(Record(KEY, record(alice, sequence=3).to_bytes()), None, NOW)
    transfer = make_transfer(
        alice,
        "alice.ovl",
        bob.public_key(),
        sequence=4,
        expires=int(NOW + 3600),
        pow_nonce=nonce_for("alice.ovl", alice),
    )
    store.put(Record(KEY, transfer.to_bytes()), None, NOW)
    bobs = record(bob, pow_nonce=0, transfer_proof=transfer.to_bytes()).to_bytes()
    store.put(Record(KEY, bobs), None, NOW)
    held = store.get(KEY, NOW)
    assert held is not None and held.record.value == bobs
    # The transfer went to Bob; nobody else gets in on its strength.
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, record(mallory, sequence=9).to_bytes()), None, NOW)
