"""Builders of small IP packets for the virtual-IP tests."""

from __future__ import annotations

import ipaddress
import struct


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def udp4(src: str, dst: str, payload: bytes = b"hello", *, sport: int = 1234,
         dport: int = 5678) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def tcp4(src: str, dst: str, payload: bytes = b"") -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + payload
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, s, d)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + tcp


def udp6(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", 1234, 5678, length, 0) + payload
    pseudo = s + d + struct.pack("!I3xB", length, 17)
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, length, 17, 64) + s + d + udp


def valid_v4_checksums(packet: bytes) -> bool:
    """Header checksum and TCP/UDP checksum of an IPv4 packet verify."""
    ihl = (packet[0] & 0x0F) * 4
    if checksum(packet[:ihl]) != 0:
        return False
    proto = packet[9]
    l4 = packet[ihl:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, proto, len(l4))
    return checksum(pseudo + l4) == 0
