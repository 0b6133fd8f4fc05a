"""The name namespace plugged into the kad record store as it is today."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey
from overlay.kad.errors import InvalidRecord, StaleRecord
from overlay.kad.records import Record, default_registry
from overlay.kad.store import MemoryRecordStore, StoreConfig
from overlay.naming import Expired, NameNamespace
from tests.naming.helpers import CONFIG, NOW, record

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
