"""File adapters for the naming state: owner pins and the resource map.

Versioned JSON in the envelope of ``overlay.statefile`` (format, version,
size limit checked before reading), written atomically with mode 0600:
which names a node resolved is private.  A missing file is an empty state;
an unreadable one raises ``CorruptState`` rather than being silently
replaced, since dropping pins would re-open trust on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from overlay import statefile
from overlay.fsutil import atomic_write
from overlay.naming.cache import CACHE_FORMAT, CACHE_VERSION, CacheConfig, ResourceMap
from overlay.naming.errors import CorruptState
from overlay.naming.pins import PINS_FORMAT, PINS_VERSION, OwnerPins
from overlay.naming.record import NameRecord
from overlay.statefile import read_state

__all__ = ["MAX_STATE_FILE_BYTES", "load_cache", "load_pins", "save_cache", "save_pins",
           "write_json"]

MAX_STATE_FILE_BYTES = 64 * 1024 * 1024
_MODE = 0o600


def write_json(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    atomic_write(path, data, _MODE)


def _read_json(path: str | os.PathLike[str], fmt: str, version: int) -> dict[str, Any] | None:
    try:
        found = read_state(path, fmt, (version,), MAX_STATE_FILE_BYTES)
    except statefile.CorruptState as exc:
        raise CorruptState(str(exc)) from None
    return None if found is None else found[1]


def save_pins(path: str | os.PathLike[str], pins: OwnerPins) -> None:
    write_json(path, pins.to_dict())


def load_pins(path: str | os.PathLike[str], max_entries: int = 10_000) -> OwnerPins:
    doc = _read_json(path, PINS_FORMAT, PINS_VERSION)
    if doc is None:
        return OwnerPins(max_entries)
    return OwnerPins.from_dict(doc, max_entries)


def save_cache(path: str | os.PathLike[str], cache: ResourceMap) -> None:
    write_json(path, cache.to_dict())


def load_cache(
    path: str | os.PathLike[str],
    now: float,
    validator: Callable[[bytes, float], NameRecord],
    config: CacheConfig = CacheConfig(),
) -> ResourceMap:
    doc = _read_json(path, CACHE_FORMAT, CACHE_VERSION)
    if doc is None:
        return ResourceMap(config)
    return ResourceMap.from_dict(doc, now, validator, config)
