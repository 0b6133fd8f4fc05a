"""Hints from the relay (pure): what the DCUtR initiator does with the
addresses a stop CONNECT names for the peer at the other end.

Circuit relay v2's stop CONNECT carries ``peer {id, addrs}``; the spec
needs only the id.  Our relay puts there the source address of the
initiator's connection to it (``overlay.relay.server.observed_addrs``): the
peer's public mapping, as good as identify's observed address but two
relayed round trips before the relayed connection is even upgraded.  The
side being dialled (DCUtR's B) sends a few punch packets there at once, so
its NAT lets the peer's early QUIC dial (sent on CONNECT) through.

A hint is unverified, so it buys little: a few small packets from our
listening socket, after the same address filter as a CONNECT's
(``filter_addrs``: public, not ours, not the relay's, not another peer's
we are connected to) and three rate limits, per claimed peer, per relay
and per target IP, since peer IDs cost a hostile relay nothing: it cannot
make us send more than ``packets`` x ``per_ip`` packets a minute to anyone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from overlay.limits import RateLimiter
from overlay.nat.dcutr_core import AddrContext, Candidate, filter_addrs

__all__ = ["HintConfig", "HintPolicy"]


@dataclass(frozen=True, slots=True)
class HintConfig:
    enabled: bool = True
    """Punch towards a stop CONNECT's addresses when a relay names them."""
    max_addrs: int = 2
    """Addresses of one hint used at most (our relay sends one)."""
    packets: int = 3
    """Punch packets sent to each address of a hint, back to back: one
    opens the NAT, the others cover a loss."""
    per_peer: tuple[int, float] = (3, 600.0)
    """(hints, seconds) acted on per claimed peer, as DCUtR's sessions."""
    per_relay: tuple[int, float] = (30, 60.0)
    """(hints, seconds) acted on per relay."""
    per_ip: tuple[int, float] = (6, 60.0)
    """(hints, seconds) acted on per target IP, whoever claims it."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_addrs <= 2 or not 1 <= self.packets <= 8:
            raise ValueError("a hint names 1..2 addresses and gets 1..8 packets each")
        for burst, window in (self.per_peer, self.per_relay, self.per_ip):
            if burst < 1 or window <= 0:
                raise ValueError("hint limits need a burst of at least 1 and a positive window")


def _limiter(limit: tuple[int, float]) -> RateLimiter:
    burst, window = limit
    return RateLimiter(burst / window, burst)


class HintPolicy:
    """Decides which hinted addresses get punch packets now."""

    def __init__(self, config: HintConfig, allow_private: bool) -> None:
        self.config = config
        self._allow_private = allow_private
        self._peer = _limiter(config.per_peer)
        self._relay = _limiter(config.per_relay)
        self._ip = _limiter(config.per_ip)

    def decide(self, relay: Hashable, peer: Hashable, addrs: Sequence[bytes],
               ctx: AddrContext, now: float) -> tuple[list[Candidate], str | None]:
        """The addresses to punch towards, and why none when empty."""
        if not self.config.enabled:
            return [], "hints are off"
        kept, dropped = filter_addrs(addrs[:self.config.max_addrs], ctx,
                                     max_addrs=self.config.max_addrs,
                                     allow_private=self._allow_private)
        if not kept:
            return [], "; ".join(dropped[:2]) or "no address"
        if not self._relay.allow(relay, now):
            return [], "over the hint limit of this relay"
        if not self._peer.allow(peer, now):
            return [], "over the hint limit of this peer"
        allowed = [cand for cand in kept if self._ip.allow(cand.ip, now)]
        if not allowed:
            return [], "over the hint limit of that IP"
        return allowed, None
