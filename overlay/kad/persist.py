"""A record store that survives restarts: the in-memory policy plus an
append-only journal (``overlay.statefile.Journal``), so a put costs one
line of its own size, never a rewrite of the store (STYLE rule 16).

This adapter does no I/O on a put: it queues the line and calls
``on_change``; the daemon's ``StateWriter`` appends and fsyncs the queued
lines from a worker thread, coalesced, and compacts the log once it is
mostly superseded lines.  Expiry is not logged (load drops expired
records).  On load every record is validated again (validators may have
changed) and expired ones are dropped; a file of another format or a
corrupt line raises ``CorruptState``.  The version 1 file
(``records.json``, one JSON document) beside the log is read once and
removed after the first compaction has written its records to the log.

Provider entries are kept the same way (``persist_providers``), so our
own announcements and those we hold for others survive a restart.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overlay.errors import InvalidPeerId
from overlay.identity import PeerId
from overlay.kad.errors import InvalidProviderKey, InvalidRecord, StorageQuotaExceeded
from overlay.kad.messages import PeerInfo
from overlay.kad.providers import ProviderStore
from overlay.kad.records import NamespaceRegistry, Record
from overlay.kad.store import MemoryRecordStore, StoreConfig, StoredRecord
from overlay.statefile import CorruptState, Journal, read_state

__all__ = [
    "FileRecordStore",
    "FORMAT",
    "FORMAT_VERSION",
    "LEGACY_FILE",
    "PROVIDERS_FORMAT",
    "encode_entry",
    "persist_providers",
]

FORMAT = "overlay-kad-records"
FORMAT_VERSION = 2
LEGACY_FILE = "records.json"
"""Version 1: one JSON document rewritten on every put."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def encode_entry(stored: StoredRecord) -> dict[str, Any]:
    return {
        "key": _b64(stored.record.key),
        "value": _b64(stored.record.value),
        "time_received": stored.record.time_received,
        "publisher": _b64(stored.publisher.multihash) if stored.publisher else None,
        "received_at": stored.received_at,
        "expires_at": stored.expires_at,
        "source": stored.source,
    }


def _parse(entry: object) -> StoredRecord | None:
    if not isinstance(entry, dict):
        return None
    try:
        publisher_raw = entry.get("publisher")
        publisher = PeerId(_unb64(publisher_raw)) if publisher_raw is not None else None
        time_received = entry.get("time_received", "")
        received_at = float(entry["received_at"])
        expires_at = float(entry["expires_at"])
        source = entry.get("source")
        if not isinstance(time_received, str) or not isinstance(source, str | None):
            return None
        record = Record(_unb64(entry["key"]), _unb64(entry["value"]), time_received)
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidPeerId):
        return None
    return StoredRecord(record, publisher, received_at, expires_at, source)


class FileRecordStore(MemoryRecordStore):
    """``path`` is the journal (``…/records.log``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: StoreConfig,
        registry: NamespaceRegistry,
        now: float,
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config, registry)
        self.path = Path(path)
        if self.path.name == LEGACY_FILE:  # a caller still naming the version 1 file
            self.path = self.path.with_name("records.log")
        self.legacy_path = self.path.with_name(LEGACY_FILE)
        line = 2 * config.max_record_bytes + 4096  # base64 and the fields
        self.journal: Journal[StoredRecord] = Journal(
            self.path, FORMAT, FORMAT_VERSION,
            snapshot=lambda: list(self._records.values()), encode=encode_entry,
            max_bytes=4 * (config.max_records + config.max_own_records) * line + (1 << 20),
            max_line_bytes=line, on_compacted=self._drop_legacy,
            count=lambda: len(self._records),
        )
        self.on_change = on_change
        self._load(now)

    def put(self, record: Record, publisher: PeerId | None, now: float,
            source: str | None = None) -> StoredRecord:
        stored = super().put(record, publisher, now, source)
        self.journal.append(encode_entry(stored))
        self.on_change()
        return stored

    def remove(self, key: bytes) -> bool:
        removed = super().remove(key)
        if removed:
            self.journal.append({"deleted": _b64(key)})
            self.on_change()
        return removed

    def expire(self, now: float) -> int:
        # Expired records are dropped on load; logging them would cost lines
        # for nothing.  Removal above logs only explicit removes.
        dead = [key for key, stored in self._records.items() if stored.expires_at <= now]
        for key in dead:
            MemoryRecordStore.remove(self, key)
        return len(dead)

    def get(self, key: bytes, now: float) -> StoredRecord | None:
        stored = self._records.get(key)
        if stored is not None and stored.expires_at <= now:
            MemoryRecordStore.remove(self, key)  # not logged, as in expire
            return None
        return stored

    def _drop_legacy(self) -> None:
        try:
            self.legacy_path.unlink()
        except FileNotFoundError:
            pass

    def _load(self, now: float) -> None:
        latest: dict[bytes, StoredRecord | None] = {}
        if self.path.exists():
            for entry in self.journal.replay():
                deleted = entry.get("deleted")
                if deleted is not None:
                    try:
                        latest[_unb64(deleted)] = None
                    except (ValueError, binascii.Error):
                        raise CorruptState(f"{self.path}: bad deletion line") from None
                    continue
                stored = _parse(entry)
                if stored is not None:
                    latest[stored.record.key] = stored
        elif self.legacy_path.exists():
            found = read_state(self.legacy_path, FORMAT, (1,),
                               self.journal.max_bytes, legacy=True)
            entries = found[1].get("records") if found is not None else []
            if not isinstance(entries, list):
                raise CorruptState(f"record store {self.legacy_path} has no record list")
            for entry in entries:
                stored = _parse(entry)
                if stored is not None:
                    latest[stored.record.key] = stored
            self.journal.compact_soon()
        for stored in latest.values():
            if stored is None or stored.expires_at <= now:
                continue
            try:
                self.check(stored.record, now)
            except InvalidRecord:
                continue  # no longer valid here (validator or limits changed)
            if self._admits(stored):
                self._keep(stored)

    def _admits(self, stored: StoredRecord) -> bool:
        """Limits may have shrunk since the file was written."""
        cfg = self.config
        if stored.publisher is None:
            return self._own < cfg.max_own_records
        if self._foreign >= cfg.max_records:
            return False
        if self._per_peer.get(stored.publisher, 0) >= cfg.max_records_per_peer:
            return False
        return stored.source is None or self._per_source.get(
            stored.source, 0) < cfg.max_records_per_source


PROVIDERS_FORMAT = "overlay-kad-providers"
PROVIDERS_VERSION = 1
_PROVIDER_LINE = 4096  # a key of 80 bytes and 8 short addresses, in base64


def _encode_provider(item: tuple[bytes, PeerInfo, float, str | None, bool]) -> dict[str, Any]:
    key, info, expires, source, own = item
    return {"key": _b64(key), "peer": _b64(info.peer_id.multihash),
            "addrs": [_b64(a) for a in info.addrs], "expires_at": expires,
            "source": source, "own": own}


def persist_providers(store: ProviderStore, path: str | os.PathLike[str], now: float,
                      on_change: Callable[[], None]) -> Journal[
                          tuple[bytes, PeerInfo, float, str | None, bool]]:
    """Load ``path`` into ``store`` and log every later entry to it;
    returns the journal for a ``StateWriter``.  Expiry is not logged (load
    drops expired entries); entries over today's quotas are skipped."""
    cfg = store.config
    journal: Journal[tuple[bytes, PeerInfo, float, str | None, bool]] = Journal(
        path, PROVIDERS_FORMAT, PROVIDERS_VERSION, snapshot=store.items,
        encode=_encode_provider, max_line_bytes=_PROVIDER_LINE,
        count=store.entry_count,
        max_bytes=4 * (cfg.max_keys * cfg.max_providers_per_key + cfg.max_own_keys)
        * _PROVIDER_LINE)
    for entry in journal.replay():
        try:
            key = _unb64(entry["key"])
            peer = PeerId(_unb64(entry["peer"]))
            raw_addrs = entry.get("addrs", [])
            addrs = tuple(_unb64(a) for a in raw_addrs) if isinstance(raw_addrs, list) else ()
            expires = float(entry["expires_at"])
            source = entry.get("source")
            own = entry.get("own") is True
        except (KeyError, TypeError, ValueError, binascii.Error, InvalidPeerId):
            continue
        if expires <= now or not isinstance(source, str | None):
            continue
        try:
            store.add(key, PeerInfo(peer, addrs), now, source=source, own=own,
                      expires_at=expires)
        except (InvalidProviderKey, StorageQuotaExceeded):
            continue

    def logged(key: bytes, info: PeerInfo, expires: float, source: str | None,
               own: bool) -> None:
        journal.append(_encode_provider((key, info, expires, source, own)))
        on_change()

    store.on_add = logged
    return journal
