"""UPnP IGD port mapping, the pure part: whether to try at all, and the
lease schedule (map, renew at half the lease, back off after a failure).

No I/O and no clock: the driver (``overlay.nat.upnp``) reads the routing
table and passes ``now``.  docs/nat.md, "UPnP", says why the rule is what
it is: SSDP multicast and the IGD's SOAP calls leave the host, so a node
listening only on loopback (every test, ``overlay demo``) never sends any.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["UpnpConfig", "UpnpDecision", "decide", "could_run", "is_lan_ipv4", "LeaseSchedule",
           "Mapping", "parse_proc_route"]


@dataclass(frozen=True, slots=True)
class UpnpConfig:
    """How the daemon maps its QUIC port on the home router."""

    lease: float = 3600.0
    """Lease asked of the IGD, seconds; renewed at half of it."""
    discovery_timeout: float = 3.0
    """How long one SSDP search waits for an IGD to answer."""
    call_timeout: float = 5.0
    """Bound on one SOAP call (description, AddPortMapping, ...)."""
    retry_min: float = 30.0
    """First wait after a failed discovery or mapping; doubles up to ``retry_max``."""
    retry_max: float = 1800.0
    """Longest wait between failed attempts, seconds."""
    description: str = "overlay"
    """``NewPortMappingDescription``: what the router's UI shows for the mapping."""

    def __post_init__(self) -> None:
        if self.lease < 120:
            raise ValueError("lease must be at least 120 s")
        if self.discovery_timeout <= 0 or self.call_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 < self.retry_min <= self.retry_max:
            raise ValueError("need 0 < retry_min <= retry_max")


@dataclass(frozen=True, slots=True)
class UpnpDecision:
    """Whether UPnP runs, from which LAN address, and why (for logs and status)."""

    run: bool
    lan_ip: str | None
    reason: str


RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                    "192.168.0.0/16"))
"""Home LANs.  Not ``is_private``: Python counts TEST-NET and other reserved
ranges in it, and a gateway there is no home router."""


def is_lan_ipv4(text: str) -> bool:
    """Whether ``text`` is an RFC 1918 IPv4 address."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return any(addr in net for net in RFC1918)


def _usable(ips: Iterable[str]) -> list[str]:
    return [ip for ip in ips if ":" not in ip and not ipaddress.IPv4Address(ip).is_loopback]


def could_run(listen_ips: Iterable[str]) -> bool:
    """Whether the listen addresses allow UPnP at all; without one the
    driver does not even read the routing table."""
    return bool(_usable(listen_ips))


def decide(listen_ips: Iterable[str], gateway: str | None) -> UpnpDecision:
    """The rule: a non-loopback IPv4 listen address (or the wildcard) and a
    default gateway in private address space, as behind a home router.
    ``gateway`` is the default route's next hop, None without one."""
    usable = _usable(listen_ips)
    if not usable:
        return UpnpDecision(False, None, "listening on loopback or IPv6 only")
    if gateway is None:
        return UpnpDecision(False, None, "no default gateway")
    if not is_lan_ipv4(gateway):
        return UpnpDecision(False, None, f"default gateway {gateway} is not on a private LAN")
    gw_net = ipaddress.IPv4Network(f"{gateway}/24", strict=False)
    # Prefer the listen address on the gateway's /24; 0.0.0.0 lets the
    # kernel pick the source (the driver binds the search to it then).
    same = [ip for ip in usable if ipaddress.IPv4Address(ip) in gw_net]
    lan_ip = same[0] if same else usable[0]
    return UpnpDecision(True, lan_ip, f"default gateway {gateway} on a private LAN")


def parse_proc_route(text: str) -> str | None:
    """The default route's gateway from ``/proc/net/route`` contents."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[1] != "00000000":
            continue
        flags = int(fields[3], 16)
        if not flags & 0x2:  # RTF_GATEWAY
            continue
        raw = bytes.fromhex(fields[2])[::-1]  # little-endian in the file
        return str(ipaddress.IPv4Address(raw))
    return None


@dataclass(frozen=True, slots=True)
class Mapping:
    """A port mapping the IGD granted."""

    external_ip: str
    external_port: int
    internal_ip: str
    internal_port: int
    lease: float
    granted_at: float

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.external_ip}/udp/{self.external_port}/quic-v1"


class LeaseSchedule:
    """When to (re)map: now at start, at half the lease once mapped, after a
    doubling back-off once failed.  The driver calls ``due(now)`` and
    reports each attempt with ``on_mapped`` or ``on_failed``."""

    def __init__(self, config: UpnpConfig, now: float) -> None:
        self.config = config
        self.mapping: Mapping | None = None
        self.failures = 0
        self.last_error: str | None = None
        self._next = now

    def next_deadline(self) -> float:
        return self._next

    def due(self, now: float) -> bool:
        return now >= self._next

    def on_mapped(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.failures = 0
        self.last_error = None
        self._next = mapping.granted_at + mapping.lease / 2

    def on_failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.last_error = error
        wait = min(self.config.retry_max, self.config.retry_min * 2 ** (self.failures - 1))
        # A mapping still inside its lease stays usable until it expires.
        if self.mapping is not None and now >= self.mapping.granted_at + self.mapping.lease:
            self.mapping = None
        self._next = now + wait

    def current(self, now: float) -> Mapping | None:
        """The mapping if its lease still runs at ``now``."""
        m = self.mapping
        if m is None or now >= m.granted_at + m.lease:
            return None
        return m
