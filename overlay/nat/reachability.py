"""Whether this node can be dialled, from per-address AutoNAT results (pure).

AutoNAT v2 tests one address per request, so the evidence is per address:
server S dialled address A at time t and got through (a confirmation) or
did not (a refutation).  The tracker keeps the latest result per (address,
server), forgets results older than ``result_ttl``, and judges each address
with the spec's suggested heuristic (several servers must agree, so one
lying or misconfigured server cannot flip a verdict on its own).

The node is ``PUBLIC`` when at least one address is confirmed, ``PRIVATE``
when no address is confirmed and at least one is refuted, ``UNKNOWN``
otherwise.  Other subsystems (auto-relay above all) subscribe to changes
through a ``ReachabilitySource``: the AutoNAT service is one, and a test can
be another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

__all__ = [
    "Reachability",
    "TrackerConfig",
    "AddressVerdict",
    "ReachabilityState",
    "ReachabilityTracker",
    "ReachabilityListener",
    "ReachabilitySource",
    "UNKNOWN_STATE",
]


class Reachability(Enum):
    PUBLIC = "public"
    """At least one of our addresses was dialled back by enough servers."""
    PRIVATE = "private"
    """Every address with a verdict was refuted: other nodes cannot dial us."""
    UNKNOWN = "unknown"
    """Not enough evidence either way (yet, or any more)."""


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    confirmations: int = 3
    """Servers that must report a successful dial-back before an address is
    reachable.  The spec suggests more than three; small networks (and
    labs) lower it."""
    refutations: int = 3
    """Servers that must report a failed dial-back before an address is
    unreachable."""
    result_ttl: float = 3600.0
    """Seconds a server's result counts; after that the address needs a new
    test (NATs and firewalls change under a running node)."""
    max_servers_per_address: int = 8
    """Results kept per address; the oldest server's result goes first, so
    memory is bounded whatever the servers say."""
    max_addresses: int = 64
    """Addresses tracked at once; the least recently tested goes first."""

    def __post_init__(self) -> None:
        if self.confirmations < 1 or self.refutations < 1:
            raise ValueError("confirmations and refutations must be at least 1")
        if self.result_ttl <= 0:
            raise ValueError("result_ttl must be positive")
        if self.max_servers_per_address < max(self.confirmations, self.refutations):
            raise ValueError("max_servers_per_address must allow a verdict")
        if self.max_addresses < 1:
            raise ValueError("max_addresses must be at least 1")


@dataclass(frozen=True, slots=True)
class AddressVerdict:
    addr: str
    reachability: Reachability
    confirmed_by: tuple[str, ...]
    """Servers (peer IDs as text) whose current result is a successful dial."""
    refuted_by: tuple[str, ...]
    expires_at: float | None
    """When the earliest result behind this verdict expires (None: no results)."""

    @property
    def reason(self) -> str:
        ok, bad = len(self.confirmed_by), len(self.refuted_by)
        if self.reachability is Reachability.PUBLIC:
            return f"{self.addr} dialled back by {ok} server{'s' if ok != 1 else ''}"
        if self.reachability is Reachability.PRIVATE:
            return f"{self.addr} not reachable: {bad} server{'s' if bad != 1 else ''} failed to dial it"
        return f"{self.addr} undecided ({ok} confirmed, {bad} refuted)"


@dataclass(frozen=True, slots=True)
class ReachabilityState:
    reachability: Reachability
    reasons: tuple[str, ...]
    """One line per address with a verdict or partial evidence."""
    confirmed: tuple[str, ...] = ()
    """Addresses that may be advertised."""
    refuted: tuple[str, ...] = ()
    """Addresses that must never be advertised."""
    expires_at: float | None = None
    """When some result behind this state expires, so it may change."""

    def same_verdict(self, other: ReachabilityState) -> bool:
        """Equal for listeners: reasons and expiry may differ in wording."""
        return (self.reachability is other.reachability and self.confirmed == other.confirmed
                and self.refuted == other.refuted)


UNKNOWN_STATE = ReachabilityState(Reachability.UNKNOWN, ("no address has been tested",))

ReachabilityListener = Callable[[ReachabilityState], None]


class ReachabilitySource(Protocol):
    """What a subscriber (auto-relay, the daemon's status) needs."""

    @property
    def state(self) -> ReachabilityState: ...

    def on_change(self, callback: ReachabilityListener) -> Callable[[], None]:
        """Call ``callback(new_state)`` whenever the node's reachability or its
        confirmed / refuted addresses change; returns the unsubscribe function."""
        ...


@dataclass(slots=True)
class _Result:
    reachable: bool
    at: float


@dataclass(slots=True)
class _Address:
    results: dict[str, _Result] = field(default_factory=dict)
    last_tested: float = 0.0


class ReachabilityTracker:
    """Per-address results in, verdicts and the node's reachability out."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._addrs: dict[str, _Address] = {}

    def record(self, addr: str, server: str, reachable: bool, now: float) -> None:
        """Server ``server`` did (``reachable``) or did not dial ``addr``."""
        entry = self._addrs.pop(addr, None) or _Address()
        entry.results.pop(server, None)
        entry.results[server] = _Result(reachable, now)
        entry.last_tested = now
        while len(entry.results) > self.config.max_servers_per_address:
            del entry.results[next(iter(entry.results))]
        self._addrs[addr] = entry  # re-inserted: dict order is test order
        while len(self._addrs) > self.config.max_addresses:
            del self._addrs[next(iter(self._addrs))]

    def forget(self, addr: str) -> None:
        """Drop everything known about ``addr`` (we no longer have it)."""
        self._addrs.pop(addr, None)

    def expire(self, now: float) -> None:
        """Drop results older than ``result_ttl`` and addresses left empty."""
        cutoff = now - self.config.result_ttl
        for addr in list(self._addrs):
            entry = self._addrs[addr]
            entry.results = {s: r for s, r in entry.results.items() if r.at > cutoff}
            if not entry.results:
                del self._addrs[addr]

    def verdict(self, addr: str, now: float) -> AddressVerdict:
        entry = self._addrs.get(addr)
        cutoff = now - self.config.result_ttl
        live = {s: r for s, r in entry.results.items() if r.at > cutoff} if entry else {}
        ok = tuple(sorted(s for s, r in live.items() if r.reachable))
        bad = tuple(sorted(s for s, r in live.items() if not r.reachable))
        if len(ok) >= self.config.confirmations and len(ok) > len(bad):
            verdict = Reachability.PUBLIC
        elif len(bad) >= self.config.refutations and len(bad) > len(ok):
            verdict = Reachability.PRIVATE
        else:
            verdict = Reachability.UNKNOWN
        expires = min((r.at for r in live.values()), default=None)
        return AddressVerdict(addr, verdict, ok, bad,
                              None if expires is None else expires + self.config.result_ttl)

    def verdicts(self, now: float) -> list[AddressVerdict]:
        return [self.verdict(addr, now) for addr in sorted(self._addrs)]

    def last_tested(self, addr: str) -> float | None:
        entry = self._addrs.get(addr)
        return entry.last_tested if entry else None

    def tested_by(self, addr: str, now: float) -> frozenset[str]:
        """Servers with a live result for ``addr`` (ask others next)."""
        entry = self._addrs.get(addr)
        if entry is None:
            return frozenset()
        cutoff = now - self.config.result_ttl
        return frozenset(s for s, r in entry.results.items() if r.at > cutoff)

    def state(self, now: float, current: Iterable[str] | None = None) -> ReachabilityState:
        """The node's reachability; ``current`` limits it to addresses we
        still have (an address we lost says nothing about us now)."""
        keep = None if current is None else set(current)
        verdicts = [v for v in self.verdicts(now) if keep is None or v.addr in keep]
        with_evidence = [v for v in verdicts if v.confirmed_by or v.refuted_by]
        if not with_evidence:
            return UNKNOWN_STATE
        confirmed = tuple(v.addr for v in verdicts if v.reachability is Reachability.PUBLIC)
        refuted = tuple(v.addr for v in verdicts if v.reachability is Reachability.PRIVATE)
        if confirmed:
            node = Reachability.PUBLIC
        elif refuted:
            node = Reachability.PRIVATE
        else:
            node = Reachability.UNKNOWN
        expiries = [v.expires_at for v in with_evidence if v.expires_at is not None]
        return ReachabilityState(node, tuple(v.reason for v in with_evidence), confirmed,
                                 refuted, min(expiries) if expiries else None)

    def next_deadline(self) -> float | None:
        """When the earliest result expires (call ``expire`` then)."""
        times = [r.at for e in self._addrs.values() for r in e.results.values()]
        return min(times) + self.config.result_ttl if times else None
