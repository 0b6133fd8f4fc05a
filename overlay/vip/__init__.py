"""Virtual IPs: a TUN interface whose addresses stand for peers.

``addressing`` (pure) derives and hands out the addresses and checks
packets; ``router`` (pure) decides where each packet goes; ``tun`` and
``daemon_ext`` are the I/O.  See docs/vip.md.
"""

from overlay.vip.addressing import (
    SELF_V4,
    ULA_PREFIX,
    V4_NETWORK,
    Ipv4Allocator,
    Ipv4AllocatorConfig,
    PacketInfo,
    parse_packet,
    rewrite_v4,
    vip6_of,
)
from overlay.vip.errors import AllocatorFull, BadPacket, ForgedSource

__all__ = [
    "SELF_V4", "ULA_PREFIX", "V4_NETWORK", "Ipv4Allocator", "Ipv4AllocatorConfig",
    "PacketInfo", "parse_packet", "rewrite_v4", "vip6_of",
    "AllocatorFull", "BadPacket", "ForgedSource",
]
