"""What the host knows about other peers (pure, bounded, in memory).

No TTLs: addresses stay until the peer is evicted or replaced by a newer
identify.  Every collection is capped so a chatty or hostile peer cannot
grow it without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from multiaddr import Multiaddr

from overlay.identity import PeerId, PublicKey

__all__ = ["PeerInfo", "Peerstore", "ObservedAddrs"]


@dataclass(slots=True)
class PeerInfo:
    """Mutable record of one peer, owned by the ``Peerstore``."""

    peer_id: PeerId
    addrs: dict[Multiaddr, None] = field(default_factory=dict)
    protocols: frozenset[str] = frozenset()
    public_key: PublicKey | None = None
    agent_version: str | None = None
    protocol_version: str | None = None
    observed_addr: Multiaddr | None = None
    """The address this peer reported seeing us at."""
    record_seq: int | None = None
    """Sequence number of the newest signed peer record accepted."""


class Peerstore:
    """Addresses, protocols, keys and versions of peers, capped in size."""

    def __init__(
        self, max_peers: int = 10_000, max_addrs: int = 32, max_protocols: int = 128
    ) -> None:
        if min(max_peers, max_addrs, max_protocols) < 1:
            raise ValueError("peerstore limits must be positive")
        self._peers: OrderedDict[PeerId, PeerInfo] = OrderedDict()
        self._max_peers = max_peers
        self._max_addrs = max_addrs
        self._max_protocols = max_protocols

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def peers(self) -> list[PeerId]:
        return list(self._peers)

    def get(self, peer_id: PeerId) -> PeerInfo | None:
        return self._peers.get(peer_id)

    def _touch(self, peer_id: PeerId) -> PeerInfo:
        info = self._peers.get(peer_id)
        if info is None:
            info = PeerInfo(peer_id)
            self._peers[peer_id] = info
            while len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer_id)
        return info

    def add_addrs(self, peer_id: PeerId, addrs: list[Multiaddr]) -> None:
        """Remember ``addrs`` (newest last); the oldest fall off at the cap."""
        info = self._touch(peer_id)
        for addr in addrs:
            info.addrs.pop(addr, None)
            info.addrs[addr] = None
        while len(info.addrs) > self._max_addrs:
            del info.addrs[next(iter(info.addrs))]

    def set_addrs(self, peer_id: PeerId, addrs: list[Multiaddr]) -> None:
        """Replace the addresses, e.g. with those of a fresh identify."""
        info = self._touch(peer_id)
        info.addrs = dict.fromkeys(addrs[: self._max_addrs])

    def addrs(self, peer_id: PeerId) -> list[Multiaddr]:
        info = self._peers.get(peer_id)
        return list(info.addrs) if info else []

    def set_protocols(self, peer_id: PeerId, protocols: list[str]) -> None:
        self._touch(peer_id).protocols = frozenset(protocols[: self._max_protocols])

    def protocols(self, peer_id: PeerId) -> frozenset[str]:
        info = self._peers.get(peer_id)
        return info.protocols if info else frozenset()

    def supports(self, peer_id: PeerId, protocol: str) -> bool:
        return protocol in self.protocols(peer_id)

    def set_public_key(self, peer_id: PeerId, key: PublicKey) -> None:
        if not peer_id.matches_public_key(key):
            raise ValueError("public key does not belong to this peer ID")
        self._touch(peer_id).public_key = key

    def public_key(self, peer_id: PeerId) -> PublicKey | None:
        info = self._peers.get(peer_id)
        if info and info.public_key:
            return info.public_key
        return peer_id.extract_public_key()

    def set_versions(
        self, peer_id: PeerId, agent_version: str | None, protocol_version: str | None
    ) -> None:
        info = self._touch(peer_id)
        if agent_version is not None:
            info.agent_version = agent_version
        if protocol_version is not None:
            info.protocol_version = protocol_version

    def set_observed_addr(self, peer_id: PeerId, addr: Multiaddr) -> None:
        self._touch(peer_id).observed_addr = addr

    def accept_record_seq(self, peer_id: PeerId, seq: int) -> bool:
        """True (and remember ``seq``) if it is newer than the last accepted."""
        info = self._touch(peer_id)
        if info.record_seq is not None and seq <= info.record_seq:
            return False
        info.record_seq = seq
        return True

    def remove(self, peer_id: PeerId) -> None:
        self._peers.pop(peer_id, None)


class ObservedAddrs:
    """Our own addresses as remote peers report them (identify observedAddr).

    An address counts once per reporting peer; NAT traversal trusts those
    that several peers confirm.  Bounded in reporters and addresses.
    """

    def __init__(self, max_addrs: int = 64, max_reporters: int = 256) -> None:
        if min(max_addrs, max_reporters) < 1:
            raise ValueError("limits must be positive")
        self._by_reporter: OrderedDict[PeerId, Multiaddr] = OrderedDict()
        self._max_addrs = max_addrs
        self._max_reporters = max_reporters

    def record(self, reporter: PeerId, addr: Multiaddr) -> None:
        self._by_reporter.pop(reporter, None)
        self._by_reporter[reporter] = addr
        while len(self._by_reporter) > self._max_reporters:
            self._by_reporter.popitem(last=False)

    def forget(self, reporter: PeerId) -> None:
        self._by_reporter.pop(reporter, None)

    def addrs(self, min_reporters: int = 1) -> list[tuple[Multiaddr, int]]:
        """Addresses with their number of distinct reporters, most first."""
        counts: dict[Multiaddr, int] = {}
        for addr in self._by_reporter.values():
            counts[addr] = counts.get(addr, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        return [item for item in ranked if item[1] >= min_reporters][: self._max_addrs]
