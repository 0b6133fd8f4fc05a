"""Socket addresses as QUIC multiaddrs, and the local interface addresses."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

from multiaddr import Multiaddr

__all__ = [
    "socket_to_multiaddr",
    "observed_to_quic",
    "is_ipv6",
    "is_loopback",
    "interface_addresses",
    "expand_unspecified",
]

_SIOCGIFADDR = 0x8915


def _normalize(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # dual-stack sockets report IPv4 peers this way
    return ip


def socket_to_multiaddr(host: str, port: int) -> Multiaddr:
    """``/ip4|ip6/<host>/udp/<port>/quic-v1`` for an IP socket address."""
    ip = _normalize(host)
    proto = "ip4" if ip.version == 4 else "ip6"
    return Multiaddr(f"/{proto}/{ip}/udp/{port}/quic-v1")


def observed_to_quic(addr: Multiaddr) -> Multiaddr | None:
    """The QUIC address a peer observed us at, or None if it names no IP and port.

    Identify runs over our QUIC connection, so only the IP and port of the
    observation mean anything; py-libp2p labels them ``/tcp`` regardless.
    """
    parts = str(addr).split("/")
    if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or parts[3] not in ("udp", "tcp"):
        return None
    try:
        port = int(parts[4])
        if not 0 < port < 65536:
            return None
        return socket_to_multiaddr(parts[2], port)
    except ValueError:
        return None


def is_ipv6(host: str) -> bool:
    return _normalize(host).version == 6


def is_loopback(host: str) -> bool:
    return _normalize(host).is_loopback


def interface_addresses(version: int) -> list[str]:
    """Addresses of the local interfaces (Linux); loopback if unknown."""
    found: list[str] = []
    try:
        if version == 4:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _, name in socket.if_nameindex():
                    request = struct.pack("256s", name.encode()[:15])
                    try:
                        reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                    except OSError:
                        continue  # interface without an IPv4 address
                    found.append(socket.inet_ntoa(reply[20:24]))
        else:
            for line in Path("/proc/net/if_inet6").read_text().splitlines():
                fields = line.split()
                if len(fields) < 6 or fields[3] == "20":  # 0x20: link-local scope
                    continue
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    except OSError:
        pass
    loopback = "127.0.0.1" if version == 4 else "::1"
    ordered = [loopback] + sorted(a for a in set(found) if a != loopback)
    return ordered


def expand_unspecified(host: str, port: int) -> list[Multiaddr]:
    """The dialable multiaddrs of a socket bound to ``host`` (0.0.0.0 / :: expand)."""
    ip = _normalize(host)
    if not ip.is_unspecified:
        return [socket_to_multiaddr(host, port)]
    return [socket_to_multiaddr(addr, port) for addr in interface_addresses(ip.version)]
