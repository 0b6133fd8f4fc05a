"""The AutoNAT v2 client's decisions (pure): which of our addresses to
test, which server to ask, and what the answers mean.

Candidates come from three places: addresses identify peers observed us at
(only once ``min_observers`` distinct peers agree, since one peer can say
anything), addresses STUN servers mapped us to, and listen addresses that
are public.  Each probe asks one server about one address, so the server's
``addrIdx`` cannot be ambiguous and every answer is evidence about exactly
that address.  A decided address is re-tested after ``retest_interval``
(NATs forget, firewalls change); an undecided one is tried again, with a
different server, after ``retry_interval``.  The verdicts live in a
``ReachabilityTracker``.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from overlay.errors import InvalidMultiaddr
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.nat.autonat_server_core import is_dialable_ip
from overlay.nat.reachability import (
    Reachability,
    ReachabilityState,
    ReachabilityTracker,
    TrackerConfig,
)

__all__ = [
    "ClientConfig",
    "Candidate",
    "Probe",
    "AutoNATClientCore",
]

_NONCE_BITS: Final = 64


@dataclass(frozen=True, slots=True)
class ClientConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    lab: bool = False
    """Test private and loopback addresses too (labs and tests)."""
    min_observers: int = 2
    """Distinct peers that must report an observed address before we test it."""
    retest_interval: float = 1800.0
    """Seconds before a decided address is tested again."""
    retry_interval: float = 60.0
    """Seconds before an undecided address is probed again."""
    server_backoff: float = 300.0
    """Seconds a server that failed to answer (refused, timed out, spoke
    garbage) is left alone."""
    max_in_flight: int = 2
    """Probes outstanding at once."""
    max_dial_data: int = 100_000
    """Most bytes we will send when a server asks for dial data (the spec's
    upper bound); a server asking more is refused."""
    max_candidates: int = 16

    def __post_init__(self) -> None:
        if self.min_observers < 1:
            raise ValueError("min_observers must be at least 1")
        if self.retest_interval <= 0 or self.retry_interval <= 0 or self.server_backoff < 0:
            raise ValueError("intervals must be positive")
        if self.max_in_flight < 1 or self.max_candidates < 1:
            raise ValueError("max_in_flight and max_candidates must be at least 1")
        if self.max_dial_data < 0:
            raise ValueError("max_dial_data must not be negative")


@dataclass(frozen=True, slots=True)
class Candidate:
    addr: str
    """``/ip4|ip6/…/udp/N/quic-v1`` without ``/p2p``."""
    sources: tuple[str, ...]
    """``identify (3 peers)``, ``stun``, ``listen``."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask ``server`` to dial ``addr`` back with ``nonce``."""

    addr: str
    server: str
    nonce: int


class AutoNATClientCore:
    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self.tracker = ReachabilityTracker(self.config.tracker)
        self._candidates: dict[str, Candidate] = {}
        self._manual: dict[str, Candidate] = {}
        self._in_flight: dict[int, Probe] = {}
        self._last_probe: dict[str, float] = {}
        self._server_until: dict[str, float] = {}

    # -- candidates ------------------------------------------------------------

    def _testable(self, addr: str) -> str | None:
        try:
            parsed = parse_quic_multiaddr(addr)
        except InvalidMultiaddr:
            return None
        if parsed.is_dns or parsed.port == 0:
            return None
        if not is_dialable_ip(ipaddress.ip_address(parsed.host), self.config.lab):
            return None  # the spec: clients should not ask about private addresses
        return str(parsed.with_peer_id(None))

    def set_candidates(self, observed: Mapping[str, int], stun: Iterable[str],
                       listen: Iterable[str], upnp: Iterable[str] = ()) -> list[Candidate]:
        """Replace the candidate set: ``observed`` maps an address to the
        number of distinct peers that reported it.  Returns the new set."""
        found: dict[str, list[str]] = {}
        for addr, reporters in observed.items():
            if reporters >= self.config.min_observers and (key := self._testable(addr)):
                found.setdefault(key, []).append(f"identify ({reporters} peers)")
        for addr in stun:
            if key := self._testable(addr):
                found.setdefault(key, []).append("stun")
        for addr in upnp:  # the home router's port mapping (overlay.nat.upnp)
            if key := self._testable(addr):
                found.setdefault(key, []).append("upnp")
        for addr in listen:
            if key := self._testable(addr):
                found.setdefault(key, []).append("listen")
        ranked = sorted(found.items(), key=lambda item: (-len(item[1]), item[0]))
        self._candidates = {addr: Candidate(addr, tuple(src))
                            for addr, src in ranked[: self.config.max_candidates]}
        for addr, cand in self._manual.items():
            self._candidates.setdefault(addr, cand)
        for addr in list(self._last_probe):
            if addr not in self._candidates:
                del self._last_probe[addr]
        return list(self._candidates.values())

    @property
    def candidates(self) -> list[Candidate]:
        return list(self._candidates.values())

    # -- probing ---------------------------------------------------------------

    def _due_at(self, addr: str, now: float) -> float:
        last = self._last_probe.get(addr)
        if last is None:
            return now
        verdict = self.tracker.verdict(addr, now)
        interval = (self.config.retry_interval if verdict.reachability is Reachability.UNKNOWN
                    else self.config.retest_interval)
        return last + interval

    def next_probe(self, servers: Sequence[str], now: float,
                   rng: random.Random) -> Probe | None:
        """The next probe to send, or None (nothing due, no server free, or
        ``max_in_flight`` reached).  ``servers``: connected peers that speak
        the dial-request protocol."""
        if len(self._in_flight) >= self.config.max_in_flight:
            return None
        busy_addrs = {p.addr for p in self._in_flight.values()}
        busy_servers = {p.server for p in self._in_flight.values()}
        usable = sorted(s for s in set(servers)
                        if s not in busy_servers and self._server_until.get(s, now) <= now)
        if not usable:
            return None
        for addr in self._candidates:
            if addr in busy_addrs or self._due_at(addr, now) > now:
                continue
            # Servers without a live result for this address first: each new
            # server is one more independent opinion.
            fresh = [s for s in usable if s not in self.tracker.tested_by(addr, now)]
            server = rng.choice(fresh or usable)
            nonce = rng.getrandbits(_NONCE_BITS)
            while nonce in self._in_flight:
                nonce = rng.getrandbits(_NONCE_BITS)
            probe = Probe(addr, server, nonce)
            self._in_flight[nonce] = probe
            self._last_probe[addr] = now
            return probe
        return None

    def start_probe(self, addr: str, server: str, now: float, rng: random.Random) -> Probe:
        """A probe asked for by hand (an operator, a test): ``addr`` joins
        the candidates, whatever its source, and stays one."""
        key = str(parse_quic_multiaddr(addr).with_peer_id(None))
        cand = self._manual.setdefault(key, Candidate(key, ("manual",)))
        self._candidates.setdefault(key, cand)
        nonce = rng.getrandbits(_NONCE_BITS)
        while nonce in self._in_flight:
            nonce = rng.getrandbits(_NONCE_BITS)
        probe = Probe(key, server, nonce)
        self._in_flight[nonce] = probe
        self._last_probe[key] = now
        return probe

    def expects(self, nonce: int) -> Probe | None:
        """The probe a dial-back with ``nonce`` belongs to, if any."""
        return self._in_flight.get(nonce)

    def on_result(self, probe: Probe, reachable: bool, now: float) -> None:
        """The server dialled ``probe.addr`` and got through (``reachable``,
        with the nonce checked by the caller) or not."""
        if self._in_flight.pop(probe.nonce, None) is None:
            return
        self.tracker.record(probe.addr, probe.server, reachable, now)

    def on_no_result(self, probe: Probe, now: float, backoff: bool = True) -> None:
        """The probe ended without evidence (refused, timed out, garbage);
        with ``backoff`` the server is left alone for a while."""
        if self._in_flight.pop(probe.nonce, None) is None:
            return
        if backoff:
            self._server_until[probe.server] = now + self.config.server_backoff
            for server in [s for s, t in self._server_until.items() if t <= now]:
                del self._server_until[server]

    # -- state -----------------------------------------------------------------

    def state(self, now: float) -> ReachabilityState:
        return self.tracker.state(now, self._candidates)

    def next_deadline(self, now: float) -> float | None:
        """When the next probe becomes due (None: no candidates)."""
        times = [self._due_at(addr, now) for addr in self._candidates]
        expiry = self.tracker.next_deadline()
        if expiry is not None:
            times.append(expiry)
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        self.tracker.expire(now)
