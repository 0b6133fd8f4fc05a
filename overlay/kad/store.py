"""The record store: an interface, and the in-memory policy behind it.

Every record that enters passes its namespace validator (unknown namespaces
are rejected), the size limit, the quotas per publisher and per source IP
prefix (STYLE rule 17: peer IDs cost nothing) and, against the
record already held, the namespace's replacement policy or else its
selector (``NamespaceRegistry.replaces``).  The node's own records
(``publisher=None``) have a budget of their own that foreign records can
never fill.  Times are wall-clock seconds since the epoch, passed in as
``now``; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, TypeVar

from overlay.identity import PeerId
from overlay.kad.errors import RecordTooLarge, StaleRecord, StorageQuotaExceeded
from overlay.kad.records import NamespaceRegistry, Record

__all__ = ["StoreConfig", "StoredRecord", "RecordStore", "MemoryRecordStore", "rfc3339"]

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Limits of the record store."""

    max_record_bytes: int = 10 * 1024
    """Largest key plus value accepted (10 KiB, as for IPNS records)."""
    record_ttl: float = 36 * 3600.0
    """Seconds a stored record lives unless republished (go-libp2p: 36 h)."""
    max_records: int = 65536
    """Records of remote publishers held in total."""
    max_records_per_peer: int = 256
    """Records one remote publisher may have stored here."""
    max_records_per_source: int = 1024
    """Records stored from one source (IP /24 or /48) by all its peers."""
    max_own_records: int = 65536
    """Records of this node, a budget apart from the foreign ones."""

    def __post_init__(self) -> None:
        if min(self.max_record_bytes, self.max_records, self.max_records_per_peer,
               self.max_records_per_source, self.max_own_records) < 1:
            raise ValueError("store limits must be at least 1")
        if self.record_ttl <= 0:
            raise ValueError("record_ttl must be positive")


@dataclass(frozen=True, slots=True)
class StoredRecord:
    record: Record
    publisher: PeerId | None
    """The remote peer that stored it, or None for our own records."""
    received_at: float
    expires_at: float
    source: str | None = None
    """The source scope (IP prefix) it came from, if known."""


class RecordStore(Protocol):
    def get(self, key: bytes, now: float) -> StoredRecord | None: ...

    def put(self, record: Record, publisher: PeerId | None, now: float,
            source: str | None = None) -> StoredRecord:
        """Validate and store; raises ``InvalidRecord`` subclasses or
        ``StorageQuotaExceeded``.  ``publisher=None``: our own record."""
        ...

    def remove(self, key: bytes) -> bool: ...

    def expire(self, now: float) -> int: ...

    def __iter__(self) -> Iterator[StoredRecord]: ...

    def __len__(self) -> int: ...


def rfc3339(now: float) -> str:
    return datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MemoryRecordStore:
    def __init__(self, config: StoreConfig, registry: NamespaceRegistry) -> None:
        self.config = config
        self.registry = registry
        self._records: dict[bytes, StoredRecord] = {}
        self._per_peer: dict[PeerId, int] = {}
        self._per_source: dict[str, int] = {}
        self._foreign = 0
        self._own = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[StoredRecord]:
        return iter(list(self._records.values()))

    def get(self, key: bytes, now: float) -> StoredRecord | None:
        stored = self._records.get(key)
        if stored is None:
            return None
        if stored.expires_at <= now:
            self.remove(key)
            return None
        return stored

    def check(self, record: Record, now: float) -> None:
        """Everything ``put`` checks about the record itself."""
        size = len(record.key) + len(record.value)
        if size > self.config.max_record_bytes:
            raise RecordTooLarge(size, self.config.max_record_bytes)
        self.registry.validate(record, now)

    def put(self, record: Record, publisher: PeerId | None, now: float,
            source: str | None = None) -> StoredRecord:
        self.check(record, now)
        existing = self.get(record.key, now)
        if existing is not None and existing.record.value != record.value:
            if not self.registry.replaces(record.key, existing.record.value, record.value, now):
                raise StaleRecord("the record held here is better than the one offered")
        if publisher is not None and existing is not None and existing.publisher is None:
            # Our own record stays ours: a foreign copy of it would move it
            # into the foreign budget (and let the publisher's quota own it).
            publisher, source = None, None
        self._admit(existing, publisher, source, now)
        if existing is not None:
            self._forget(existing)
        stored = StoredRecord(
            Record(record.key, record.value, rfc3339(now)),
            publisher,
            now,
            now + self.config.record_ttl,
            source if publisher is not None else None,
        )
        self._keep(stored)
        return stored

    def _admit(self, existing: StoredRecord | None, publisher: PeerId | None,
               source: str | None, now: float) -> None:
        """Raise ``StorageQuotaExceeded`` unless every scope has room."""
        cfg = self.config
        if publisher is None:
            if (existing is None or existing.publisher is not None) and (
                    self._own >= cfg.max_own_records):
                raise StorageQuotaExceeded(f"own record budget is full ({cfg.max_own_records})")
            return
        if existing is None and self._foreign >= cfg.max_records:
            self.expire(now)
            if self._foreign >= cfg.max_records:
                raise StorageQuotaExceeded(f"record store is full ({cfg.max_records})")
        if existing is None or existing.publisher != publisher:
            if self._per_peer.get(publisher, 0) >= cfg.max_records_per_peer:
                raise StorageQuotaExceeded(
                    f"{publisher} already stores {cfg.max_records_per_peer} records here"
                )
        if source is not None and (existing is None or existing.source != source):
            if self._per_source.get(source, 0) >= cfg.max_records_per_source:
                raise StorageQuotaExceeded(
                    f"source {source} already stores {cfg.max_records_per_source} records here"
                )

    def remove(self, key: bytes) -> bool:
        stored = self._records.get(key)
        if stored is None:
            return False
        self._forget(stored)
        return True

    def expire(self, now: float) -> int:
        dead = [key for key, stored in self._records.items() if stored.expires_at <= now]
        for key in dead:
            self.remove(key)
        return len(dead)

    # Subclasses (the persistent store) restore state through _keep.
    def _keep(self, stored: StoredRecord) -> None:
        self._records[stored.record.key] = stored
        if stored.publisher is None:
            self._own += 1
            return
        self._foreign += 1
        self._per_peer[stored.publisher] = self._per_peer.get(stored.publisher, 0) + 1
        if stored.source is not None:
            self._per_source[stored.source] = self._per_source.get(stored.source, 0) + 1

    def _forget(self, stored: StoredRecord) -> None:
        del self._records[stored.record.key]
        if stored.publisher is None:
            self._own -= 1
            return
        self._foreign -= 1
        _uncount(self._per_peer, stored.publisher)
        if stored.source is not None:
            _uncount(self._per_source, stored.source)


def _uncount(counts: dict[K, int], key: K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
