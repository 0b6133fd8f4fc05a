"""Birthday punching against one symmetric NAT, as pure state machines
(docs/nat.md, "Birthday punching").

A symmetric NAT (endpoint-dependent mapping) gives each destination a new
public port, so the port the relay saw is useless to the peer and DCUtR
fails.  When the other side is a cone (endpoint-independent mapping), its
public endpoint is known, and Tailscale's birthday trick works:

- the **hard** side (``HardSide``, behind the symmetric NAT) opens up to
  ``max_sockets`` (256) UDP sockets, each sending one packet to the easy
  side's public endpoint, which makes its NAT open that many mappings
  towards exactly that endpoint; then it sends READY with the port ranges
  its NAT is predicted to have used (ports kept, or counted up);
- the **easy** side (``EasyProber``, behind the cone) sends probes to the
  hard side's public IP: the predicted ports first, then random ones, at
  most ``max_probes`` (2048) at ``probe_rate`` a second.  Each probe opens
  its own port-restricted filter for that port; one that lands on a
  mapped port reaches a hard-side socket;
- that socket won: the hard side turns it into a QUIC endpoint and dials
  the probe's source (the easy side's public endpoint) as the QUIC client.
  The easy side accepts on its listening socket; the direct connection
  arriving is success for both.

With 256 sockets among 64,512 ports, n random probes hit with probability
``1 - (1 - 256/64512) ** n``: 98.3% for 1024, 99.97% for 2048.

No I/O, no clock, no global randomness: entry points take ``now``, ports
come from an injected ``random.Random``; actions are frozen dataclasses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from overlay.limits import RateLimiter
from overlay.nat.birthday_messages import MAX_PREDICTED, MAX_RANGES, NatKind, Ready

__all__ = [
    "BirthdayConfig",
    "Role",
    "NotNeeded",
    "Refused",
    "decide",
    "nat_kind_from",
    "predict_ranges",
    "choose_base",
    "hit_probability",
    "SendProbes",
    "OpenSockets",
    "SendReady",
    "DialFrom",
    "Succeeded",
    "Failed",
    "Action",
    "EasyProber",
    "HardSide",
    "SprayLimiter",
]

MAX_SOCKETS: Final = 256
MAX_PROBES: Final = 2048
MAX_RATE: Final = 500.0
"""Packets a second, the most either side may send in one attempt."""


@dataclass(frozen=True, slots=True)
class BirthdayConfig:
    max_sockets: int = MAX_SOCKETS
    """Sockets the hard side opens (each sends one packet), at most 256."""
    max_probes: int = MAX_PROBES
    """Probes the easy side sends in one attempt, at most 2048."""
    probe_rate: float = 250.0
    """Probes a second (easy side)."""
    socket_rate: float = 250.0
    """Sockets opened, so packets sent, a second (hard side)."""
    burst: int = 16
    """Packets either side may send at once on top of its rate."""
    tick: float = 0.02
    """Seconds between batches."""
    port_range: tuple[int, int] = (1024, 65535)
    """Public ports a NAT hands out (random probes stay inside)."""
    predict_slack: int = 256
    """Ports beyond the socket count predicted for a counting-up NAT
    (flows of other hosts behind it take ports in between)."""
    grace: float = 3.0
    """Seconds after the last probe for the hard side's QUIC dial."""
    message_timeout: float = 10.0
    """Seconds to wait for the peer's HELLO or READY."""
    dial_timeout: float = 4.0
    """Seconds the hard side's QUIC dial from the winning socket may take."""
    ready_slack: float = 2.0
    """Seconds the hard side adds to its wait for READY to reach the peer."""
    max_dials: int = 2
    """Winning sockets the hard side dials from before it gives up."""
    sessions_per_peer: int = 2
    """Attempts one peer may cause per ``session_window``."""
    sprays_per_ip: int = 2
    """Sprays towards one IP per ``session_window``, whichever peer asks:
    peer IDs cost nothing, so this is what bounds the packets an address
    can be sent."""
    session_window: float = 600.0
    plain_dial: bool = True
    """The hard side also dials the easy side's endpoint from its listening
    socket, beside the spray: enough when the easy side's NAT does not
    filter by port (no NAT, full or restricted cone)."""
    allow_private: bool = False
    """Lab flag: documentation-range and loopback addresses count as public."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_sockets <= MAX_SOCKETS:
            raise ValueError(f"max_sockets must be within 1..{MAX_SOCKETS}")
        if not 1 <= self.max_probes <= MAX_PROBES:
            raise ValueError(f"max_probes must be within 1..{MAX_PROBES}")
        if not (0 < self.probe_rate <= MAX_RATE and 0 < self.socket_rate <= MAX_RATE):
            raise ValueError(f"rates must be within (0, {MAX_RATE}] a second")
        if not 0 <= self.burst <= 64:
            raise ValueError("burst must be within 0..64")
        low, high = self.port_range
        if not 1 <= low <= high <= 65535 or high - low + 1 < self.max_probes:
            raise ValueError("port_range must hold at least max_probes ports")
        if min(self.tick, self.grace, self.message_timeout, self.dial_timeout, self.ready_slack,
               self.session_window) <= 0:
            raise ValueError("times must be positive")
        if min(self.max_dials, self.sessions_per_peer, self.sprays_per_ip) < 1:
            raise ValueError("dials, sessions and sprays must be at least 1")
        if self.predict_slack < 0:
            raise ValueError("predict_slack must not be negative")

    @property
    def hard_wait(self) -> float:
        """Seconds the hard side waits for a probe after READY: the easy
        side's whole spray plus the grace."""
        return self.max_probes / self.probe_rate + self.grace


# -- who does what -----------------------------------------------------------------


class Role(Enum):
    HARD = "hard"
    EASY = "easy"


@dataclass(frozen=True, slots=True)
class NotNeeded:
    """Neither side is symmetric: DCUtR's simultaneous open is the tool."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Birthday punching cannot work (or must not run): stay relayed."""

    reason: str


def decide(ours: NatKind, theirs: NatKind) -> Role | NotNeeded | Refused:
    """Both sides call this with the kinds swapped and agree."""
    if ours is NatKind.SYMMETRIC and theirs is NatKind.SYMMETRIC:
        return Refused("both sides are behind symmetric NATs (a new public port per "
                       "destination): a birthday punch would need about 170,000 probes; "
                       "staying relayed")
    if ours is NatKind.SYMMETRIC:
        return Role.HARD
    if theirs is NatKind.SYMMETRIC:
        return Role.EASY
    return NotNeeded(f"no symmetric NAT (ours {ours.name.lower()}, theirs "
                     f"{theirs.name.lower()}): DCUtR's simultaneous open applies")


def nat_kind_from(mapping: str | None, observed: Iterable[tuple[str, int]]) -> NatKind:
    """Our NAT kind from STUN's mapping verdict (``behaviour.Behaviour``
    values) or else from the public endpoints peers observed (identify):
    one IP seen with several ports is a symmetric NAT; one IP and port
    seen by several is a cone."""
    if mapping in ("address-dependent", "address-and-port-dependent", "endpoint-dependent"):
        return NatKind.SYMMETRIC
    if mapping == "endpoint-independent":
        return NatKind.CONE
    if mapping == "no-nat":
        return NatKind.PUBLIC
    ports: dict[str, list[int]] = {}
    for ip, port in observed:
        ports.setdefault(ip, []).append(port)
    for seen in ports.values():
        if len(set(seen)) >= 2:
            return NatKind.SYMMETRIC
    if any(len(seen) >= 2 for seen in ports.values()):
        return NatKind.CONE
    return NatKind.UNKNOWN


def choose_base(rng: random.Random, count: int, port_range: tuple[int, int]) -> int:
    """A random first local port for ``count`` consecutive sockets: a NAT
    that keeps ports then maps them to one predictable range."""
    low, high = max(port_range[0], 10000), min(port_range[1], 60999)
    if high - low + 1 < count:
        low, high = port_range
    return rng.randint(low, max(low, high - count + 1))


def predict_ranges(local_ports: Sequence[int], observed_ports: Sequence[int], count: int,
                   config: BirthdayConfig, *,
                   keeps_ports: bool | None = None) -> tuple[tuple[int, int], ...]:
    """Port ranges the hard side's NAT probably gave its ``count`` sockets,
    most likely first:

    - the sockets' own local ports, grouped into runs (a NAT that keeps
      ports free of conflict maps them one to one);
    - for a NAT that counts up, the ports after the highest one observers
      saw (plus ``predict_slack`` for flows in between).

    ``keeps_ports=False`` (our listening socket's public port is not its
    local one) puts the counting-up range first.  At most ``MAX_RANGES``
    ranges and ``MAX_PREDICTED`` ports in all."""
    low, high = config.port_range
    ranges: list[tuple[int, int]] = []
    budget = MAX_PREDICTED
    counting: tuple[int, int] | None = None
    if observed_ports:
        start = max(observed_ports) + 1
        take = min(count + config.predict_slack, budget, high - start + 1)
        if take > 0 and start >= low:
            counting = (start, take)
    if counting is not None and keeps_ports is False:
        ranges.append(counting)
        budget -= counting[1]
    runs: list[list[int]] = []
    for port in sorted(set(local_ports)):
        if runs and port == runs[-1][-1] + 1:
            runs[-1].append(port)
        else:
            runs.append([port])
    runs.sort(key=len, reverse=True)
    for run in runs[:MAX_RANGES - 1]:
        take = min(len(run), budget)
        if take > 0 and low <= run[0] and run[0] + take - 1 <= high:
            ranges.append((run[0], take))
            budget -= take
    if counting is not None and keeps_ports is not False and budget > 0:
        ranges.append((counting[0], min(counting[1], budget)))
    return tuple(ranges[:MAX_RANGES])


def hit_probability(sockets: int, probes: int, ports: int = 64512) -> float:
    """Chance that one of ``probes`` distinct random ports is one of the
    ``sockets`` mapped ones, out of ``ports``."""
    if probes >= ports:
        return 1.0
    miss = 1.0
    for i in range(probes):
        miss *= max(0.0, (ports - sockets - i) / (ports - i))
    return 1.0 - miss


# -- actions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendProbes:
    """Easy side: one probe to each ``(ip, port)`` from the listening socket."""

    ip: str
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OpenSockets:
    """Hard side: open ``count`` more sockets (ports ``first_port`` up,
    any free one where taken); each sends one packet to ``to``.  Report
    their local ports with ``on_sockets``."""

    count: int
    first_port: int
    to: tuple[str, int]


@dataclass(frozen=True, slots=True)
class SendReady:
    message: Ready


@dataclass(frozen=True, slots=True)
class DialFrom:
    """Hard side: the socket at ``local_port`` won; close the others, make
    it a QUIC endpoint and dial ``addr`` as the client; report with
    ``on_dial_result``."""

    local_port: int
    addr: tuple[str, int]
    timeout: float


@dataclass(frozen=True, slots=True)
class Succeeded:
    packets: int
    """Probes (easy side) or sockets (hard side) used."""
    port: int | None = None
    """The hard side's public port that won, when known."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    packets: int


Action = SendProbes | OpenSockets | SendReady | DialFrom | Succeeded | Failed


# -- the easy side ---------------------------------------------------------------------


class EasyProber:
    """Sends probes to ``target_ip``: predicted ports first, then distinct
    random ones, never more than ``burst + probe_rate * elapsed`` and never
    more than ``max_probes``.  Starts on the peer's READY."""

    def __init__(self, config: BirthdayConfig, target_ip: str,
                 ranges: Sequence[tuple[int, int]], rng: random.Random, now: float) -> None:
        self.config = config
        self.target_ip = target_ip
        self._ports = _probe_order(config, ranges, rng)
        self._start = now
        self._sent = 0
        self._deadline: float | None = now
        self.outcome: Succeeded | Failed | None = None

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port this attempt may probe, in order."""
        return tuple(self._ports)

    def next_deadline(self) -> float | None:
        return self._deadline

    def _allowed(self, now: float) -> int:
        cfg = self.config
        return min(len(self._ports),
                   cfg.burst + math.floor(cfg.probe_rate * max(0.0, now - self._start)))

    def on_timer(self, now: float) -> list[Action]:
        if self.outcome is not None or self._deadline is None or now < self._deadline:
            return []
        if self._sent >= len(self._ports):
            return self._finish(Failed(
                f"no direct connection after {self._sent} probes to {self.target_ip}",
                self._sent))
        allowed = self._allowed(now)
        batch = tuple(self._ports[self._sent:allowed])
        self._sent = max(self._sent, allowed)
        if self._sent >= len(self._ports):
            self._deadline = now + self.config.grace
        else:
            self._deadline = now + self.config.tick
        return [SendProbes(self.target_ip, batch)] if batch else []

    def on_direct(self, now: float, port: int | None = None) -> list[Action]:
        if self.outcome is not None:
            return []
        return self._finish(Succeeded(self._sent, port))

    def stop(self, reason: str) -> list[Action]:
        if self.outcome is not None:
            return []
        return self._finish(Failed(reason, self._sent))

    def _finish(self, result: Succeeded | Failed) -> list[Action]:
        self.outcome = result
        self._deadline = None
        return [result]


def _probe_order(config: BirthdayConfig, ranges: Sequence[tuple[int, int]],
                 rng: random.Random) -> list[int]:
    low, high = config.port_range
    order: dict[int, None] = {}
    for start, count in list(ranges)[:MAX_RANGES]:
        for port in range(max(start, low), min(start + count, high + 1)):
            if len(order) >= min(MAX_PREDICTED, config.max_probes):
                break
            order.setdefault(port)
    want = config.max_probes - len(order)
    if want > 0:
        # Distinct random ports, skipping the predicted ones.
        for port in rng.sample(range(low, high + 1), min(high - low + 1, want + len(order))):
            if len(order) >= config.max_probes:
                break
            order.setdefault(port)
    return list(order)[:config.max_probes]


# -- the hard side -----------------------------------------------------------------------


class _HardState(Enum):
    OPENING = "opening sockets"
    OPENED = "sockets open"
    WAITING = "waiting for a probe"
    DIALING = "dialing from the winning socket"
    DONE = "done"


class HardSide:
    """Opens sockets at ``socket_rate`` (each sends one packet to the easy
    side's public endpoint ``easy``), then sends READY with the predicted
    ranges; the first probe from the easy side's IP carrying our nonce
    picks the socket to dial from."""

    def __init__(self, config: BirthdayConfig, easy: tuple[str, int],
                 observed_ports: Sequence[int], rng: random.Random, now: float, *,
                 keeps_ports: bool | None = None) -> None:
        self.config = config
        self.easy = easy
        self._observed = tuple(observed_ports)
        self._keeps = keeps_ports
        self.first_port = choose_base(rng, config.max_sockets, config.port_range)
        self._start = now
        self._requested = 0
        self._local: list[int] = []
        self._dials = 0
        self._state = _HardState.OPENING
        self._deadline: float | None = now
        self.ignored = 0
        """Datagrams on our sockets that were not a valid probe from the peer."""
        self.outcome: Succeeded | Failed | None = None

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def requested(self) -> int:
        return self._requested

    def next_deadline(self) -> float | None:
        return self._deadline

    def on_sockets(self, local_ports: Sequence[int]) -> None:
        """The driver opened sockets at these local ports."""
        self._local.extend(local_ports[:self.config.max_sockets - len(self._local)])

    def on_timer(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        cfg = self.config
        if self._state is _HardState.OPENING:
            allowed = min(cfg.max_sockets,
                          cfg.burst + math.floor(cfg.socket_rate * max(0.0, now - self._start)))
            count = allowed - self._requested
            actions: list[Action] = []
            if count > 0:
                actions.append(OpenSockets(count, self.first_port + self._requested, self.easy))
                self._requested = allowed
            if self._requested >= cfg.max_sockets:
                # The driver reports this batch's ports (on_sockets) before
                # it asks again; READY then names them all.
                self._state = _HardState.OPENED
                self._deadline = now
            else:
                self._deadline = now + cfg.tick
            return actions
        if self._state is _HardState.OPENED:
            self._state = _HardState.WAITING
            self._deadline = now + cfg.hard_wait + cfg.ready_slack
            return [SendReady(self.ready())]
        if self._state is _HardState.WAITING:
            return self._finish(Failed(
                f"no probe reached any of our {len(self._local)} sockets in "
                f"{cfg.hard_wait:.0f} s", len(self._local)))
        return []

    def ready(self) -> Ready:
        """READY with the predicted ranges of the sockets opened so far."""
        return Ready(predict_ranges(self._local, self._observed, len(self._local), self.config,
                                    keeps_ports=self._keeps))

    def on_probe(self, local_port: int, source: tuple[str, int], nonce_ok: bool,
                 now: float) -> list[Action]:
        if (self._state not in (_HardState.OPENING, _HardState.OPENED, _HardState.WAITING)
                or not nonce_ok
                or source[0] != self.easy[0] or local_port not in self._local):
            self.ignored += 1
            return []
        self._state = _HardState.DIALING
        self._dials += 1
        return [DialFrom(local_port, source, self.config.dial_timeout)]

    def on_dial_result(self, ok: bool, now: float, port: int | None = None) -> list[Action]:
        if self._state is not _HardState.DIALING:
            return []
        if ok:
            return self._finish(Succeeded(len(self._local), port))
        if self._dials >= self.config.max_dials:
            return self._finish(Failed(
                f"the QUIC dial from {self._dials} winning socket(s) failed", len(self._local)))
        self._state = _HardState.WAITING
        return []

    def on_direct(self, now: float) -> list[Action]:
        """A direct connection to the peer appeared some other way."""
        if self._state is _HardState.DONE:
            return []
        return self._finish(Succeeded(len(self._local)))

    def stop(self, reason: str) -> list[Action]:
        if self._state is _HardState.DONE:
            return []
        return self._finish(Failed(reason, len(self._local)))

    def _finish(self, result: Succeeded | Failed) -> list[Action]:
        self._state = _HardState.DONE
        self._deadline = None
        self.outcome = result
        return [result]


class SprayLimiter:
    """Attempts per peer, and sprays per target IP whichever peer asks."""

    def __init__(self, config: BirthdayConfig, max_keys: int = 4096) -> None:
        window = config.session_window
        self._peers = RateLimiter(config.sessions_per_peer / window, config.sessions_per_peer,
                                  max_keys)
        self._ips = RateLimiter(config.sprays_per_ip / window, config.sprays_per_ip, max_keys)

    def allow_session(self, peer: Hashable, now: float) -> bool:
        return self._peers.allow(peer, now)

    def allow_spray(self, ip: str, now: float) -> bool:
        return self._ips.allow(ip, now)
