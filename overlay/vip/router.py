"""Where each virtual-IP packet goes (pure: the clock is a parameter).

``outbound`` takes a packet the kernel wrote to the TUN device and says
which peer gets it (in its wire form); ``inbound`` takes a packet a peer
sent and returns what to write to the TUN device, or raises
``ForgedSource`` when its addresses do not belong to that peer.  Both run
once per packet, so they compare packed bytes rather than build address
objects.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.vip.addressing import (
    MAX_PACKET,
    SELF_V4,
    ULA_PREFIX,
    Ipv4Allocator,
    check_header,
    rewrite_v4_raw,
    vip6_of,
)
from overlay.vip.errors import AllocatorFull, BadPacket, ForgedSource

__all__ = ["Forward", "Drop", "VipRouter"]

_SELF4 = SELF_V4.packed
_WIRE4 = _SELF4 + _SELF4
_ULA = ULA_PREFIX.network_address.packed[:6]


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
        self._vip6 = self.vip6.packed
        # Not `allocator or …`: an empty allocator is falsy (it has a length).
        self.allocator = allocator if allocator is not None else Ipv4Allocator()
        self._by_v6: dict[bytes, PeerId] = {}
        self._v6_of: dict[PeerId, bytes] = {}
        self._max_known = max_known
        self.drops: Counter[str] = Counter()
        """Packets dropped, by reason."""

    def learn(self, peer: PeerId) -> ipaddress.IPv6Address:
        """Remember ``peer`` so that packets to its IPv6 address find it."""
        return ipaddress.IPv6Address(self._learn(peer))

    def _learn(self, peer: PeerId) -> bytes:
        packed = self._v6_of.get(peer)
        if packed is not None:
            return packed
        packed = vip6_of(peer).packed
        if peer != self.me:
            if len(self._by_v6) >= self._max_known:
                # Forget the oldest: it is learned again when it is seen.
                oldest = next(iter(self._by_v6))
                del self._v6_of[self._by_v6.pop(oldest)]
            self._by_v6[packed] = peer
            self._v6_of[peer] = packed
        return packed

    def peer_of_v6(self, address: ipaddress.IPv6Address) -> PeerId | None:
        return self._by_v6.get(address.packed)

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
            version = check_header(packet, MAX_PACKET)
        except BadPacket:
            return self._drop("malformed")
        if version == 6:
            if packet[8:24] != self._vip6:
                # Link-local chatter (router solicitations …) and anything
                # not sent from our own virtual address stays here.
                return self._drop("not from our vip6")
            destination = packet[24:40]
            if destination[:6] != _ULA:
                return self._drop("not to a vip6")
            peer = self._by_v6.get(destination)
            if peer is None:
                return self._drop("unknown vip6")
            return Forward(peer, packet)
        if packet[12:16] != _SELF4:
            return self._drop("not from our vip4")
        peer = self.allocator.peer_at(int.from_bytes(packet[16:20], "big"))
        if peer is None:
            return self._drop("unknown vip4")
        self.allocator.touch(peer, now)
        return Forward(peer, rewrite_v4_raw(packet, _WIRE4))

    def inbound(self, peer: PeerId, packet: bytes, now: float) -> bytes:
        """A packet from ``peer``: what to write to the TUN device.  Raises
        ``BadPacket`` or ``ForgedSource`` (counted in ``drops``)."""
        try:
            version = check_header(packet, MAX_PACKET)
        except BadPacket:
            self.drops["malformed"] += 1
            raise
        if version == 6:
            if packet[8:24] != self._learn(peer):
                self.drops["forged source"] += 1
                raise ForgedSource(f"{peer} sent from "
                                   f"{ipaddress.IPv6Address(packet[8:24])}, not its own vip6")
            if packet[24:40] != self._vip6:
                self.drops["not to us"] += 1
                raise ForgedSource(f"{peer} sent to "
                                   f"{ipaddress.IPv6Address(packet[24:40])}, not our vip6")
            return packet
        if packet[12:20] != _WIRE4:
            self.drops["forged source"] += 1
            raise ForgedSource(f"{peer} sent an IPv4 packet not in wire form "
                               f"({ipaddress.IPv4Address(packet[12:16])} -> "
                               f"{ipaddress.IPv4Address(packet[16:20])})")
        try:
            source = self.allocator.allocate_int(peer, now)
        except AllocatorFull:
            self.drops["vip4 table full"] += 1
            raise
        return rewrite_v4_raw(packet, source.to_bytes(4, "big") + _SELF4)

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)
