"""When to republish and re-replicate, as actions from ``on_timer``.

- The original publisher of a record republishes it (``RepublishRecord``)
  so it outlives the holders' TTL; a provider re-announces its keys
  (``Reprovide``) well inside the 48 h provider validity.
- A holder re-replicates the records it stores (``ReplicateRecord``,
  Kademlia's hourly republish).  The driver runs a FIND_NODE for the key
  and asks ``new_replicas`` which of the closest peers have not been given
  the record yet, so replication traffic only flows when the closest set
  changed.

Times are wall-clock seconds passed in as ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from overlay.identity import PeerId

__all__ = [
    "RepublishConfig",
    "RepublishRecord",
    "ReplicateRecord",
    "Reprovide",
    "RepublishAction",
    "Republisher",
]


@dataclass(frozen=True, slots=True)
class RepublishConfig:
    """Republish intervals."""

    record_republish_interval: float = 22 * 3600.0
    """Publisher's republish period, inside the holders' 36 h record TTL."""
    replicate_interval: float = 3600.0
    """Holder's re-replication period (Kademlia: one hour)."""
    reprovide_interval: float = 22 * 3600.0
    """Provider re-announcement period, inside the 48 h validity."""

    def __post_init__(self) -> None:
        if min(self.record_republish_interval, self.replicate_interval, self.reprovide_interval) <= 0:
            raise ValueError("republish intervals must be positive")


@dataclass(frozen=True, slots=True)
class RepublishRecord:
    key: bytes


@dataclass(frozen=True, slots=True)
class ReplicateRecord:
    key: bytes


@dataclass(frozen=True, slots=True)
class Reprovide:
    key: bytes


RepublishAction = RepublishRecord | ReplicateRecord | Reprovide


class Republisher:
    def __init__(self, config: RepublishConfig) -> None:
        self.config = config
        self._published: dict[bytes, float] = {}  # key -> next due time
        self._held: dict[bytes, float] = {}
        self._provided: dict[bytes, float] = {}
        self._replicas: dict[bytes, frozenset[PeerId]] = {}

    def published(self, key: bytes, now: float) -> None:
        """We published ``key`` (just now)."""
        self._published[key] = now + self.config.record_republish_interval

    def unpublish(self, key: bytes) -> None:
        self._published.pop(key, None)

    def provided(self, key: bytes, now: float) -> None:
        self._provided[key] = now + self.config.reprovide_interval

    def unprovide(self, key: bytes) -> None:
        self._provided.pop(key, None)

    def stored(self, key: bytes, now: float) -> None:
        """We hold ``key`` for someone else; replicate it periodically."""
        self._held.setdefault(key, now + self.config.replicate_interval)

    def dropped(self, key: bytes) -> None:
        self._held.pop(key, None)
        self._replicas.pop(key, None)

    def new_replicas(self, key: bytes, closest: Iterable[PeerId]) -> frozenset[PeerId]:
        """The peers among the current closest set that were not given
        ``key`` at the last replication; remembers the new set."""
        current = frozenset(closest)
        fresh = current - self._replicas.get(key, frozenset())
        self._replicas[key] = current
        return fresh

    def next_deadline(self) -> float | None:
        times = [*self._published.values(), *self._held.values(), *self._provided.values()]
        return min(times) if times else None

    def on_timer(self, now: float) -> list[RepublishAction]:
        actions: list[RepublishAction] = []
        for key, due in list(self._published.items()):
            if due <= now:
                self._published[key] = now + self.config.record_republish_interval
                actions.append(RepublishRecord(key))
        for key, due in list(self._held.items()):
            if due <= now:
                self._held[key] = now + self.config.replicate_interval
                # Our own records are republished in full; no need to replicate too.
                if key not in self._published:
                    actions.append(ReplicateRecord(key))
        for key, due in list(self._provided.items()):
            if due <= now:
                self._provided[key] = now + self.config.reprovide_interval
                actions.append(Reprovide(key))
        return actions
