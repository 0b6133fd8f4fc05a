"""Where each virtual-IP packet goes (pure: the clock is a parameter).

``outbound`` takes a packet the kernel wrote to the TUN device and says
which peer gets it (in its wire form); ``inbound`` takes a packet a peer
sent and returns what to write to the TUN device, or raises
``ForgedSource`` when its addresses do not belong to that peer.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.vip.addressing import (
    MAX_PACKET,
    SELF_V4,
    Ipv4Allocator,
    in_ula,
    parse_packet,
    rewrite_v4,
    vip6_of,
)
from overlay.vip.errors import AllocatorFull, BadPacket, ForgedSource

__all__ = ["Forward", "Drop", "VipRouter"]


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``packet`` (wire form) to ``peer``."""

    peer: PeerId
    packet: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """Do not send the packet, for ``reason``."""

    reason: str


class VipRouter:
    """Address checks and translation between the TUN device and peers."""

    def __init__(self, me: PeerId, allocator: Ipv4Allocator | None = None,
                 *, max_known: int = 65536) -> None:
        self.me = me
        self.vip6 = vip6_of(me)
        self.allocator = allocator or Ipv4Allocator()
        self._by_v6: dict[ipaddress.IPv6Address, PeerId] = {}
        self._max_known = max_known
        self.drops: Counter[str] = Counter()
        """Packets dropped, by reason."""

    def learn(self, peer: PeerId) -> ipaddress.IPv6Address:
        """Remember ``peer`` so that packets to its IPv6 address find it."""
        address = vip6_of(peer)
        if peer != self.me and address not in self._by_v6:
            if len(self._by_v6) >= self._max_known:
                # Forget the oldest: it can be learned again when it is seen.
                del self._by_v6[next(iter(self._by_v6))]
            self._by_v6[address] = peer
        return address

    def peer_of_v6(self, address: ipaddress.IPv6Address) -> PeerId | None:
        return self._by_v6.get(address)

    def addresses_of(self, peer: PeerId, now: float) -> tuple[ipaddress.IPv4Address | None,
                                                              ipaddress.IPv6Address]:
        """The peer's addresses as this node shows them (handing out an
        IPv4 one if it has none; None if the table is full)."""
        v6 = self.learn(peer)
        if peer == self.me:
            return SELF_V4, v6
        try:
            v4: ipaddress.IPv4Address | None = self.allocator.allocate(peer, now)
        except AllocatorFull:
            v4 = None
        return v4, v6

    def outbound(self, packet: bytes, now: float) -> Forward | Drop:
        """A packet read from the TUN device."""
        try:
            info = parse_packet(packet, MAX_PACKET)
        except BadPacket:
            return self._drop("malformed")
        if info.version == 6:
            if info.source != self.vip6:
                # Link-local chatter (router solicitations …) and anything
                # not sent from our own virtual address stays here.
                return self._drop("not from our vip6")
            if not (isinstance(info.destination, ipaddress.IPv6Address)
                    and in_ula(info.destination)):
                return self._drop("not to a vip6")
            peer = self._by_v6.get(info.destination)
            if peer is None:
                return self._drop("unknown vip6")
            return Forward(peer, packet)
        if info.source != SELF_V4:
            return self._drop("not from our vip4")
        if not isinstance(info.destination, ipaddress.IPv4Address):
            return self._drop("malformed")
        peer = self.allocator.peer_of(info.destination)
        if peer is None:
            return self._drop("unknown vip4")
        self.allocator.touch(peer, now)
        return Forward(peer, rewrite_v4(packet, SELF_V4, SELF_V4))

    def inbound(self, peer: PeerId, packet: bytes, now: float) -> bytes:
        """A packet from ``peer``: what to write to the TUN device.  Raises
        ``BadPacket`` or ``ForgedSource`` (counted in ``drops``)."""
        try:
            info = parse_packet(packet, MAX_PACKET)
        except BadPacket:
            self.drops["malformed"] += 1
            raise
        if info.version == 6:
            if info.source != vip6_of(peer):
                self.drops["forged source"] += 1
                raise ForgedSource(f"{peer} sent from {info.source}, not its own vip6")
            if info.destination != self.vip6:
                self.drops["not to us"] += 1
                raise ForgedSource(f"{peer} sent to {info.destination}, not our vip6")
            self.learn(peer)
            return packet
        if info.source != SELF_V4 or info.destination != SELF_V4:
            self.drops["forged source"] += 1
            raise ForgedSource(f"{peer} sent an IPv4 packet not in wire form "
                               f"({info.source} -> {info.destination})")
        try:
            source = self.allocator.allocate(peer, now)
        except AllocatorFull:
            self.drops["vip4 table full"] += 1
            raise
        return rewrite_v4(packet, source, SELF_V4)

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)
