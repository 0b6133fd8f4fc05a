"""The record store: an interface, and the in-memory policy behind it.

Every record that enters passes its namespace validator (unknown namespaces
are rejected), the size limit, the per-publisher quota and, against the
record already held, the namespace's replacement policy or else its
selector (``NamespaceRegistry.replaces``).  Times are wall-clock seconds
since the epoch, passed in as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from overlay.identity import PeerId
from overlay.kad.errors import RecordTooLarge, StaleRecord, StorageQuotaExceeded
from overlay.kad.records import NamespaceRegistry, Record

__all__ = ["StoreConfig", "StoredRecord", "RecordStore", "MemoryRecordStore", "rfc3339"]


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Limits of the record store."""

    max_record_bytes: int = 10 * 1024
    """Largest key plus value accepted (10 KiB, as for IPNS records)."""
    record_ttl: float = 36 * 3600.0
    """Seconds a stored record lives unless republished (go-libp2p: 36 h)."""
    max_records: int = 65536
    """Records held in total."""
    max_records_per_peer: int = 256
    """Records one remote publisher may have stored here."""

    def __post_init__(self) -> None:
        if self.max_record_bytes < 1 or self.max_records < 1 or self.max_records_per_peer < 1:
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


class RecordStore(Protocol):
    def get(self, key: bytes, now: float) -> StoredRecord | None: ...

    def put(self, record: Record, publisher: PeerId | None, now: float) -> StoredRecord:
        """Validate and store; raises ``InvalidRecord`` subclasses or
        ``StorageQuotaExceeded``."""
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

    def put(self, record: Record, publisher: PeerId | None, now: float) -> StoredRecord:
        self.check(record, now)
        existing = self.get(record.key, now)
        if existing is not None and existing.record.value != record.value:
            if not self.registry.replaces(record.key, existing.record.value, record.value, now):
                raise StaleRecord("the record held here is better than the one offered")
        if existing is None and len(self._records) >= self.config.max_records:
            self.expire(now)
            if len(self._records) >= self.config.max_records:
                raise StorageQuotaExceeded(f"record store is full ({self.config.max_records})")
        if publisher is not None and (existing is None or existing.publisher != publisher):
            if self._per_peer.get(publisher, 0) >= self.config.max_records_per_peer:
                raise StorageQuotaExceeded(
                    f"{publisher} already stores {self.config.max_records_per_peer} records here"
                )
        if existing is not None:
            self._forget(existing)
        stored = StoredRecord(
            Record(record.key, record.value, rfc3339(now)),
            publisher,
            now,
            now + self.config.record_ttl,
        )
        self._keep(stored)
        return stored

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
        if stored.publisher is not None:
            self._per_peer[stored.publisher] = self._per_peer.get(stored.publisher, 0) + 1

    def _forget(self, stored: StoredRecord) -> None:
        del self._records[stored.record.key]
        if stored.publisher is not None:
            left = self._per_peer[stored.publisher] - 1
            if left:
                self._per_peer[stored.publisher] = left
            else:
                del self._per_peer[stored.publisher]
