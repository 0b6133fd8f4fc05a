"""Measured round trips → request timeouts (pure).

Every kad request's round trip is a sample.  Per peer, and across all
peers, the estimator keeps SRTT and RTTVAR as RFC 6298 section 2 does
(alpha = 1/8, beta = 1/4); a request's timeout is ``SRTT + K·RTTVAR``
clamped between ``min_timeout`` and ``max_timeout``.

- A connected peer with samples gets its own estimate; one without gets
  the estimate across all peers (what this network usually costs).
- A request that needs a dial first costs more: requests that included a
  dial are sampled into a separate "cold" estimate, used for peers we hold
  no connection to.
- Before any sample, ``initial_timeout`` (RFC 6298's 1 s) applies, plus
  ``initial_dial`` when a dial is needed.

No clock is read here: callers pass ``now`` and the measured seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from overlay.identity import PeerId

__all__ = ["RttConfig", "RttEstimate", "RttEstimator"]

_ALPHA = 1 / 8
_BETA = 1 / 4


@dataclass(frozen=True, slots=True)
class RttConfig:
    """How measured round trips become request timeouts."""

    min_timeout: float = 0.5
    """Floor of every derived timeout.  Loopback and LAN round trips are
    milliseconds; the floor absorbs scheduling delays of a busy host, yet a
    peer that stopped answering is given up within a second."""
    min_dial_timeout: float = 1.0
    """Floor when a dial comes first: a handshake costs both sides
    signature checks, which a loaded machine may delay by hundreds of ms,
    and a timeout there evicts the peer."""
    max_timeout: float = 10.0
    """Ceiling of every derived timeout (the service's ``request_timeout``)."""
    initial_timeout: float = 1.0
    """Timeout before any round trip was measured (RFC 6298's initial RTO)."""
    initial_dial: float = 1.0
    """Added for a peer we must dial first, before any dial was measured."""
    variance_factor: float = 4.0
    """K in SRTT + K·RTTVAR."""
    max_peers: int = 4096
    """Peers whose estimates are kept (least recently sampled are dropped)."""

    def __post_init__(self) -> None:
        if not 0 < self.min_timeout <= self.max_timeout:
            raise ValueError("need 0 < min_timeout <= max_timeout")
        if self.min_dial_timeout < self.min_timeout:
            raise ValueError("min_dial_timeout must not be below min_timeout")
        if self.initial_timeout <= 0 or self.initial_dial < 0:
            raise ValueError("initial_timeout must be positive and initial_dial not negative")
        if self.variance_factor < 1:
            raise ValueError("variance_factor must be at least 1")
        if self.max_peers < 1:
            raise ValueError("max_peers must be at least 1")


class RttEstimate:
    """SRTT and RTTVAR of one stream of samples (RFC 6298 section 2)."""

    __slots__ = ("srtt", "rttvar", "samples", "updated")

    def __init__(self) -> None:
        self.srtt = 0.0
        self.rttvar = 0.0
        self.samples = 0
        self.updated = 0.0

    def add(self, rtt: float, now: float) -> None:
        if self.samples == 0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt
        self.samples += 1
        self.updated = now

    def rto(self, k: float) -> float:
        return self.srtt + k * self.rttvar


class RttEstimator:
    """Per-peer and network-wide round-trip estimates, and the timeouts
    derived from them."""

    def __init__(self, config: RttConfig | None = None) -> None:
        self.config = config or RttConfig()
        self._peers: OrderedDict[PeerId, RttEstimate] = OrderedDict()
        self.warm = RttEstimate()
        """Requests on an existing connection, across all peers."""
        self.cold = RttEstimate()
        """Requests that had to dial first, across all peers."""

    def sample(self, peer: PeerId, rtt: float, now: float, *, dialed: bool = False) -> None:
        """A request to ``peer`` was answered after ``rtt`` seconds;
        ``dialed`` if that included setting up the connection."""
        if rtt < 0:
            return  # a clock that went backwards says nothing
        if dialed:
            self.cold.add(rtt, now)
            return
        estimate = self._peers.pop(peer, None) or RttEstimate()
        estimate.add(rtt, now)
        self._peers[peer] = estimate
        if len(self._peers) > self.config.max_peers:
            self._peers.popitem(last=False)
        self.warm.add(rtt, now)

    def peer(self, peer: PeerId) -> RttEstimate | None:
        return self._peers.get(peer)

    def forget(self, peer: PeerId) -> None:
        self._peers.pop(peer, None)

    def timeout(self, peer: PeerId, *, connected: bool) -> float:
        """Seconds to wait for ``peer``'s answer before giving up on it."""
        cfg = self.config
        k = cfg.variance_factor
        own = self._peers.get(peer)
        if own is not None:
            warm = own.rto(k)
        elif self.warm.samples:
            warm = self.warm.rto(k)
        else:
            warm = cfg.initial_timeout
        if connected:
            chosen, floor = warm, cfg.min_timeout
        elif self.cold.samples:
            # A peer far slower than the average also dials slower: a dial
            # and a request are at least two of its round trips.
            chosen, floor = max(self.cold.rto(k), 2 * warm), cfg.min_dial_timeout
        else:
            chosen, floor = warm + cfg.initial_dial, cfg.min_dial_timeout
        return min(cfg.max_timeout, max(floor, chosen))
