"""A record store that survives restarts: the in-memory policy, saved as
versioned JSON with atomic writes after every change.

This adapter is the only kad module that touches the file system.  On load
every record is validated again (validators may have changed) and expired
ones are dropped; a file of an unknown version or shape raises
``ConfigError`` rather than being silently discarded.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from overlay.errors import ConfigError, InvalidPeerId
from overlay.fsutil import atomic_write
from overlay.identity import PeerId
from overlay.kad.errors import InvalidRecord
from overlay.kad.records import NamespaceRegistry, Record
from overlay.kad.store import MemoryRecordStore, StoreConfig, StoredRecord

__all__ = ["FileRecordStore", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


class FileRecordStore(MemoryRecordStore):
    def __init__(
        self,
        path: str | os.PathLike[str],
        config: StoreConfig,
        registry: NamespaceRegistry,
        now: float,
    ) -> None:
        super().__init__(config, registry)
        self.path = Path(path)
        self._loading = False
        if self.path.exists():
            self._load(now)

    def put(self, record: Record, publisher: PeerId | None, now: float) -> StoredRecord:
        stored = super().put(record, publisher, now)
        self.save()
        return stored

    def remove(self, key: bytes) -> bool:
        removed = super().remove(key)
        if removed and not self._loading:
            self.save()
        return removed

    def save(self) -> None:
        entries: list[dict[str, Any]] = [
            {
                "key": _b64(stored.record.key),
                "value": _b64(stored.record.value),
                "time_received": stored.record.time_received,
                "publisher": _b64(stored.publisher.multihash) if stored.publisher else None,
                "received_at": stored.received_at,
                "expires_at": stored.expires_at,
            }
            for stored in self
        ]
        document = {"version": FORMAT_VERSION, "records": entries}
        atomic_write(self.path, json.dumps(document, sort_keys=True).encode("utf-8"), mode=0o600)

    def _load(self, now: float) -> None:
        try:
            document = json.loads(self.path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"record store {self.path} is unreadable: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ConfigError(f"record store {self.path} has an unsupported format version")
        entries = document.get("records")
        if not isinstance(entries, list):
            raise ConfigError(f"record store {self.path} has no record list")
        self._loading = True
        try:
            for entry in entries:
                stored = self._parse(entry)
                if stored is None or stored.expires_at <= now:
                    continue
                try:
                    self.check(stored.record, now)
                except InvalidRecord:
                    continue  # no longer valid here (validator or limits changed)
                if self.get(stored.record.key, now) is None:
                    self._keep(stored)
        finally:
            self._loading = False

    def _parse(self, entry: object) -> StoredRecord | None:
        if not isinstance(entry, dict):
            return None
        try:
            publisher_raw = entry.get("publisher")
            publisher = PeerId(_unb64(publisher_raw)) if publisher_raw is not None else None
            time_received = entry.get("time_received", "")
            received_at = float(entry["received_at"])
            expires_at = float(entry["expires_at"])
            if not isinstance(time_received, str):
                return None
            record = Record(_unb64(entry["key"]), _unb64(entry["value"]), time_received)
        except (KeyError, TypeError, ValueError, binascii.Error, InvalidPeerId):
            return None
        return StoredRecord(record, publisher, received_at, expires_at)
