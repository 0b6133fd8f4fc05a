"""The resolver's persistent state: the resource map (cache) and the owner
pins, kept in memory and written to disk after changes.

Writes are atomic (``overlay.naming.store``: temporary file, fsync,
rename, mode 0600) and never on the loop: ``mark_dirty`` after a change
wakes the owner's ``StateWriter`` (``on_dirty``), which calls ``prepare``
on the loop (a copy of both documents) and writes them from a worker
thread, coalesced, and once more at shutdown.  A cache file that
cannot be read is moved aside and the cache starts empty (it is only a
cache); an unreadable pins file stops the start, because silently dropping
pins would re-open trust on first use for every name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from overlay.naming.cache import CacheConfig, ResourceMap
from overlay.naming.config import NamingConfig
from overlay.naming.errors import CorruptState
from overlay.naming.pins import OwnerPins
from overlay.naming.record import NameRecord
from overlay.naming.store import load_cache, load_pins, save_cache, save_pins, write_json
from overlay.naming.validate import validate

__all__ = ["CACHE_FILE", "PINS_FILE", "ResolverState"]

log = logging.getLogger(__name__)

CACHE_FILE = "resource-map.json"
PINS_FILE = "owner-pins.json"


class ResolverState:
    """Cache and pins of one resolver; ``directory=None`` keeps them in memory."""

    def __init__(
        self,
        directory: Path | None,
        naming: NamingConfig,
        cache_config: CacheConfig = CacheConfig(),
        max_pins: int = 10_000,
    ) -> None:
        self.directory = directory
        self.naming = naming
        self.cache_config = cache_config
        self.max_pins = max_pins
        self.cache = ResourceMap(cache_config)
        self.pins = OwnerPins(max_pins)
        self._dirty = False
        self.flushes = 0
        self.on_dirty: Callable[[], None] | None = None

    @property
    def dirty(self) -> bool:
        return self._dirty

    def _validator(self, data: bytes, now: float) -> NameRecord:
        return validate(data, now, self.naming)

    def load(self, now: float) -> None:
        """Read both files; raises ``CorruptState`` for unreadable pins."""
        if self.directory is None:
            return
        self.pins = load_pins(self.directory / PINS_FILE, self.max_pins)
        cache_path = self.directory / CACHE_FILE
        try:
            self.cache = load_cache(cache_path, now, self._validator, self.cache_config)
        except CorruptState as exc:
            aside = cache_path.with_name(cache_path.name + ".corrupt")
            log.warning("resource map %s is unreadable (%s); moved to %s", cache_path, exc, aside)
            os.replace(cache_path, aside)
            self.cache = ResourceMap(self.cache_config)

    def mark_dirty(self) -> None:
        self._dirty = True
        if self.on_dirty is not None:
            self.on_dirty()

    def prepare(self) -> Callable[[], None] | None:
        """For a ``StateWriter``: both documents now, written in the thread."""
        if not self._dirty or self.directory is None:
            self._dirty = False
            return None
        self._dirty = False
        directory, pins, cache = self.directory, self.pins.to_dict(), self.cache.to_dict()

        def job() -> None:
            write_json(directory / PINS_FILE, pins)
            write_json(directory / CACHE_FILE, cache)
            self.flushes += 1

        return job

    def requeue(self, job: Callable[[], None]) -> None:
        self._dirty = True  # the failed write is redone with the state of then

    def flush(self) -> bool:
        """Write both files if something changed; returns whether it wrote."""
        if not self._dirty or self.directory is None:
            self._dirty = False
            return False
        self._dirty = False
        save_pins(self.directory / PINS_FILE, self.pins)
        save_cache(self.directory / CACHE_FILE, self.cache)
        self.flushes += 1
        return True
