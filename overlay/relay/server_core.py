"""The relay's state (pure): reservations with a TTL and limits per peer,
per source prefix and in total; admission of relayed connections; the
limits each one runs under; the counters an operator reads.

Nothing here reads a clock or does I/O.  ``now`` is monotonic seconds; the
driver turns a reservation's monotonic expiry into the wall-clock
``expire`` the spec puts on the wire.  Every refusal is counted under a
reason, so ``overlay relay status`` can say why peers were turned away.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from overlay.identity import PeerId
from overlay.relay.messages import Limit, Status

__all__ = [
    "DEFAULT_RESERVATION_TTL",
    "DEFAULT_CIRCUIT_DURATION",
    "DEFAULT_CIRCUIT_DATA",
    "RelayLimits",
    "Granted",
    "Admitted",
    "Refused",
    "RelayServerStats",
    "RelayCore",
    "source_prefix",
]

DEFAULT_RESERVATION_TTL: Final = 3600.0
"""go-libp2p's and rust-libp2p's reservation lifetime; clients renew before."""
DEFAULT_CIRCUIT_DURATION: Final = 120
"""Seconds per relayed connection (the spec's default limit)."""
DEFAULT_CIRCUIT_DATA: Final = 128 * 1024
"""Bytes per direction per relayed connection: enough to coordinate a hole
punch, not to carry traffic."""


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """The relay's policy (config table ``relay_limits``)."""

    reservation_ttl: float = DEFAULT_RESERVATION_TTL
    """Seconds a reservation lasts unless renewed."""
    max_reservations: int = 128
    """Reservations held at once, all peers together."""
    max_reservations_per_prefix: int = 8
    """Reservations from one source prefix (IPv4 /32, IPv6 /64 by default):
    one host cannot take every slot with many peer IDs."""
    ipv4_prefix: int = 32
    """Prefix length that groups IPv4 sources."""
    ipv6_prefix: int = 64
    """Prefix length that groups IPv6 sources."""
    max_circuits_per_peer: int = 16
    """Relayed connections open at once with a given peer at either end."""
    max_circuits: int = 1024
    """Relayed connections open at once in total."""
    circuit_duration: float | None = DEFAULT_CIRCUIT_DURATION
    """Seconds per relayed connection; ``None`` is unlimited."""
    circuit_data: int | None = DEFAULT_CIRCUIT_DATA
    """Bytes per direction per relayed connection; ``None`` is unlimited."""
    allowlist: frozenset[PeerId] = frozenset()
    """Peers whose circuits (both ends in the list) run without duration or
    data limits and whose reservations skip the per-prefix limit."""

    def __post_init__(self) -> None:
        if self.reservation_ttl <= 0:
            raise ValueError("reservation_ttl must be positive")
        for name in ("max_reservations", "max_reservations_per_prefix",
                     "max_circuits_per_peer", "max_circuits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 <= self.ipv4_prefix <= 32:
            raise ValueError("ipv4_prefix must be 0-32")
        if not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 0-128")
        if self.circuit_duration is not None and self.circuit_duration <= 0:
            raise ValueError("circuit_duration must be positive (or None: unlimited)")
        if self.circuit_data is not None and self.circuit_data <= 0:
            raise ValueError("circuit_data must be positive (or None: unlimited)")

    def wire_limit(self) -> Limit:
        """The Limit message for a limited circuit."""
        return Limit(
            None if self.circuit_duration is None else max(1, int(self.circuit_duration)),
            self.circuit_data,
        )


def source_prefix(ip: str | None, v4_bits: int = 32, v6_bits: int = 64) -> str:
    """The group a source address counts in; unknown or unparsable sources
    share one group, so they cannot escape the limit."""
    if not ip:
        return "unknown"
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = v4_bits if addr.version == 4 else v6_bits
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


@dataclass(frozen=True, slots=True)
class Granted:
    """A reservation granted or renewed until ``expires`` (monotonic)."""

    expires: float
    renewed: bool
    limit: Limit | None
    """What circuits to this peer run under (``None``: unlimited)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """A relayed connection may proceed under ``limit`` (``None``: unlimited)."""

    circuit_id: int
    limit: Limit | None


@dataclass(frozen=True, slots=True)
class Refused:
    status: Status
    reason: str
    """A short stable word for the counters: ``no_reservation``, …"""


@dataclass(slots=True)
class _Reservation:
    peer: PeerId
    prefix: str
    expires: float


@dataclass(slots=True)
class _Circuit:
    src: PeerId
    dst: PeerId
    relayed: int = 0
    """Bytes moved so far (both ways), so the stats count live circuits."""


@dataclass(frozen=True, slots=True)
class RelayServerStats:
    reservations_held: int
    reservations_granted: int
    reservations_renewed: int
    circuits_active: int
    circuits_total: int
    circuits_cut_by_limit: int
    bytes_relayed: int
    """Both directions, ended circuits and live ones alike."""
    refusals: dict[str, int] = field(default_factory=dict)


class RelayCore:
    """Reservations and circuits of one relay."""

    def __init__(self, self_id: PeerId, limits: RelayLimits | None = None) -> None:
        self.self_id = self_id
        self.limits = limits or RelayLimits()
        self._reservations: dict[PeerId, _Reservation] = {}
        self._per_prefix: Counter[str] = Counter()
        self._circuits: dict[int, _Circuit] = {}
        self._per_peer: Counter[PeerId] = Counter()
        self._next_circuit = 1
        self._granted = 0
        self._renewed = 0
        self._circuits_total = 0
        self._cut = 0
        self._bytes = 0
        self._refusals: Counter[str] = Counter()

    # -- reservations --------------------------------------------------------

    def reserve(self, peer: PeerId, ip: str | None, now: float) -> Granted | Refused:
        """A RESERVE from ``peer`` arriving over a connection from ``ip``."""
        self.expire(now)
        if peer == self.self_id:
            return self.refuse(Status.PERMISSION_DENIED, "reserve_self")
        expires = now + self.limits.reservation_ttl
        existing = self._reservations.get(peer)
        prefix = source_prefix(ip, self.limits.ipv4_prefix, self.limits.ipv6_prefix)
        if existing is not None:
            # A renewal keeps its slot, and may move to the new source.
            if existing.prefix != prefix:
                if (peer not in self.limits.allowlist
                        and self._per_prefix[prefix] >= self.limits.max_reservations_per_prefix):
                    return self.refuse(Status.RESERVATION_REFUSED, "prefix_limit")
                self._release_prefix(existing.prefix)
                self._per_prefix[prefix] += 1
                existing.prefix = prefix
            existing.expires = expires
            self._renewed += 1
            return Granted(expires, True, self._limit_for(peer, peer))
        if len(self._reservations) >= self.limits.max_reservations:
            return self.refuse(Status.RESERVATION_REFUSED, "reservation_limit")
        if (peer not in self.limits.allowlist
                and self._per_prefix[prefix] >= self.limits.max_reservations_per_prefix):
            return self.refuse(Status.RESERVATION_REFUSED, "prefix_limit")
        self._reservations[peer] = _Reservation(peer, prefix, expires)
        self._per_prefix[prefix] += 1
        self._granted += 1
        return Granted(expires, False, self._limit_for(peer, peer))

    def has_reservation(self, peer: PeerId, now: float) -> bool:
        res = self._reservations.get(peer)
        return res is not None and res.expires > now

    def reservation_expiry(self, peer: PeerId) -> float | None:
        res = self._reservations.get(peer)
        return None if res is None else res.expires

    def cancel_reservation(self, peer: PeerId) -> None:
        """Drop ``peer``'s reservation (its connection closed for good)."""
        res = self._reservations.pop(peer, None)
        if res is not None:
            self._release_prefix(res.prefix)

    def expire(self, now: float) -> list[PeerId]:
        """Drop reservations whose time is up; returns their peers."""
        gone = [p for p, r in self._reservations.items() if r.expires <= now]
        for peer in gone:
            self.cancel_reservation(peer)
        return gone

    def next_deadline(self) -> float | None:
        """When the next reservation expires (the driver's timer)."""
        return min((r.expires for r in self._reservations.values()), default=None)

    def reservations(self) -> list[tuple[PeerId, float]]:
        return sorted(((p, r.expires) for p, r in self._reservations.items()),
                      key=lambda item: item[1])

    def _release_prefix(self, prefix: str) -> None:
        self._per_prefix[prefix] -= 1
        if self._per_prefix[prefix] <= 0:
            del self._per_prefix[prefix]

    # -- circuits ------------------------------------------------------------

    def admit(self, src: PeerId, dst: PeerId, now: float) -> Admitted | Refused:
        """A CONNECT from ``src`` to ``dst``: refused unless ``dst`` holds a
        live reservation and neither end nor the relay is at its limit."""
        self.expire(now)
        if src == dst or dst == self.self_id or src == self.self_id:
            return self.refuse(Status.PERMISSION_DENIED, "bad_target")
        if not self.has_reservation(dst, now):
            return self.refuse(Status.NO_RESERVATION, "no_reservation")
        if len(self._circuits) >= self.limits.max_circuits:
            return self.refuse(Status.RESOURCE_LIMIT_EXCEEDED, "circuit_limit")
        cap = self.limits.max_circuits_per_peer
        if self._per_peer[src] >= cap or self._per_peer[dst] >= cap:
            return self.refuse(Status.RESOURCE_LIMIT_EXCEEDED, "peer_circuit_limit")
        circuit_id = self._next_circuit
        self._next_circuit += 1
        self._circuits[circuit_id] = _Circuit(src, dst)
        self._per_peer[src] += 1
        self._per_peer[dst] += 1
        self._circuits_total += 1
        return Admitted(circuit_id, self._limit_for(src, dst))

    def circuit_progress(self, circuit_id: int, moved: int) -> None:
        """``moved`` more bytes crossed a live circuit (either way)."""
        circuit = self._circuits.get(circuit_id)
        if circuit is not None:
            circuit.relayed += moved

    def circuit_closed(self, circuit_id: int, relayed: int, *, cut_by_limit: bool) -> None:
        """A circuit ended (or never got going: ``relayed`` 0); ``relayed``
        is its total, which replaces what ``circuit_progress`` counted."""
        circuit = self._circuits.pop(circuit_id, None)
        if circuit is None:
            return
        for peer in (circuit.src, circuit.dst):
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
        self._bytes += relayed
        if cut_by_limit:
            self._cut += 1

    def refuse(self, status: Status, reason: str) -> Refused:
        """Count a refusal (also for ones the driver decides: malformed
        messages, an unreachable target) and return it."""
        self._refusals[reason] += 1
        return Refused(status, reason)

    def _limit_for(self, a: PeerId, b: PeerId) -> Limit | None:
        allow = self.limits.allowlist
        if a in allow and b in allow:
            return None
        if self.limits.circuit_duration is None and self.limits.circuit_data is None:
            return None
        return self.limits.wire_limit()

    def stats(self) -> RelayServerStats:
        return RelayServerStats(
            reservations_held=len(self._reservations),
            reservations_granted=self._granted,
            reservations_renewed=self._renewed,
            circuits_active=len(self._circuits),
            circuits_total=self._circuits_total,
            circuits_cut_by_limit=self._cut,
            bytes_relayed=self._bytes + sum(c.relayed for c in self._circuits.values()),
            refusals=dict(self._refusals),
        )
