import json
import os
import random

import pytest

from overlay.errors import ConfigError
from overlay.identity import Ed25519PrivateKey, PeerId, RsaPrivateKey
from overlay.kad.errors import (
    InvalidProviderKey,
    InvalidRecord,
    RecordTooLarge,
    StaleRecord,
    StorageQuotaExceeded,
    UnknownNamespace,
)
from overlay.kad.keyspace import fake_peer_id
from overlay.kad.messages import PeerInfo
from overlay.kad.providers import ProviderConfig, ProviderStore
from overlay.kad.records import Record, default_registry, immutable_key, namespace_of, public_key_record_key
from overlay.kad.store import MemoryRecordStore, StoreConfig
from tests.kad.helpers import NOW
from tests.kad.test_lookup import SeqValidator

RNG = random.Random(3)
ALICE, BOB = fake_peer_id(RNG), fake_peer_id(RNG)


def registry():  # type: ignore[no-untyped-def]
    r = default_registry()
    r.register("seq", SeqValidator())
    return r


def test_namespace_parsing() -> None:
    assert namespace_of(b"/v/abc") == "v"
    assert namespace_of(b"/ipns/\x00\x01") == "ipns"
    for bad in (b"", b"v/abc", b"//x", b"/v", b"/\xff\xfe/x"):
        with pytest.raises(InvalidRecord):
            namespace_of(bad)


def test_immutable_namespace_checks_the_hash() -> None:
    r = default_registry()
    value = b"hello"
    key = immutable_key(value)
    assert key == b"/v/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    r.validate(Record(key, value), NOW)
    with pytest.raises(InvalidRecord):
        r.validate(Record(key, b"hellO"), NOW)
    with pytest.raises(InvalidRecord):
        r.validate(Record(key.upper(), value), NOW)


def test_public_key_namespace() -> None:
    r = default_registry()
    for private in (Ed25519PrivateKey.generate(), RsaPrivateKey.generate(2048)):
        public = private.public_key()
        peer = PeerId.from_public_key(public)
        r.validate(Record(public_key_record_key(peer), public.to_protobuf()), NOW)
        other = Ed25519PrivateKey.generate().public_key()
        with pytest.raises(InvalidRecord):
            r.validate(Record(public_key_record_key(peer), other.to_protobuf()), NOW)
    with pytest.raises(InvalidRecord):
        r.validate(Record(b"/pk/garbage", b"\x08\x01"), NOW)


def test_unknown_namespace_is_rejected() -> None:
    with pytest.raises(UnknownNamespace) as caught:
        default_registry().validate(Record(b"/ipns/x", b"v"), NOW)
    assert caught.value.namespace == "ipns"
    with pytest.raises(ValueError):
        default_registry().register("a/b", SeqValidator())


def test_store_put_get_and_expiry() -> None:
    store = MemoryRecordStore(StoreConfig(record_ttl=100.0), registry())
    key = immutable_key(b"x")
    stored = store.put(Record(key, b"x"), ALICE, NOW)
    assert stored.expires_at == NOW + 100.0 and stored.publisher == ALICE
    assert stored.record.time_received == "1970-01-01T00:16:40.000000Z"
    got = store.get(key, NOW + 99.9)
    assert got is not None and got.record.value == b"x"
    assert store.get(key, NOW + 100.0) is None
    assert len(store) == 0


def test_store_rejects_invalid_unknown_and_oversized() -> None:
    store = MemoryRecordStore(StoreConfig(max_record_bytes=200), registry())
    with pytest.raises(InvalidRecord):
        store.put(Record(immutable_key(b"a"), b"b"), ALICE, NOW)
    with pytest.raises(UnknownNamespace):
        store.put(Record(b"/ipns/x", b"v"), ALICE, NOW)
    big = bytes(300)
    with pytest.raises(RecordTooLarge):
        store.put(Record(immutable_key(big), big), ALICE, NOW)
    assert len(store) == 0


def test_store_keeps_the_better_record() -> None:
    store = MemoryRecordStore(StoreConfig(), registry())
    key = b"/seq/a"
    store.put(Record(key, b"2:b"), ALICE, NOW)
    with pytest.raises(StaleRecord):
        store.put(Record(key, b"1:a"), BOB, NOW)
    store.put(Record(key, b"3:c"), BOB, NOW + 1)
    got = store.get(key, NOW + 1)
    assert got is not None and got.record.value == b"3:c" and got.publisher == BOB


def test_per_peer_and_total_quota() -> None:
    store = MemoryRecordStore(StoreConfig(max_records_per_peer=2, max_records=3), registry())
    store.put(Record(b"/seq/1", b"1:x"), ALICE, NOW)
    store.put(Record(b"/seq/2", b"1:x"), ALICE, NOW)
    with pytest.raises(StorageQuotaExceeded):
        store.put(Record(b"/seq/3", b"1:x"), ALICE, NOW)
    # Updating one's own record does not need more quota.
    store.put(Record(b"/seq/2", b"2:x"), ALICE, NOW)
    store.put(Record(b"/seq/3", b"1:x"), BOB, NOW)
    with pytest.raises(StorageQuotaExceeded):
        store.put(Record(b"/seq/4", b"1:x"), fake_peer_id(RNG), NOW)
    # Our own records have a budget of their own: a full store takes them.
    store.put(Record(b"/seq/4", b"1:x"), None, NOW)
    # Removing frees the publisher's quota.
    assert store.remove(b"/seq/1")
    store.put(Record(b"/seq/5", b"1:x"), ALICE, NOW)
    assert len(store) == 4


def test_expired_records_make_room() -> None:
    store = MemoryRecordStore(StoreConfig(max_records=1, record_ttl=10.0), registry())
    store.put(Record(b"/seq/1", b"1:x"), ALICE, NOW)
    store.put(Record(b"/seq/2", b"1:x"), ALICE, NOW + 10.0)
    assert store.get(b"/seq/2", NOW + 10.0) is not None


def test_providers_expire_after_48_hours() -> None:
    store = ProviderStore(ProviderConfig())
    key = b"\x12\x20" + bytes(32)
    store.add(key, PeerInfo(ALICE), NOW, source="v4:10.0.0.0/24")
    assert [p.peer_id for p in store.get(key, NOW + 48 * 3600 - 1)] == [ALICE]
    assert store.get(key, NOW + 48 * 3600) == []
    assert store.expire(NOW + 48 * 3600) == 1 and len(store) == 0


def test_provider_key_limits_and_quotas() -> None:
    store = ProviderStore(ProviderConfig(max_providers_per_key=2, max_keys_per_peer=2, max_returned=5))
    with pytest.raises(InvalidProviderKey):
        store.add(bytes(81), PeerInfo(ALICE), NOW)
    with pytest.raises(InvalidProviderKey):
        store.add(b"", PeerInfo(ALICE), NOW)
    store.add(bytes(80), PeerInfo(ALICE), NOW)
    store.add(b"k2", PeerInfo(ALICE), NOW)
    with pytest.raises(StorageQuotaExceeded):
        store.add(b"k3", PeerInfo(ALICE), NOW)
    assert len(store) == 2
    carol = fake_peer_id(RNG)
    store.add(b"k2", PeerInfo(BOB), NOW + 1)
    store.add(b"k2", PeerInfo(carol), NOW + 2)  # evicts the oldest (ALICE)
    assert [p.peer_id for p in store.get(b"k2", NOW + 3)] == [carol, BOB]
    store.add(b"k3", PeerInfo(ALICE), NOW)  # ALICE's quota was freed
