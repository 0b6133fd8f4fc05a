"""Structural checks of binary multiaddrs in kad messages, and the IP
prefix groups the routing table uses to bound one host's influence.

Only the shape is checked (protocol codes and value lengths); whether an
address is dialable is the transport's business.  Codes come from the
multiformats multiaddr table.
"""

from __future__ import annotations

import ipaddress

from overlay.errors import DecodeError
from overlay.kad.errors import InvalidPeerInfo
from overlay.wire.varint import decode_uvarint

__all__ = ["MAX_ADDR_BYTES", "check_multiaddr", "ip_groups"]

MAX_ADDR_BYTES = 1024

_VARIABLE = -1
_P2P_CIRCUIT = 290
# code -> fixed value size in bytes, or _VARIABLE for a uvarint length prefix.
_PROTOCOL_SIZES: dict[int, int] = {
    4: 4,  # ip4
    6: 2,  # tcp
    33: 2,  # dccp
    41: 16,  # ip6
    42: _VARIABLE,  # ip6zone
    43: 1,  # ipcidr
    53: _VARIABLE,  # dns
    54: _VARIABLE,  # dns4
    55: _VARIABLE,  # dns6
    56: _VARIABLE,  # dnsaddr
    132: 2,  # sctp
    273: 2,  # udp
    275: 0,  # p2p-webrtc-star
    276: 0,  # p2p-webrtc-direct
    277: 0,  # p2p-stardust
    280: 0,  # webrtc-direct
    281: 0,  # webrtc
    290: 0,  # p2p-circuit
    301: 0,  # udt
    302: 0,  # utp
    400: _VARIABLE,  # unix
    421: _VARIABLE,  # p2p
    443: 0,  # https
    444: 12,  # onion
    445: 37,  # onion3
    446: _VARIABLE,  # garlic64
    447: _VARIABLE,  # garlic32
    448: 0,  # tls
    449: _VARIABLE,  # sni
    454: 0,  # noise
    460: 0,  # quic
    461: 0,  # quic-v1
    465: 0,  # webtransport
    466: _VARIABLE,  # certhash
    477: 0,  # ws
    478: 0,  # wss
    479: 0,  # p2p-websocket-star
    480: 0,  # http
    481: _VARIABLE,  # http-path
    777: 8,  # memory
}


def check_multiaddr(data: bytes) -> bool:
    """True if ``data`` is a well-formed binary multiaddr of known protocols,
    False if it names a protocol we do not know (so its length is unknown
    and it is skipped, not fatal).  Raises ``InvalidPeerInfo`` when it is
    structurally broken: empty, oversized, truncated or with a bad IP."""
    if not data:
        raise InvalidPeerInfo("empty multiaddr")
    if len(data) > MAX_ADDR_BYTES:
        raise InvalidPeerInfo(f"multiaddr of {len(data)} bytes exceeds {MAX_ADDR_BYTES}")
    offset = 0
    try:
        while offset < len(data):
            code, offset = decode_uvarint(data, offset)
            size = _PROTOCOL_SIZES.get(code)
            if size is None:
                return False
            if size == _VARIABLE:
                size, offset = decode_uvarint(data, offset)
            if offset + size > len(data):
                raise InvalidPeerInfo(f"multiaddr protocol {code} value is truncated")
            offset += size
    except DecodeError as exc:
        raise InvalidPeerInfo(f"malformed multiaddr: {exc}") from None
    return True


def _ip_values(addr: bytes) -> list[tuple[int, bytes]]:
    """(code, raw address) of the ip4/ip6 components of a well-formed addr."""
    found: list[tuple[int, bytes]] = []
    offset = 0
    try:
        while offset < len(addr):
            code, offset = decode_uvarint(addr, offset)
            size = _PROTOCOL_SIZES.get(code)
            if size is None:
                break
            if size == _VARIABLE:
                size, offset = decode_uvarint(addr, offset)
            if code == _P2P_CIRCUIT:
                # The IP of a circuit address is the relay's, shared by every
                # peer it relays for: it says nothing about the peer's host.
                return []
            if code in (4, 41):
                found.append((code, addr[offset : offset + size]))
            offset += size
    except DecodeError:
        return []
    return found


def ip_groups(addrs: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The public /24 (IPv4) and /48 (IPv6) prefixes a peer announces.

    Loopback, private and link-local addresses form no group: a test
    network of 30 nodes on 127.0.0.1, or a LAN behind one NAT, must not
    be throttled by a rule meant for hosts on the open internet."""
    groups: list[bytes] = []
    for addr in addrs:
        for code, raw in _ip_values(addr):
            if code == 4 and len(raw) == 4:
                ip4 = ipaddress.IPv4Address(raw)
                if ip4.is_global:
                    group = b"4" + raw[:3]
                    if group not in groups:
                        groups.append(group)
            elif code == 41 and len(raw) == 16:
                ip6 = ipaddress.IPv6Address(raw)
                if ip6.is_global:
                    group = b"6" + raw[:6]
                    if group not in groups:
                        groups.append(group)
    return tuple(groups)
