"""The resource map: TTLs, negative answers, bounds and persistence."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from overlay.identity import Ed25519PrivateKey
from overlay.naming import (
    CacheConfig,
    CachedName,
    CachedNegative,
    CorruptState,
    NameRecord,
    ResourceMap,
    validate,
)
from overlay.naming.store import load_cache, save_cache
from tests.naming.helpers import CONFIG, NOW, record


def _validator(data: bytes, now: float) -> NameRecord:
    return validate(data, now, CONFIG)


def test_positive_entries_honour_the_ttl(alice: Ed25519PrivateKey) -> None:
    cache = ResourceMap()
    rec = record(alice, ttl=60)
    entry = cache.put(rec, NOW)
    assert entry is not None and entry.fresh_until == NOW + 60
    hit = cache.get("alice.ovl", NOW + 59)
    assert isinstance(hit, CachedName) and hit.record == rec
    assert cache.get("alice.ovl", NOW + 60) is None
    assert len(cache) == 0


def test_ttl_never_outlives_the_record_or_the_cap(alice: Ed25519PrivateKey) -> None:
    cache = ResourceMap(CacheConfig(max_ttl=100))
    capped = cache.put(record(alice, ttl=10_000, expires=NOW + 3600), NOW)
    assert capped is not None and capped.fresh_until == NOW + 100
    ending = cache.put(record(alice, ttl=60, expires=NOW + 30), NOW)
    assert ending is not None and ending.fresh_until == int(NOW + 30)
    assert cache.put(record(alice, ttl=0), NOW) is None
    assert cache.get("alice.ovl", NOW) is None


def test_negative_answers_are_cached_briefly() -> None:
    cache = ResourceMap(CacheConfig(negative_ttl=5))
    cache.put_negative("nobody.ovl", NOW)
    assert isinstance(cache.get("nobody.ovl", NOW + 4.9), CachedNegative)
    assert cache.get("nobody.ovl", NOW + 5) is None
    assert ResourceMap(CacheConfig(negative_ttl=0)).put_negative("x.ovl", NOW) is None


def test_positive_answer_replaces_negative(alice: Ed25519PrivateKey) -> None:
    cache = ResourceMap()
    cache.put_negative("alice.ovl", NOW)
    cache.put(record(alice), NOW + 1)
    assert isinstance(cache.get("alice.ovl", NOW + 2), CachedName)
    cache.invalidate("alice.ovl")
    assert cache.get("alice.ovl", NOW + 2) is None


def test_least_recently_used_is_evicted(alice: Ed25519PrivateKey) -> None:
    cache = ResourceMap(CacheConfig(max_entries=2))
    cache.put(record(alice, name="a.ovl"), NOW)
    cache.put(record(alice, name="b.ovl"), NOW)
    assert cache.get("a.ovl", NOW) is not None  # a is now the most recent
    cache.put(record(alice, name="c.ovl"), NOW)
    assert cache.get("b.ovl", NOW) is None
    assert cache.get("a.ovl", NOW) is not None and cache.get("c.ovl", NOW) is not None


def test_persistence_roundtrip(tmp_path: Path, alice: Ed25519PrivateKey) -> None:
    cache = ResourceMap(CacheConfig(negative_ttl=30))
    rec = record(alice, ttl=600)
    cache.put(rec, NOW)
    cache.put(record(alice, name="short.ovl", ttl=5), NOW)
    cache.put_negative("nobody.ovl", NOW)
    path = tmp_path / "resource-map.json"
    save_cache(path, cache)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    restarted = load_cache(path, NOW + 10, _validator, CacheConfig(negative_ttl=30))
    hit = restarted.get("alice.ovl", NOW + 10)
    assert isinstance(hit, CachedName) and hit.record == rec and hit.fresh_until == NOW + 600
    assert restarted.get("short.ovl", NOW + 10) is None
    neg = restarted.get("nobody.ovl", NOW + 10)
    assert isinstance(neg, CachedNegative) and neg.fresh_until == NOW + 30


def test_loaded_records_are_validated_again(tmp_path: Path, alice: Ed25519PrivateKey) -> None:
    cache = ResourceMap()
    cache.put(record(alice, ttl=600, expires=NOW + 100), NOW)
    path = tmp_path / "rm.json"
    save_cache(path, cache)
    # A planted record with a broken signature is dropped, not trusted.
    doc = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(doc["entries"][0]["record"]))
    raw[-1] ^= 1
    doc["entries"][0]["record"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(doc))
    assert len(load_cache(path, NOW, _validator)) == 0
    # A record that expired while the daemon was down is dropped too.
    save_cache(path, cache)
    assert len(load_cache(path, NOW + 100, _validator)) == 0


def test_corrupt_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "rm.json"
    assert len(load_cache(path, NOW, _validator)) == 0
    for content in (
        b"\xff",
        b'{"format": "overlay-resource-map", "version": 2, "entries": []}',
        b'{"format": "overlay-resource-map", "version": 1}',
        b'{"format": "overlay-resource-map", "version": 1, "entries": [{"name": "a.ovl"}]}',
    ):
        path.write_bytes(content)
        with pytest.raises(CorruptState):
            load_cache(path, NOW, _validator)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        CacheConfig(max_entries=0)
    with pytest.raises(ValueError):
        CacheConfig(negative_ttl=-1)
