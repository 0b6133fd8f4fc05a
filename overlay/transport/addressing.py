"""Peer socket addresses as the connection reports them."""

from __future__ import annotations

import ipaddress

from aioquic.quic.connection import NetworkAddress
from multiaddr import Multiaddr

__all__ = ["peer_ip", "quic_multiaddr", "short_address"]


def short_address(addr: NetworkAddress) -> tuple[str, int]:
    return (str(addr[0]), int(addr[1]))


def peer_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP in ``host``; dual-stack sockets report IPv4 peers as
    IPv4-mapped IPv6, which is taken as the IPv4 it is."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def quic_multiaddr(host: str, port: int) -> Multiaddr:
    """``/ip4|ip6/<host>/udp/<port>/quic-v1``."""
    ip = peer_ip(host)
    if ip is None:
        return Multiaddr(f"/ip4/0.0.0.0/udp/{port}/quic-v1")  # no peer address yet
    proto = "ip4" if ip.version == 4 else "ip6"
    return Multiaddr(f"/{proto}/{ip}/udp/{port}/quic-v1")
