"""When a client re-registers (pure): each registration is refreshed once
``refresh_fraction`` of its granted TTL has passed, and a failed refresh is
retried every ``retry_interval`` until the TTL would have ended.  Takes a
monotonic ``now``; the driver (``client.Refresher``) does the requests."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.identity import PeerId

__all__ = ["RefreshConfig", "RefreshDue", "RefreshEntry", "RefreshPlan"]


@dataclass(frozen=True, slots=True)
class RefreshConfig:
    refresh_fraction: float = 0.75
    """Refresh after this share of the granted TTL: a quarter of it is left
    for retries (30 min of a 2 h registration)."""
    retry_interval: float = 30.0
    """Seconds between attempts after a failed refresh."""

    def __post_init__(self) -> None:
        if not 0.1 <= self.refresh_fraction < 1.0:
            raise ValueError("refresh_fraction must be in [0.1, 1)")
        if self.retry_interval <= 0:
            raise ValueError("retry_interval must be positive")


@dataclass(frozen=True, slots=True)
class RefreshDue:
    """Re-register ``ns`` at ``point`` asking for ``ttl`` (None: the default)."""

    point: PeerId
    ns: str
    ttl: int | None


@dataclass(slots=True)
class RefreshEntry:
    ttl: int | None
    granted: int
    expires: float
    next_at: float
    in_flight: bool = False
    failures: int = 0


class RefreshPlan:
    """The registrations a client keeps alive, keyed by (point, namespace)."""

    def __init__(self, config: RefreshConfig | None = None) -> None:
        self.config = config or RefreshConfig()
        self._entries: dict[tuple[PeerId, str], RefreshEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> dict[tuple[PeerId, str], RefreshEntry]:
        return dict(self._entries)

    def registered(self, point: PeerId, ns: str, ttl: int | None, granted: int,
                   now: float) -> None:
        """A REGISTER at ``point`` succeeded with ``granted`` seconds."""
        self._entries[(point, ns)] = RefreshEntry(
            ttl, granted, now + granted, now + granted * self.config.refresh_fraction)

    def refreshed(self, point: PeerId, ns: str, granted: int, now: float) -> bool:
        """A refresh succeeded; False if the registration was dropped
        meanwhile (an unregister raced it), which the driver must then undo."""
        entry = self._entries.get((point, ns))
        if entry is None:
            return False
        self.registered(point, ns, entry.ttl, granted, now)
        return True

    def failed(self, point: PeerId, ns: str, now: float) -> bool:
        """A refresh failed: retry later, or give up (False) once the
        registration has expired anyway."""
        entry = self._entries.get((point, ns))
        if entry is None:
            return False
        entry.in_flight = False
        entry.failures += 1
        if now + self.config.retry_interval >= entry.expires:
            del self._entries[(point, ns)]
            return False
        entry.next_at = now + self.config.retry_interval
        return True

    def remove(self, point: PeerId, ns: str) -> None:
        self._entries.pop((point, ns), None)

    def next_deadline(self) -> float | None:
        waiting = [e.next_at for e in self._entries.values() if not e.in_flight]
        return min(waiting) if waiting else None

    def due(self, now: float) -> list[RefreshDue]:
        """Refreshes to start now; each stays in flight until ``registered``
        or ``failed`` reports its outcome."""
        out: list[RefreshDue] = []
        for (point, ns), entry in self._entries.items():
            if not entry.in_flight and entry.next_at <= now:
                entry.in_flight = True
                out.append(RefreshDue(point, ns, entry.ttl))
        return out
