"""Which peer a name's virtual addresses stand for (pure).

The DNS front, ``name resolve`` and the demo all answer a name with the
vIPs of the first peer its record names: the vIPv6 is derived from that
peer's ID, so every node gives the same one; the vIPv4 is the one this
node's table holds for it (handed out on demand).
"""

from __future__ import annotations

import ipaddress

from overlay.errors import DecodeError
from overlay.identity import PeerId
from overlay.naming.record import NameRecord
from overlay.vip.router import VipRouter

__all__ = ["target_peer", "record_vips"]


def target_peer(record: NameRecord) -> PeerId | None:
    """The peer a name's virtual addresses stand for: the first peer the
    record names (None if it names none, or an unreadable one)."""
    for target in record.peers:
        try:
            return PeerId.from_bytes(target.peer_id)
        except DecodeError:
            continue
    return None


def record_vips(router: VipRouter, record: NameRecord, now: float) -> tuple[
        PeerId, ipaddress.IPv4Address | None, ipaddress.IPv6Address] | None:
    """``(peer, vip4, vip6)`` for a name's record as ``router``'s node shows
    them (vip4 None when the table is full), or None if it names no peer."""
    peer = target_peer(record)
    if peer is None:
        return None
    v4, v6 = router.addresses_of(peer, now)
    return peer, v4, v6
