"""Re-punching, the pure part: notice that a punched path died, and decide
whether to punch again (docs/nat.md, "Keep-alive, re-punch, interface").

A NAT that forgets or moves a mapping (a reboot, a flushed conntrack, a
symmetric NAT's new port) leaves a punched QUIC connection sending into
nothing until its idle timeout.  The driver samples each watched direct
connection (``PathSample``: when a datagram last came from the peer's
address, open streams, recent data) and feeds the samples here with ``now``;
out come actions as data:

- ``Probe``: the path has been silent for ``probe_after`` seconds while the
  peer matters: send a QUIC PING, which the peer acknowledges at once;
- ``CloseDead``: nothing came back within ``dead_after`` seconds of silence
  (and ``probe_grace`` after the first probe): close it, so its streams fail
  now instead of at the idle timeout and new streams take another path;
- ``Redial``: dial the peer through its relay, then close the dead path
  (so that streams retried on its failure find the relayed connection
  instead of dialling stale direct addresses); the peer, dialled through
  the relay, starts DCUtR (``EnsurePunch`` starts it from our side when
  the peer did not within ``upgrade_after``).  A failed relay dial is
  retried once after ``retry_after``;
- ``RefreshAddrs``: with a re-punch decided, ask our relays again what
  address they see us at: after our own mapping moved, the punch must
  offer the new one, not what identify said before;
- ``Declined``: the path is dead but the peer is left alone (why: a limit).

A path that closes under us before our verdict (QUIC's idle timeout, ICMP
port-unreachable: the driver says so in ``lost``) is dead too, and a
direct connection that opens while a re-punch of its peer runs, or just
after, is the re-punch's work (``repunching``: the driver marks it punched).

A peer matters while a connection to it has streams open or brought data
within ``busy_window``; an idle peer's path is never probed here (QUIC's
keep-alive and idle timeout take their course, and its next use dials the
relay as before).  Limits: the punch that made the connection and every
re-punch count against DCUtR's own per-peer budget (``per_peer`` in
``per_peer_window``), re-punches of one peer are spaced by a doubling
``backoff``, and all peers together get ``per_minute``.  When both sides
notice at once, the one with the larger peer ID waits ``yield_delay`` for
the other's relayed connection instead of dialling too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Action",
    "CloseDead",
    "Declined",
    "EnsurePunch",
    "PathSample",
    "Probe",
    "Redial",
    "RefreshAddrs",
    "RepunchConfig",
    "RepunchPolicy",
]

MAX_PEERS = 1024
"""Peers whose re-punch history and status are kept (oldest dropped)."""


@dataclass(frozen=True, slots=True)
class RepunchConfig:
    probe_after: float = 3.0
    """Seconds without a packet from the peer before a path that matters is probed."""
    probe_interval: float = 1.0
    """Seconds between probes while it stays silent."""
    dead_after: float = 6.0
    """Seconds of silence, probes unanswered, that make a path dead (QUIC's
    idle timeout is 30 s; its keep-alive PING goes every 15 s)."""
    probe_grace: float = 1.0
    """Seconds the first probe gets to be answered (at least 4 RTTs)."""
    busy_window: float = 30.0
    """A peer that sent data this recently matters (so does one with streams open)."""
    yield_delay: float = 1.0
    """Seconds the side with the larger peer ID waits for the other's redial."""
    retry_after: float = 2.0
    """Seconds before the one retry of a failed relay dial."""
    upgrade_after: float = 3.0
    """Seconds after our redial before we start DCUtR ourselves (the peer,
    dialled through the relay, normally starts it within a round trip)."""
    outcome_timeout: float = 40.0
    """Seconds after the verdict to wait for a direct connection (DCUtR's
    three attempts take about 17 s) before the re-punch counts as failed."""
    backoff: float = 10.0
    """Seconds between two re-punches of one peer, doubled for each further one."""
    backoff_max: float = 300.0
    per_peer: int = 3
    """Punches per peer in ``per_peer_window``, the one that made the
    connection included: DCUtR's ``sessions_per_peer``, never more."""
    per_peer_window: float = 600.0
    per_minute: int = 10
    """Re-punches per minute across all peers."""
    sample_interval: float = 0.5
    """Seconds between samples while a path is watched."""

    def __post_init__(self) -> None:
        if min(self.probe_after, self.probe_interval, self.probe_grace, self.busy_window,
               self.upgrade_after, self.outcome_timeout, self.backoff, self.per_peer_window,
               self.sample_interval) <= 0 or self.yield_delay < 0:
            raise ValueError("re-punch timings must be positive")
        if not self.probe_after < self.dead_after:
            raise ValueError("dead_after must be longer than probe_after")
        if self.backoff_max < self.backoff:
            raise ValueError("backoff_max must be at least backoff")
        if self.per_peer < 1 or self.per_minute < 1:
            raise ValueError("re-punch caps must be at least 1")


@dataclass(frozen=True, slots=True)
class PathSample:
    """One watched direct connection as the driver sees it at ``now``."""

    key: Hashable
    """The connection (the driver's handle)."""
    peer: str
    remote: str
    """Where its packets go now (QUIC migration changes it)."""
    last_received: float | None
    """Monotonic time of the last datagram from the peer's current address."""
    last_data: float | None
    """Same, for the last one that carried stream data or a datagram."""
    open_streams: int
    rtt: float | None
    punched: bool
    """Hole punching made it (its punch counts against the peer's budget)."""
    peer_id_smaller: bool
    """The peer's ID sorts before ours: when both notice, it redials, we wait."""


@dataclass(frozen=True, slots=True)
class Probe:
    key: Hashable


@dataclass(frozen=True, slots=True)
class CloseDead:
    key: Hashable
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class Redial:
    peer: str
    reason: str
    dead: Hashable | None
    """The dead path, to close once the relayed connection is up (or soon)."""


@dataclass(frozen=True, slots=True)
class RefreshAddrs:
    """Learn our public address again from the peer's relays (identify)."""

    peer: str


@dataclass(frozen=True, slots=True)
class EnsurePunch:
    """Start DCUtR on the relayed connection unless a session with the peer runs."""

    peer: str


@dataclass(frozen=True, slots=True)
class Declined:
    peer: str
    reason: str


Action = Probe | CloseDead | RefreshAddrs | Redial | EnsurePunch | Declined


@dataclass(slots=True)
class _Path:
    sample: PathSample
    since: float
    first_probe: float | None = None
    last_probe: float | None = None
    suspect: str | None = None
    """Why to probe before ``probe_after`` (our mapping changed)."""


@dataclass(slots=True)
class _Pending:
    reason: str
    dead_at: float
    silent_for: float
    stage: str
    """``yielding`` (the peer may redial first), ``dialling``, ``retry``
    (after a failed dial) or ``waiting`` (for the direct connection)."""
    until: float
    """When the stage ends: the yield, the fallback upgrade, the outcome."""
    waited_upgrade: bool = False
    dead: Hashable | None = None
    """The dead path while we yield (closed when the peer's dial comes)."""
    retried: bool = False


@dataclass(slots=True)
class PeerRecord:
    """What ``status`` says about one peer."""

    repunches: int = 0
    last_reason: str | None = None
    last_at: float | None = None
    detect_after: float | None = None
    """Seconds from the last packet to the verdict, last time."""
    direct_after: float | None = None
    """Seconds from the verdict to a direct connection again, last time."""
    last_outcome: str | None = None
    direct_at: float | None = None
    """When a direct connection came back, last time."""
    punches: deque[float] = field(default_factory=deque)
    """Times of punches counted against the per-peer budget."""


_COUNTERS = ("probes", "dead", "lost", "repunches", "peer_redialled", "direct_again", "still_relayed",
             "dial_failed", "declined_rate", "declined_backoff", "migrated", "mapping_changes")


class RepunchPolicy:
    """The decisions; the driver calls ``on_sample`` every ``sample_interval``
    (``next_deadline``) and reports events with the other ``on_*`` methods."""

    def __init__(self, config: RepunchConfig | None = None) -> None:
        self.config = config or RepunchConfig()
        self._paths: dict[Hashable, _Path] = {}
        self._closed: set[Hashable] = set()
        """Paths we closed that the driver may still list for a moment."""
        self._pending: dict[str, _Pending] = {}
        self._records: dict[str, PeerRecord] = {}
        self._recent: deque[float] = deque()
        self._mapping: frozenset[str] | None = None
        self._last_sample: float | None = None
        self.busy = 0
        """Watched paths whose peer matters, at the last sample."""
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # -- time -------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When to sample next; None while nothing is watched or pending."""
        if not self._paths and not self._pending:
            return None
        at = (self._last_sample or 0.0) + self.config.sample_interval
        return min([at, *(p.until for p in self._pending.values())])

    @property
    def watching(self) -> int:
        return len(self._paths)

    @property
    def pending_peers(self) -> set[str]:
        """Peers with a re-punch under way."""
        return set(self._pending)

    # -- inputs -----------------------------------------------------------------

    def on_mapping(self, addrs: frozenset[str]) -> None:
        """Our public addresses as STUN saw them last; a change (not the
        first answer, nor a failed round) makes every path suspect."""
        if not addrs:
            return
        if self._mapping is not None and addrs != self._mapping:
            self.counters["mapping_changes"] += 1
            for path in self._paths.values():
                path.suspect = "our NAT mapping changed"
        self._mapping = addrs

    @property
    def watched(self) -> list[Hashable]:
        """The paths watched now (the driver tells why those that vanish closed)."""
        return list(self._paths)

    def on_sample(self, now: float, samples: Sequence[PathSample], *,
                  holepunch: bool = True,
                  lost: Mapping[Hashable, str] | None = None) -> list[Action]:
        """Every watched connection now (those missing have closed).  With
        ``holepunch`` false nothing is probed or decided.  ``lost``: paths
        missing because the path failed under them (QUIC's idle timeout,
        ICMP port-unreachable), with why; a peer that matters is then
        re-punched as if we had found the path dead ourselves.  Any other
        close (ours, the peer's CONNECTION_CLOSE) is left alone."""
        self._last_sample = now
        actions: list[Action] = []
        seen: set[Hashable] = set()
        self._closed &= {sample.key for sample in samples}
        for sample in samples:
            if sample.key in self._closed:
                continue
            seen.add(sample.key)
            path = self._paths.get(sample.key)
            if path is None:
                self._watch(sample, now, actions)
                continue
            if sample.remote != path.sample.remote:
                # QUIC validated the peer's new address and moved the path:
                # it lives, nothing to punch.
                self.counters["migrated"] += 1
                self._record(sample.peer).last_outcome = (
                    f"QUIC moved the path from {path.sample.remote} to {sample.remote}")
            path.sample = sample
        for key in [k for k in self._paths if k not in seen]:
            gone = self._paths.pop(key)
            why = (lost or {}).get(key)
            if why is not None and holepunch and self._matters(gone.sample, now):
                self.counters["lost"] += 1
                self._decide(gone, why, now - self._heard(gone), now, actions, close=False)
        self.busy = sum(self._matters(p.sample, now) for p in self._paths.values())
        if holepunch:
            for path in list(self._paths.values()):
                self._check(path, now, actions)
        self._pending_timers(now, actions)
        return actions

    def on_relayed_opened(self, peer: str, now: float) -> list[Action]:
        """The peer dialled us through a relay (call after a fresh
        ``on_sample``): it thinks the direct path is gone.  A watched path
        to it that is silent too is closed now, so the DCUtR session this
        connection starts does not stop at "already direct"."""
        actions: list[Action] = []
        pending = self._pending.get(peer)
        if pending is not None and pending.stage == "yielding":
            pending.stage, pending.until = "waiting", pending.dead_at + self.config.outcome_timeout
            pending.waited_upgrade = True  # the peer dialled: our DCUtR runs
            if pending.dead is not None:
                actions.append(CloseDead(pending.dead, peer, f"path dead: {pending.reason}"))
                pending.dead = None
            return actions
        for path in self._paths_of(peer):
            silence = now - self._heard(path)
            if silence < self.config.probe_after:
                continue
            self._drop(path)
            actions.append(CloseDead(path.sample.key, peer, "the peer redialled through the relay"))
            if peer not in self._pending:
                self.counters["peer_redialled"] += 1
                record = self._record(peer)
                record.repunches += 1
                record.punches.append(now)
                record.last_reason, record.last_at = "the peer redialled through the relay", now
                record.detect_after = None
                self._pending[peer] = _Pending("the peer redialled through the relay", now,
                                               silence, "waiting",
                                               now + self.config.outcome_timeout, True)
        return actions

    def on_dialled(self, peer: str, now: float, *, fresh: bool) -> list[Action]:
        """Our redial through the relay gave a connection; ``fresh``: a new
        one (whose arrival starts the peer's DCUtR), else one that was open."""
        pending = self._pending.get(peer)
        if pending is None or pending.stage != "dialling":
            return []
        pending.stage = "waiting"
        if fresh:
            pending.until = now + self.config.upgrade_after
            return []
        pending.waited_upgrade = True
        pending.until = pending.dead_at + self.config.outcome_timeout
        return [EnsurePunch(peer)]

    def on_dial_failed(self, peer: str, now: float, error: str) -> None:
        """The relay dial failed: retry once; then wait whether a direct
        connection comes anyway (the peer's own redial)."""
        pending = self._pending.get(peer)
        if pending is None or pending.stage != "dialling":
            return
        self.counters["dial_failed"] += 1
        self._record(peer).last_outcome = f"relay dial failed: {error}"
        if not pending.retried:
            pending.retried = True
            pending.stage, pending.until = "retry", now + self.config.retry_after
        else:
            pending.stage, pending.waited_upgrade = "waiting", True
            pending.until = pending.dead_at + self.config.outcome_timeout

    def repunching(self, peer: str, now: float, settle: float) -> bool:
        """Whether a direct connection to ``peer`` opening now comes of a
        re-punch: one is under way, or one ended direct again less than
        ``settle`` seconds ago (both sides' dials of one DCUtR session,
        its unilateral dial among them, arrive a moment apart)."""
        if peer in self._pending:
            return True
        record = self._records.get(peer)
        return (record is not None and record.direct_at is not None
                and now - record.direct_at < settle)

    # -- status -----------------------------------------------------------------

    def peer_status(self, peer: str, now: float) -> dict[str, Any] | None:
        record = self._records.get(peer)
        if record is None or (not record.repunches and record.last_outcome is None):
            return None
        pending = self._pending.get(peer)
        return {
            "count": record.repunches,
            "last_reason": record.last_reason,
            "last_age_s": None if record.last_at is None else round(now - record.last_at, 1),
            "detect_ms": _ms(record.detect_after),
            "direct_again_ms": _ms(record.direct_after),
            "last_outcome": record.last_outcome,
            "state": pending.stage if pending is not None else None,
        }

    def status(self, now: float) -> dict[str, Any]:
        return {
            "watching": len(self._paths),
            "pending": sorted(self._pending),
            "counters": dict(self.counters),
            "peers": {peer: self.peer_status(peer, now) for peer in self._records},
        }

    # -- inside -----------------------------------------------------------------

    def _record(self, peer: str) -> PeerRecord:
        record = self._records.pop(peer, None) or PeerRecord()
        self._records[peer] = record  # most recent last
        while len(self._records) > MAX_PEERS:
            del self._records[next(iter(self._records))]
        return record

    def _drop(self, path: _Path) -> None:
        del self._paths[path.sample.key]
        self._closed.add(path.sample.key)

    def _paths_of(self, peer: str) -> list[_Path]:
        return [p for p in self._paths.values() if p.sample.peer == peer]

    @staticmethod
    def _heard(path: _Path) -> float:
        last = path.sample.last_received
        return path.since if last is None else max(last, path.since)

    def _watch(self, sample: PathSample, now: float, actions: list[Action]) -> None:
        self._paths[sample.key] = _Path(sample, now)
        peer = sample.peer
        pending = self._pending.pop(peer, None)
        if pending is not None:
            record = self._record(peer)
            record.direct_after = now - pending.dead_at
            record.direct_at = now
            record.last_outcome = "direct again"
            self.counters["direct_again"] += 1
        elif sample.punched:
            # A punch we did not decide on (the first one): it spent budget.
            self._record(peer).punches.append(now)
        # A newer direct connection replaces an older one gone silent.
        for path in self._paths_of(peer):
            if (path.sample.key != sample.key
                    and now - self._heard(path) >= self.config.probe_after):
                self._drop(path)
                actions.append(CloseDead(path.sample.key, peer,
                                         "silent, and a newer direct connection came"))

    def _matters(self, sample: PathSample, now: float) -> bool:
        last = sample.last_data
        return sample.open_streams > 0 or (
            last is not None and now - last <= self.config.busy_window)

    def _check(self, path: _Path, now: float, actions: list[Action]) -> None:
        cfg = self.config
        sample = path.sample
        heard = self._heard(path)
        silence = now - heard
        if path.first_probe is not None and heard >= path.first_probe:
            path.first_probe = path.last_probe = None  # answered
            path.suspect = None
        if silence < cfg.probe_after and path.suspect is None:
            return
        if not self._matters(sample, now):
            return
        grace = max(cfg.probe_grace, 4 * (sample.rtt or 0.0))
        if (path.first_probe is None or now - path.first_probe < grace
                or (silence < cfg.dead_after and path.suspect is None)):
            if path.last_probe is None or now - path.last_probe >= cfg.probe_interval:
                path.last_probe = now
                if path.first_probe is None:
                    path.first_probe = now
                self.counters["probes"] += 1
                actions.append(Probe(sample.key))
            return
        reason = path.suspect or f"no packet for {silence:.1f} s despite probes"
        self._drop(path)
        self.counters["dead"] += 1
        self._decide(path, reason, silence, now, actions)

    def _decide(self, path: _Path, reason: str, silence: float, now: float,
                actions: list[Action], *, close: bool = True) -> None:
        cfg = self.config
        peer = path.sample.peer
        closing = [CloseDead(path.sample.key, peer, f"path dead: {reason}")] if close else []
        if (peer in self._pending
                or any(now - self._heard(other) < cfg.probe_after
                       for other in self._paths_of(peer))):
            actions.extend(closing)  # under way already, or another direct path lives
            return
        record = self._record(peer)
        while record.punches and record.punches[0] <= now - cfg.per_peer_window:
            record.punches.popleft()
        while self._recent and self._recent[0] <= now - 60.0:
            self._recent.popleft()
        later = [t for t in record.punches if t > now - cfg.backoff_max]
        wait = min(cfg.backoff_max, cfg.backoff * 2 ** max(0, len(later) - 1))
        if len(record.punches) >= cfg.per_peer or len(self._recent) >= cfg.per_minute:
            actions.extend(closing)
            self.counters["declined_rate"] += 1
            record.last_outcome = "not re-punched: over the punch rate limit"
            actions.append(Declined(peer, "over the punch rate limit"))
            return
        if record.repunches and record.last_at is not None and now - record.last_at < wait:
            actions.extend(closing)
            self.counters["declined_backoff"] += 1
            record.last_outcome = f"not re-punched: back-off ({wait:.0f} s)"
            actions.append(Declined(peer, f"back-off ({wait:.0f} s)"))
            return
        record.punches.append(now)
        self._recent.append(now)
        record.repunches += 1
        record.last_reason, record.last_at = reason, now
        record.detect_after = silence
        record.last_outcome = None
        self.counters["repunches"] += 1
        actions.append(RefreshAddrs(peer))
        dead = path.sample.key if close else None
        if path.sample.peer_id_smaller and cfg.yield_delay > 0:
            self._pending[peer] = _Pending(reason, now, silence, "yielding", now + cfg.yield_delay,
                                           dead=dead)
            return
        self._pending[peer] = _Pending(reason, now, silence, "dialling", now + cfg.outcome_timeout)
        actions.append(Redial(peer, reason, dead))

    def _pending_timers(self, now: float, actions: list[Action]) -> None:
        cfg = self.config
        for peer, pending in list(self._pending.items()):
            if now < pending.until:
                continue
            if pending.stage in ("yielding", "retry"):
                pending.stage, pending.until = "dialling", pending.dead_at + cfg.outcome_timeout
                actions.append(Redial(peer, pending.reason, pending.dead))
                pending.dead = None
            elif pending.stage == "waiting" and not pending.waited_upgrade:
                pending.waited_upgrade = True
                pending.until = pending.dead_at + cfg.outcome_timeout
                actions.append(EnsurePunch(peer))
            else:
                del self._pending[peer]
                self.counters["still_relayed"] += 1
                self._record(peer).last_outcome = "still relayed: no direct connection came"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)
