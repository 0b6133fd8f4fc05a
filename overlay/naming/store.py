"""File adapters for the naming state: owner pins and the resource map.

Versioned JSON, written atomically (temporary file, fsync, rename) with
mode 0600: which names a node resolved is private.  A missing file is an
empty state; an unreadable one raises ``CorruptState`` rather than being
silently replaced, since dropping pins would re-open trust on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overlay.fsutil import atomic_write
from overlay.naming.cache import CacheConfig, ResourceMap
from overlay.naming.errors import CorruptState
from overlay.naming.pins import OwnerPins
from overlay.naming.record import NameRecord

__all__ = ["MAX_STATE_FILE_BYTES", "load_cache", "load_pins", "save_cache", "save_pins"]

MAX_STATE_FILE_BYTES = 64 * 1024 * 1024
_MODE = 0o600


def _write_json(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    atomic_write(path, data, _MODE)


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    target = Path(path)
    try:
        with target.open("rb") as handle:
            data = handle.read(MAX_STATE_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_STATE_FILE_BYTES:
        raise CorruptState(f"{target} is larger than {MAX_STATE_FILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptState(f"{target} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptState(f"{target} does not hold a JSON object")
    return doc


def save_pins(path: str | os.PathLike[str], pins: OwnerPins) -> None:
    _write_json(path, pins.to_dict())


def load_pins(path: str | os.PathLike[str], max_entries: int = 10_000) -> OwnerPins:
    doc = _read_json(path)
    if doc is None:
        return OwnerPins(max_entries)
    return OwnerPins.from_dict(doc, max_entries)


def save_cache(path: str | os.PathLike[str], cache: ResourceMap) -> None:
    _write_json(path, cache.to_dict())


def load_cache(
    path: str | os.PathLike[str],
    now: float,
    validator: Callable[[bytes, float], NameRecord],
    config: CacheConfig = CacheConfig(),
) -> ResourceMap:
    doc = _read_json(path)
    if doc is None:
        return ResourceMap(config)
    return ResourceMap.from_dict(doc, now, validator, config)
