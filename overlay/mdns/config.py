"""Configuration of mDNS discovery, and which interfaces it may use (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr
from overlay.mdns.table import TableConfig
from overlay.multiaddrs import parse_quic_multiaddr

__all__ = ["MdnsConfig", "mdns_addresses"]


@dataclass(frozen=True, slots=True)
class MdnsConfig:
    resolve_timeout: float = 3.0
    """Seconds to wait for a discovered instance's TXT record."""
    dial_timeout: float = 10.0
    """Seconds one dial of a discovered peer may take (all its addresses)."""
    address_check_interval: float = 10.0
    """Seconds between looks at our listen addresses; a change re-announces."""
    max_pending: int = 64
    """Instance names waiting to be resolved; more are dropped (a flood of
    announcements costs a bounded queue, not memory)."""
    shutdown_timeout: float = 3.0
    """Seconds to send goodbyes and close at shutdown."""
    table: TableConfig = field(default_factory=TableConfig)

    def __post_init__(self) -> None:
        for name in ("resolve_timeout", "dial_timeout", "address_check_interval",
                     "shutdown_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")


def mdns_addresses(listen: Iterable[Multiaddr | str]) -> list[str]:
    """The IPs mDNS runs on for these listen addresses: each listening IP
    that is not loopback, unspecified or IPv6 link-local (zeroconf cannot
    name those by address).  Empty means no mDNS at all: a node listening
    on 127.0.0.1 only multicasts nothing."""
    out: list[str] = []
    for addr in listen:
        try:
            parsed = parse_quic_multiaddr(addr)
        except InvalidMultiaddr:
            continue
        if parsed.is_dns:
            continue
        ip = ipaddress.ip_address(parsed.host)
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast or (
                ip.version == 6 and ip.is_link_local):
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return out
