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

import functools
import hashlib
import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.vip.errors import AllocatorFull, BadPacket

__all__ = [
    "ULA_PREFIX", "V4_NETWORK", "SELF_V4", "MAX_PACKET",
    "vip6_of", "in_ula", "Ipv4Allocator", "Ipv4AllocatorConfig",
    "PacketInfo", "check_header", "parse_packet", "rewrite_v4", "rewrite_v4_raw",
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
        self.on_change: Callable[[], None] | None = None
        """Called when a peer gets or loses an address (not on every use:
        the table's owner persists it, and only new mappings matter)."""

    def entries(self) -> list[tuple[PeerId, int]]:
        """Every (peer, address), from the least to the most recently used."""
        return [(peer, entry[0]) for peer, entry in self._by_peer.items()]

    def restore(self, entries: Iterable[tuple[PeerId, int]], now: float) -> int:
        """Take back ``entries`` (as ``entries()`` gave them, least recent
        first), each as used at ``now``.  When they do not all fit, the most
        recent are kept; a peer or an address that appears twice keeps its
        most recent entry; addresses outside the pool are skipped.  Returns
        how many were taken."""
        config = self.config
        room = min(config.max_entries, config.last - config.first + 1) - len(self._by_peer)
        peers, addresses = set(self._by_peer), set(self._by_addr)
        chosen: list[tuple[PeerId, int]] = []
        for peer, address in reversed(list(entries)):
            if len(chosen) >= room:
                break
            if not config.first <= address <= config.last or peer in peers \
                    or address in addresses:
                continue
            peers.add(peer)
            addresses.add(address)
            chosen.append((peer, address))
        for peer, address in reversed(chosen):
            self._by_peer[peer] = (address, now)
            self._by_addr[address] = peer
        if chosen:
            # New peers get addresses after the restored ones, as before.
            self._next = max(self._next, max(address for _, address in chosen) + 1)
        return len(chosen)

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

    def peer_at(self, address: int) -> PeerId | None:
        """``peer_of`` for an address as an integer (the per-packet path)."""
        return self._by_addr.get(address)

    def allocate(self, peer: PeerId, now: float) -> ipaddress.IPv4Address:
        """The peer's address, handing one out if it has none."""
        return ipaddress.IPv4Address(self.allocate_int(peer, now))

    def allocate_int(self, peer: PeerId, now: float) -> int:
        """``allocate`` as an integer (the per-packet path)."""
        entry = self._by_peer.get(peer)
        if entry is not None:
            self._by_peer[peer] = (entry[0], now)
            self._by_peer.move_to_end(peer)
            return entry[0]
        pool = self.config.last - self.config.first + 1
        if len(self._by_peer) >= min(self.config.max_entries, pool):
            self._reclaim(now)
        address = self._free_address()
        self._by_peer[peer] = (address, now)
        self._by_addr[address] = peer
        if self.on_change is not None:
            self.on_change()
        return address

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


def check_header(packet: bytes, limit: int = MAX_PACKET) -> int:
    """The IP version (4 or 6) of ``packet`` after the same checks as
    ``parse_packet``, without building address objects (the per-packet
    path).  Raises ``BadPacket``."""
    size = len(packet)
    if size > limit:
        raise BadPacket(f"{size}-byte packet is over the {limit}-byte limit")
    if size < 20:
        raise BadPacket(f"{size}-byte packet is shorter than any IP header")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total = (packet[2] << 8) | packet[3]
        if ihl < 20 or ihl > size or total != size:
            raise BadPacket("IPv4 header or total length does not match the packet")
        return 4
    if version == 6:
        if size < 40 or ((packet[4] << 8) | packet[5]) + 40 != size:
            raise BadPacket("IPv6 header or payload length does not match the packet")
        return 6
    raise BadPacket(f"IP version {version} is neither 4 nor 6")


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


@functools.lru_cache(maxsize=4096)  # a few address pairs carry every packet
def _delta(old: bytes, new: bytes) -> int:
    """RFC 1624: what replacing the 16-bit words ``old`` by ``new`` adds to
    a ones'-complement sum (~m + m' over each word)."""
    total = 0
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1])) & 0xFFFF
        total += (new[i] << 8) | new[i + 1]
    return total


def _apply(checksum: int, delta: int) -> int:
    """HC' = ~(~HC + delta) (RFC 1624 equation 3)."""
    return (~_fold(((~checksum) & 0xFFFF) + delta)) & 0xFFFF


def _adjust(checksum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 incremental update of a ones'-complement checksum."""
    return _apply(checksum, _delta(old, new))


def rewrite_v4(packet: bytes, source: ipaddress.IPv4Address,
               destination: ipaddress.IPv4Address) -> bytes:
    """``packet`` (a valid IPv4 packet, see ``parse_packet``) with new
    addresses, its header checksum and, in a first fragment, its TCP or UDP
    checksum updated (both cover the addresses)."""
    return rewrite_v4_raw(packet, source.packed + destination.packed)


def rewrite_v4_raw(packet: bytes, new: bytes) -> bytes:
    """``rewrite_v4`` with the 8 address bytes (source, destination)."""
    old = packet[12:20]
    if old == new:
        return packet
    out = bytearray(packet)
    out[12:20] = new
    delta = _delta(old, new)
    header_sum = _apply((out[10] << 8) | out[11], delta)
    out[10], out[11] = header_sum >> 8, header_sum & 0xFF
    ihl = (out[0] & 0x0F) * 4
    protocol = out[9]
    at = 16 if protocol == 6 else 6 if protocol == 17 else -1
    # Only a first fragment carries the TCP or UDP header.
    if at >= 0 and not ((out[6] & 0x1F) or out[7]) and len(out) >= ihl + at + 2:
        where = ihl + at
        l4_sum = (out[where] << 8) | out[where + 1]
        if not (protocol == 17 and l4_sum == 0):  # UDP without a checksum
            updated = _apply(l4_sum, delta)
            if protocol == 17 and updated == 0:
                updated = 0xFFFF
            out[where], out[where + 1] = updated >> 8, updated & 0xFF
    return bytes(out)
