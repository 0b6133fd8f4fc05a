"""The resource map: a resolver's cache of resolved names (pure).

A positive entry stays fresh for the record's TTL (capped by the
configuration and never past the record's expiry); a negative answer ("no
such name") is remembered briefly so a typo does not hit the network on
every retry.  Times are unix seconds, so entries survive a restart; on load
every record is validated again and stale entries are dropped.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from overlay.naming.errors import CorruptState, RecordRejected
from overlay.naming.record import NameRecord

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CacheConfig",
    "CachedName",
    "CachedNegative",
    "ResourceMap",
]

CACHE_FORMAT = "overlay-resource-map"
CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_entries: int = 4096
    """Entries kept; the least recently used go first."""
    max_ttl: float = 24 * 3600.0
    """Upper bound on how long a positive answer is served from cache."""
    negative_ttl: float = 30.0
    """How long "no such name" is remembered."""

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if self.max_ttl < 0:
            raise ValueError("max_ttl must not be negative")
        if self.negative_ttl < 0:
            raise ValueError("negative_ttl must not be negative")


@dataclass(frozen=True, slots=True)
class CachedName:
    record: NameRecord
    cached_at: float
    fresh_until: float


@dataclass(frozen=True, slots=True)
class CachedNegative:
    name: str
    cached_at: float
    fresh_until: float


Entry = CachedName | CachedNegative


class ResourceMap:
    """Normalized name → cached answer, bounded and LRU-ordered."""

    def __init__(self, config: CacheConfig = CacheConfig()) -> None:
        self.config = config
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, now: float) -> Entry | None:
        """The fresh entry for ``name``, or None (stale entries are dropped)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry.fresh_until <= now:
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return entry

    def put(self, record: NameRecord, now: float) -> CachedName | None:
        """Cache a validated record; returns None when its TTL is zero or
        it has already expired (nothing is cached then)."""
        fresh_until = min(now + min(float(record.ttl), self.config.max_ttl), float(record.expires))
        if fresh_until <= now:
            self._entries.pop(record.name, None)
            return None
        entry = CachedName(record, now, fresh_until)
        self._store(record.name, entry)
        return entry

    def put_negative(self, name: str, now: float) -> CachedNegative | None:
        if self.config.negative_ttl <= 0:
            return None
        entry = CachedNegative(name, now, now + self.config.negative_ttl)
        self._store(name, entry)
        return entry

    def invalidate(self, name: str) -> None:
        self._entries.pop(name, None)

    def _store(self, name: str, entry: Entry) -> None:
        self._entries[name] = entry
        self._entries.move_to_end(name)
        while len(self._entries) > self.config.max_entries:
            self._entries.popitem(last=False)

    # --- persistence (the file adapter is overlay.naming.store) ------------

    def to_dict(self) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        for name, entry in self._entries.items():
            item: dict[str, Any] = {
                "name": name,
                "cached_at": entry.cached_at,
                "fresh_until": entry.fresh_until,
            }
            if isinstance(entry, CachedName):
                item["record"] = base64.b64encode(entry.record.to_bytes()).decode("ascii")
            entries.append(item)
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries}

    @classmethod
    def from_dict(
        cls,
        doc: Mapping[str, Any],
        now: float,
        validator: Callable[[bytes, float], NameRecord],
        config: CacheConfig = CacheConfig(),
    ) -> ResourceMap:
        """Rebuild a cache; each record goes through ``validator`` again
        (the file is not trusted) and stale or invalid entries are dropped."""
        if doc.get("format") != CACHE_FORMAT:
            raise CorruptState("not a resource-map file")
        if doc.get("version") != CACHE_VERSION:
            raise CorruptState(f"resource-map version {doc.get('version')!r} is not supported")
        items = doc.get("entries")
        if not isinstance(items, list):
            raise CorruptState("resource-map file lacks its entries")
        cache = cls(config)
        for item in items:
            try:
                name = item["name"]
                cached_at = float(item["cached_at"])
                fresh_until = float(item["fresh_until"])
                raw = item.get("record")
                record_bytes = None if raw is None else base64.b64decode(raw, validate=True)
            except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
                raise CorruptState(f"bad resource-map entry: {exc}") from None
            if not isinstance(name, str) or not math.isfinite(fresh_until) or fresh_until <= now:
                continue
            if record_bytes is None:
                # A restart must not stretch a negative answer past its TTL.
                fresh = min(fresh_until, now + config.negative_ttl)
                cache._store(name, CachedNegative(name, cached_at, fresh))
                continue
            try:
                record = validator(record_bytes, now)
            except RecordRejected:
                continue
            if record.name != name:
                continue
            fresh = min(fresh_until, float(record.expires), now + config.max_ttl)
            cache._store(name, CachedName(record, cached_at, fresh))
        return cache
