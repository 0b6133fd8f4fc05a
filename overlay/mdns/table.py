"""The peers mDNS found (pure): who they are, until when we believe them,
and when to dial them.

Events in (``saw``, ``gone``, ``dial_finished``), decisions out
(``next_dial(now)``, ``expire(now)``, ``next_deadline()``); the driver owns
the clock and the dialing.  Dials are bounded: one peer at a time (the
driver asks for the next only after the last finished), each peer at most
``max_attempts`` times per sighting, with a growing pause between tries.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from overlay.identity import PeerId
from overlay.multiaddrs import QuicAddr
from overlay.mdns.records import Sighting

__all__ = ["TableConfig", "DiscoveredPeer", "DiscoveredPeers"]


@dataclass(frozen=True, slots=True)
class TableConfig:
    peer_ttl: float = 4500.0
    """Seconds a sighting is believed without being seen again (the TTL
    zeroconf gives SRV and TXT records); a goodbye ends it at once."""
    max_peers: int = 256
    """Peers remembered; the least recently seen one makes room."""
    max_attempts: int = 3
    """Dials of one peer per sighting that changes its addresses."""
    retry_delay: float = 5.0
    """Seconds before the second dial; each later one waits twice as long."""

    def __post_init__(self) -> None:
        if not self.peer_ttl > 0:
            raise ValueError("peer_ttl must be positive")
        if self.max_peers < 1 or self.max_attempts < 1:
            raise ValueError("max_peers and max_attempts must be at least 1")
        if not self.retry_delay >= 0:
            raise ValueError("retry_delay must not be negative")


@dataclass(slots=True)
class DiscoveredPeer:
    peer_id: PeerId
    addrs: tuple[QuicAddr, ...]
    seen_at: float
    expires_at: float
    attempts: int = 0
    next_dial_at: float = 0.0
    connected: bool = False
    dialing: bool = False
    names: set[str] = field(default_factory=set)
    """The mDNS instance names that announced this peer (a restart
    announces a new one before the old one's goodbye arrives)."""


class DiscoveredPeers:
    """The discovered-peers table; see the module docstring."""

    def __init__(self, config: TableConfig | None = None) -> None:
        self.config = config or TableConfig()
        self._peers: OrderedDict[PeerId, DiscoveredPeer] = OrderedDict()
        self._by_name: dict[str, PeerId] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get(self, peer_id: PeerId) -> DiscoveredPeer | None:
        return self._peers.get(peer_id)

    def peers(self) -> list[DiscoveredPeer]:
        return list(self._peers.values())

    def saw(self, name: str, sighting: Sighting, now: float) -> bool:
        """Record that instance ``name`` announced ``sighting``; True when
        the peer is new or its addresses changed (a dial is due)."""
        old_peer = self._by_name.get(name)
        if old_peer is not None and old_peer != sighting.peer_id:
            self.gone(name)
        entry = self._peers.get(sighting.peer_id)
        expires = now + self.config.peer_ttl
        if entry is None:
            entry = DiscoveredPeer(sighting.peer_id, sighting.addrs, now, expires)
            self._peers[sighting.peer_id] = entry
            while len(self._peers) > self.config.max_peers:
                _, evicted = self._peers.popitem(last=False)
                for old in evicted.names:
                    self._by_name.pop(old, None)
            changed = True
        else:
            self._peers.move_to_end(sighting.peer_id)
            changed = entry.addrs != sighting.addrs
            entry.addrs, entry.seen_at, entry.expires_at = sighting.addrs, now, expires
            if changed:
                entry.attempts, entry.next_dial_at = 0, now
        entry.names.add(name)
        self._by_name[name] = sighting.peer_id
        return changed

    def gone(self, name: str) -> PeerId | None:
        """Instance ``name`` said goodbye (or its records expired); the peer
        is forgotten once no instance announces it.  Returns that peer."""
        peer_id = self._by_name.pop(name, None)
        if peer_id is None:
            return None
        entry = self._peers.get(peer_id)
        if entry is None:
            return None
        entry.names.discard(name)
        if entry.names:
            return None
        del self._peers[peer_id]
        return peer_id

    def expire(self, now: float) -> list[PeerId]:
        """Forget peers not seen for ``peer_ttl``; returns them."""
        dead = [peer for peer, entry in self._peers.items() if entry.expires_at <= now]
        for peer in dead:
            for name in self._peers.pop(peer).names:
                self._by_name.pop(name, None)
        return dead

    def set_connected(self, peer_id: PeerId, connected: bool) -> None:
        entry = self._peers.get(peer_id)
        if entry is not None:
            entry.connected = connected

    def next_dial(self, now: float) -> DiscoveredPeer | None:
        """The peer to dial now (marked as dialing), or None.  Connected
        peers, exhausted ones and those still pausing are skipped."""
        for entry in self._peers.values():
            if (not entry.connected and not entry.dialing and entry.expires_at > now
                    and entry.attempts < self.config.max_attempts
                    and entry.next_dial_at <= now):
                entry.dialing = True
                entry.attempts += 1
                return entry
        return None

    def dial_finished(self, peer_id: PeerId, ok: bool, now: float) -> None:
        entry = self._peers.get(peer_id)
        if entry is None:
            return
        entry.dialing = False
        entry.connected = entry.connected or ok
        if not ok:
            entry.next_dial_at = now + self.config.retry_delay * 2 ** (entry.attempts - 1)

    def next_deadline(self) -> float | None:
        """When ``expire`` or ``next_dial`` may next have something to do."""
        times = [entry.expires_at for entry in self._peers.values()]
        times += [entry.next_dial_at for entry in self._peers.values()
                  if not entry.connected and not entry.dialing
                  and entry.attempts < self.config.max_attempts]
        return min(times) if times else None
