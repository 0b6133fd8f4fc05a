"""The journaled record and provider stores: restart, migration of the
version 1 file, O(record) puts, quotas per source and our own budget."""

from __future__ import annotations

import gc
import json
import random
import time
from pathlib import Path

import pytest

from overlay.kad.errors import StorageQuotaExceeded
from overlay.kad.handler import provider_addrs
from overlay.kad.keyspace import fake_peer_id
from overlay.kad.messages import PeerInfo
from overlay.kad.persist import FileRecordStore, persist_providers
from overlay.kad.providers import ProviderConfig, ProviderStore
from overlay.kad.records import Record, default_registry, immutable_key
from overlay.kad.store import MemoryRecordStore, StoreConfig
from tests.kad.helpers import NOW

RNG = random.Random(5)
ALICE, BOB = fake_peer_id(RNG), fake_peer_id(RNG)


def _flush(store: FileRecordStore) -> None:
    job = store.journal.prepare()
    if job is not None:
        job()


def test_journal_store_survives_restart_and_logs_one_line_per_put(tmp_path: Path) -> None:
    path = tmp_path / "dht" / "records.log"
    store = FileRecordStore(path, StoreConfig(record_ttl=50.0), default_registry(), NOW)
    own = Record(immutable_key(b"mine"), b"mine")
    store.put(own, None, NOW)
    _flush(store)
    size = path.stat().st_size
    value = b"x" * 1000
    store.put(Record(immutable_key(value), value), ALICE, NOW, "v4:10.0.0.0/24")
    _flush(store)
    grown = path.stat().st_size - size
    assert 1000 < grown < 2000  # the new record's line, not the store again
    assert path.stat().st_mode & 0o777 == 0o600
    again = FileRecordStore(path, StoreConfig(record_ttl=50.0), default_registry(), NOW + 1)
    got = again.get(immutable_key(value), NOW + 1)
    assert got is not None and got.publisher == ALICE and got.source == "v4:10.0.0.0/24"
    assert again.get(own.key, NOW + 1) is not None
    assert len(FileRecordStore(path, StoreConfig(), default_registry(), NOW + 60)) == 0


def test_version_1_file_is_migrated_once(tmp_path: Path) -> None:
    legacy = tmp_path / "records.json"
    value = b"old"
    entry = {"key": "L3YvYWJj", "value": "b2xk", "time_received": "", "publisher": None,
             "received_at": NOW, "expires_at": NOW + 100}
    key = immutable_key(value)
    import base64
    entry["key"] = base64.b64encode(key).decode()
    legacy.write_text(json.dumps({"version": 1, "records": [entry]}))
    store = FileRecordStore(tmp_path / "records.log", StoreConfig(), default_registry(), NOW)
    assert store.get(key, NOW) is not None
    _flush(store)  # the first write compacts into the log and drops the old file
    assert not legacy.exists()
    again = FileRecordStore(tmp_path / "records.log", StoreConfig(), default_registry(), NOW)
    assert again.get(key, NOW) is not None


def test_one_source_cannot_fill_the_record_store() -> None:
    store = MemoryRecordStore(StoreConfig(max_records_per_source=3, max_records=100),
                              default_registry())
    for n in range(3):
        value = str(n).encode()
        store.put(Record(immutable_key(value), value), fake_peer_id(RNG), NOW, "v4:6.6.6.0/24")
    with pytest.raises(StorageQuotaExceeded):
        store.put(Record(immutable_key(b"3"), b"3"), fake_peer_id(RNG), NOW, "v4:6.6.6.0/24")
    store.put(Record(immutable_key(b"3"), b"3"), fake_peer_id(RNG), NOW, "v4:7.7.7.0/24")


def test_a_flood_from_one_prefix_leaves_room_and_our_provide_succeeds() -> None:
    store = ProviderStore(ProviderConfig(max_keys=200, max_entries_per_source=50,
                                         max_keys_per_peer=10))
    refused = 0
    for n in range(1000):
        peer = fake_peer_id(RNG)
        try:
            store.add(b"k%d" % n, PeerInfo(peer), NOW, source="v4:6.6.6.0/24")
        except StorageQuotaExceeded:
            refused += 1
    assert refused == 950 and len(store) == 50
    store.add(b"other", PeerInfo(BOB), NOW, source="v4:8.8.8.0/24")  # others still fit
    # Even with the foreign budget full, our own provide is stored.
    full = ProviderStore(ProviderConfig(max_keys=1))
    full.add(b"k", PeerInfo(BOB), NOW, source="v4:8.8.8.0/24")
    with pytest.raises(StorageQuotaExceeded):
        full.add(b"k2", PeerInfo(ALICE), NOW, source="v4:9.9.9.0/24")
    full.add(b"k2", PeerInfo(ALICE), NOW, own=True)
    assert [p.peer_id for p in full.get(b"k2", NOW)] == [ALICE]


def test_provider_addresses_are_the_observed_ones() -> None:
    seen, claimed_only = b"\x04seen", b"\x04victim"
    assert provider_addrs((claimed_only, seen), (seen,), 8) == (seen,)
    assert provider_addrs((claimed_only,), (seen,), 8) == (seen,)
    assert provider_addrs((claimed_only,), (), 8) == ()


def test_providers_persist_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "providers.log"
    store = ProviderStore(ProviderConfig())
    journal = persist_providers(store, path, NOW, lambda: None)
    store.add(b"mine", PeerInfo(ALICE, (b"\x04a",)), NOW, own=True)
    store.add(b"theirs", PeerInfo(BOB), NOW, source="v4:1.2.3.0/24")
    job = journal.prepare()
    assert job is not None
    job()
    again = ProviderStore(ProviderConfig())
    persist_providers(again, path, NOW + 1, lambda: None)
    assert [p.peer_id for p in again.get(b"mine", NOW + 1)] == [ALICE]
    assert [p.peer_id for p in again.get(b"theirs", NOW + 1)] == [BOB]
    expired = ProviderStore(ProviderConfig())
    persist_providers(expired, path, NOW + 49 * 3600, lambda: None)
    assert len(expired) == 0


def test_put_cost_does_not_grow_with_the_store(tmp_path: Path) -> None:
    """A put queues one line: 500 puts into a store of 5,000 records cost
    about what they cost into an empty one.  This thread's CPU time, not the
    wall clock, so other load on the machine does not count."""

    def timed(store: FileRecordStore, start: int) -> float:
        # The cyclic collector is off while timing: a full collection of
        # the whole test session's heap landing in one sample (seen: 0.12 s
        # against 0.014 s) is not the store's cost.
        gc.collect()
        gc.disable()
        try:
            begin = time.thread_time()
            for n in range(start, start + 500):
                value = b"%d" % n + b"x" * 2000
                store.put(Record(immutable_key(value), value), fake_peer_id(RNG), NOW)
            return time.thread_time() - begin
        finally:
            gc.enable()

    cfg = StoreConfig(max_records_per_peer=10)
    small = FileRecordStore(tmp_path / "a.log", cfg, default_registry(), NOW)
    base = timed(small, 0)
    big = FileRecordStore(tmp_path / "b.log", cfg, default_registry(), NOW)
    timed(big, 10_000)
    for k in range(9):
        timed(big, 20_000 + k * 500)
    assert len(big) == 5000
    # The best of three, as for the empty store's one sample: a put whose
    # cost grew with the store is slow every time.
    assert min(timed(big, 90_000 + k * 500) for k in range(3)) < 5 * base + 0.05


def test_handler_counts_add_provider_per_source_and_stores_observed_addresses() -> None:
    from overlay.kad.handler import KadServer, ServerConfig, handle_request
    from overlay.kad.keyspace import peer_key
    from overlay.kad.messages import KadMessage, MessageType
    from overlay.kad.routing import RoutingConfig, RoutingTable

    me = fake_peer_id(RNG)
    providers = ProviderStore(ProviderConfig(max_keys=500, max_entries_per_source=100))
    seen = b"\x04\x7f\x00\x00\x01"  # where the flooders were observed
    server = KadServer(
        PeerInfo(me), RoutingTable(peer_key(me), RoutingConfig(), RNG, NOW),
        MemoryRecordStore(StoreConfig(), default_registry()), providers, ServerConfig(),
        peer_source=lambda peer: ("v4:6.6.6.0/24", (seen,)))
    refused = 0
    flooders = [fake_peer_id(RNG) for _ in range(70)]
    for n in range(1000):  # 70 identities, one /24
        peer = flooders[n % 70]
        key = b"\x12\x20" + n.to_bytes(32, "big")
        message = KadMessage(MessageType.ADD_PROVIDER, key,
                             provider_peers=(PeerInfo(peer, (b"\x04victim",)),))
        try:
            handle_request(server, message, peer, NOW)
        except StorageQuotaExceeded:
            refused += 1
    assert refused == 900 and len(providers) == 100
    key = b"\x12\x20" + (5).to_bytes(32, "big")
    assert all(p.addrs == (seen,) for p in providers.get(key, NOW))
    providers.add(b"\x12\x20" + bytes(32), PeerInfo(me), NOW, own=True)  # ours still fits
