"""Virtual IP addresses of peers (pure: no I/O, the clock is a parameter).

IPv6: every peer has one stable address inside the ULA prefix
``fd4f:766c:3000::/48`` (RFC 4193; the 40-bit global ID spells "Ovl" and
is fixed so that every node derives the same address): the prefix followed
by the first 80 bits of SHA-256("overlay-vip6" || peer ID bytes).  Anyone
can compute it, nobody can choose it, and the receiver of a packet checks
that its source is the address of the authenticated peer that sent it.

IPv4: 100.64.0.0/10 (RFC 6598) is too small to derive addresses from peer
IDs, so addresses are handed out locally, on demand, like a resolver's
synthetic answers: ``Ipv4Allocator`` maps peers to addresses for as long as
they are in use.  A node's own IPv4 address is always ``SELF_V4``.  IPv4
addresses mean nothing off the node, so on the wire an IPv4 packet carries
``SELF_V4`` as both source and destination; the receiver rewrites the
source to its own address for the sending peer (``rewrite_v4``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections import OrderedDict
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.vip.errors import AllocatorFull, BadPacket

__all__ = [
    "ULA_PREFIX", "V4_NETWORK", "SELF_V4", "MAX_PACKET",
    "vip6_of", "in_ula", "Ipv4Allocator", "Ipv4AllocatorConfig",
    "PacketInfo", "parse_packet", "rewrite_v4",
]

ULA_PREFIX = ipaddress.IPv6Network("fd4f:766c:3000::/48")
"""Every peer's IPv6 virtual address lies in this prefix."""

V4_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
"""IPv4 virtual addresses are handed out from this network."""

SELF_V4 = ipaddress.IPv4Address("100.64.0.1")
"""This node's own IPv4 virtual address (the same on every node)."""

MAX_PACKET = 65535
"""The largest IP packet accepted from the TUN device or a peer."""

_FIRST_V4 = int(SELF_V4) + 1
_LAST_V4 = int(V4_NETWORK.broadcast_address) - 1
_V6_DOMAIN = b"overlay-vip6"


def vip6_of(peer: PeerId) -> ipaddress.IPv6Address:
    """The peer's stable IPv6 virtual address."""
    digest = hashlib.sha256(_V6_DOMAIN + peer.to_bytes()).digest()
    prefix = ULA_PREFIX.network_address.packed[:6]
    return ipaddress.IPv6Address(prefix + digest[:10])


def in_ula(address: ipaddress.IPv6Address) -> bool:
    return address in ULA_PREFIX


@dataclass(frozen=True, slots=True)
class Ipv4AllocatorConfig:
    """Size and hold time of the IPv4 table."""

    max_entries: int = 4096
    """Peers that may hold an IPv4 address at once."""

    idle_expiry: float = 3600.0
    """Seconds after its last use from which a peer's address may be given
    to another peer (only when the table is full; until then it stays)."""

    first: int = _FIRST_V4
    """First address handed out (as an integer; tests shrink the pool)."""

    last: int = _LAST_V4
    """Last address handed out."""

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError("max_entries must be positive")
        if not self.idle_expiry > 0:
            raise ValueError("idle_expiry must be positive")
        if not (_FIRST_V4 <= self.first <= self.last <= _LAST_V4):
            raise ValueError("the pool must lie inside 100.64.0.2 .. 100.127.255.254")


class Ipv4Allocator:
    """Peer <-> IPv4 address, handed out on demand.

    An address stays with its peer while the peer keeps using it (every
    ``allocate`` or ``touch`` refreshes it).  When the table is full the
    least recently used entry idle for ``idle_expiry`` is reclaimed;
    if none is, ``allocate`` raises ``AllocatorFull``.
    """

    def __init__(self, config: Ipv4AllocatorConfig | None = None) -> None:
        self.config = config or Ipv4AllocatorConfig()
        # peer -> (address, last use); ordered from least to most recent.
        self._by_peer: OrderedDict[PeerId, tuple[int, float]] = OrderedDict()
        self._by_addr: dict[int, PeerId] = {}
        self._next = self.config.first

    def __len__(self) -> int:
        return len(self._by_peer)

    def lookup(self, peer: PeerId) -> ipaddress.IPv4Address | None:
        entry = self._by_peer.get(peer)
        return None if entry is None else ipaddress.IPv4Address(entry[0])

    def peer_of(self, address: ipaddress.IPv4Address) -> PeerId | None:
        return self._by_addr.get(int(address))

    def touch(self, peer: PeerId, now: float) -> None:
        entry = self._by_peer.get(peer)
        if entry is not None:
            self._by_peer[peer] = (entry[0], now)
            self._by_peer.move_to_end(peer)

    def allocate(self, peer: PeerId, now: float) -> ipaddress.IPv4Address:
        """The peer's address, handing one out if it has none."""
        entry = self._by_peer.get(peer)
        if entry is not None:
            self.touch(peer, now)
            return ipaddress.IPv4Address(entry[0])
        pool = self.config.last - self.config.first + 1
        if len(self._by_peer) >= min(self.config.max_entries, pool):
            self._reclaim(now)
        address = self._free_address()
        self._by_peer[peer] = (address, now)
        self._by_addr[address] = peer
        return ipaddress.IPv4Address(address)

    def _reclaim(self, now: float) -> None:
        oldest, (address, used) = next(iter(self._by_peer.items()))
        if now - used < self.config.idle_expiry:
            raise AllocatorFull(
                f"all {len(self._by_peer)} IPv4 virtual addresses are in use")
        del self._by_peer[oldest]
        del self._by_addr[address]
        # Reuse this one first: the scan below would find it anyway.
        self._next = address

    def _free_address(self) -> int:
        first, last = self.config.first, self.config.last
        candidate = self._next
        for _ in range(last - first + 1):
            if candidate > last:
                candidate = first
            if candidate not in self._by_addr:
                self._next = candidate + 1
                return candidate
            candidate += 1
        raise AllocatorFull("no free IPv4 virtual address")  # unreachable: checked by size


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """The addresses of one IP packet."""

    version: int
    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_packet(packet: bytes, limit: int = MAX_PACKET) -> PacketInfo:
    """Version, source and destination of an IPv4 or IPv6 packet; raises
    ``BadPacket`` for anything that is not one whole packet of at most
    ``limit`` bytes."""
    size = len(packet)
    if size > limit:
        raise BadPacket(f"{size}-byte packet is over the {limit}-byte limit")
    if size < 1:
        raise BadPacket("empty packet")
    version = packet[0] >> 4
    if version == 4:
        if size < 20:
            raise BadPacket(f"{size}-byte IPv4 packet is shorter than its header")
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        if ihl < 20 or ihl > size or total < ihl or total != size:
            raise BadPacket("IPv4 header or total length does not match the packet")
        return PacketInfo(4, ipaddress.IPv4Address(packet[12:16]),
                          ipaddress.IPv4Address(packet[16:20]))
    if version == 6:
        if size < 40:
            raise BadPacket(f"{size}-byte IPv6 packet is shorter than its header")
        payload = struct.unpack_from("!H", packet, 4)[0]
        if payload + 40 != size:
            raise BadPacket("IPv6 payload length does not match the packet")
        return PacketInfo(6, ipaddress.IPv6Address(packet[8:24]),
                          ipaddress.IPv6Address(packet[24:40]))
    raise BadPacket(f"IP version {version} is neither 4 nor 6")


def _fold(value: int) -> int:
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def _adjust(checksum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 incremental update of a ones'-complement checksum."""
    total = (~checksum) & 0xFFFF
    for i in range(0, len(old), 2):
        total += (~int.from_bytes(old[i:i + 2], "big")) & 0xFFFF
        total += int.from_bytes(new[i:i + 2], "big")
    return (~_fold(total)) & 0xFFFF


def rewrite_v4(packet: bytes, source: ipaddress.IPv4Address,
               destination: ipaddress.IPv4Address) -> bytes:
    """``packet`` (a valid IPv4 packet, see ``parse_packet``) with new
    addresses, its header checksum and, in a first fragment, its TCP or UDP
    checksum updated (both cover the addresses)."""
    out = bytearray(packet)
    old = bytes(out[12:20])
    new = source.packed + destination.packed
    if old == new:
        return packet
    out[12:20] = new
    header_sum = struct.unpack_from("!H", out, 10)[0]
    struct.pack_into("!H", out, 10, _adjust(header_sum, old, new))
    ihl = (out[0] & 0x0F) * 4
    fragment_offset = struct.unpack_from("!H", out, 6)[0] & 0x1FFF
    protocol = out[9]
    if fragment_offset == 0:
        at = {6: 16, 17: 6}.get(protocol)
        if at is not None and len(out) >= ihl + at + 2:
            l4_sum = struct.unpack_from("!H", out, ihl + at)[0]
            if not (protocol == 17 and l4_sum == 0):  # UDP without a checksum
                updated = _adjust(l4_sum, old, new)
                if protocol == 17 and updated == 0:
                    updated = 0xFFFF
                struct.pack_into("!H", out, ihl + at, updated)
    return bytes(out)
