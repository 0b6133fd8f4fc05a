"""Pure decisions of an exit node (docs/apps.md, "Exits"): its
configuration (the ``[exit]`` table), which destination addresses it may
connect to, and per-client accounting (connections, bytes, rate).

The never-private rule protects the exit's own network: a client must not
reach the exit's LAN, its loopback services or anything else that is not
on the public internet.  Every resolved address is checked (not the name)
and the exit connects to a checked address, so a name cannot be rebound
to a private address between the check and the connection.

``unsafe_lab_destinations`` exempts listed networks from that rule; it
exists for tests and network-namespace labs, whose "clear web" server
can only live on loopback or a private address.  Never set it on a real
exit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overlay.apps.config import MAX_ALLOW, check_allow_entry

__all__ = [
    "ANYONE",
    "DEFAULT_PORTS",
    "ClientBook",
    "ExitConfig",
    "IPAddress",
    "IPNetwork",
    "TokenBucket",
    "destination_refusal",
    "parse_exit_table",
    "parse_ports",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = (80, 443)
ANYONE = "*"
_MAX_PORTS = 64
_MAX_LAB = 16
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class ExitConfig:
    enabled: bool = False
    """Serve ``/ovl/exit/1.0.0`` and announce this node as an exit."""
    ports: tuple[int, ...] = DEFAULT_PORTS
    """Destination ports clients may reach."""
    allow: tuple[str, ...] = ()
    """Client peer IDs or names; empty: nobody; ``"*"``: anyone."""
    max_connections: int = 16
    """Open connections per client."""
    max_bytes: int = 0
    """Bytes (both ways) per client while the exit runs; 0: no limit."""
    rate: int = 0
    """Bytes per second per client (both ways, a token bucket with one
    second of burst); 0: no limit."""
    max_total: int = 256
    """Open connections of all clients together."""
    unsafe_lab_destinations: tuple[str, ...] = ()
    """TESTS AND LABS ONLY: networks (CIDR) exempted from the rule that an
    exit never connects to loopback, private or other non-global addresses."""
    lab_networks: tuple[IPNetwork, ...] = field(default=(), compare=False)
    """``unsafe_lab_destinations`` parsed."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("`exit.enabled` must be true or false")
        parse_ports(self.ports)
        if len(self.allow) > MAX_ALLOW:
            raise ValueError(f"`exit.allow` has at most {MAX_ALLOW} entries")
        for name in ("max_connections", "max_bytes", "rate", "max_total"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`exit.{name}` must be a whole number >= 0")
        if self.max_connections < 1 or self.max_total < 1:
            raise ValueError("`exit.max_connections` and `exit.max_total` must be >= 1")
        if len(self.unsafe_lab_destinations) > _MAX_LAB:
            raise ValueError(f"`exit.unsafe_lab_destinations` has at most {_MAX_LAB} entries")
        nets: list[IPNetwork] = []
        for text in self.unsafe_lab_destinations:
            try:
                nets.append(ipaddress.ip_network(text))
            except (ValueError, TypeError):
                raise ValueError(f"`exit.unsafe_lab_destinations`: {text!r} is not a "
                                 "network such as 127.0.0.1/32") from None
        object.__setattr__(self, "lab_networks", tuple(nets))

    @property
    def open_to_anyone(self) -> bool:
        return ANYONE in self.allow


def parse_ports(ports: Iterable[Any]) -> tuple[int, ...]:
    out: list[int] = []
    for port in ports:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"exit port {port!r} is not 1 to 65535")
        out.append(port)
    if not out or len(out) > _MAX_PORTS:
        raise ValueError(f"an exit allows 1 to {_MAX_PORTS} ports")
    return tuple(sorted(set(out)))


_KEYS = ("enabled", "ports", "allow", "max_connections", "max_bytes", "rate", "max_total",
         "unsafe_lab_destinations")


def parse_exit_table(table: Mapping[str, Any]) -> ExitConfig:
    """The ``[exit]`` table; ``ValueError`` naming the key."""
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise ValueError(f"`exit`: unknown key `{sorted(unknown)[0]}` "
                         f"(known: {', '.join(_KEYS)})")
    kwargs: dict[str, Any] = {}
    for key in ("ports", "allow", "unsafe_lab_destinations"):
        if key in table:
            value = table[key]
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ValueError(f"`exit.{key}` must be a list")
            kwargs[key] = tuple(value)
    if "ports" in kwargs:
        kwargs["ports"] = parse_ports(kwargs["ports"])
    if "allow" in kwargs:
        kwargs["allow"] = tuple(e if e == ANYONE else check_allow_entry(e)
                                for e in kwargs["allow"])
    for key in ("enabled", "max_connections", "max_bytes", "rate", "max_total"):
        if key in table:
            kwargs[key] = table[key]
    return ExitConfig(**kwargs)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def destination_refusal(address: IPAddress, lab: Sequence[IPNetwork] = ()) -> str | None:
    """Why the exit must not connect to ``address`` (None: it may).

    Only globally routable unicast addresses pass: loopback, private
    (RFC 1918, ULA), shared (CGNAT), link-local, multicast, unspecified,
    reserved and documentation ranges are refused, and so are IPv6
    addresses embedding such an IPv4 one (mapped, NAT64, 6to4, Teredo).
    ``lab`` networks are exempt, except unspecified and multicast."""
    if address.is_unspecified:
        return "unspecified address"
    if address.is_multicast:
        return "multicast address"
    if any(address in net for net in lab):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_v4(address)
        if inner is not None:
            why = destination_refusal(inner, lab)
            if why is not None:
                return f"{why} inside an IPv6 address"
            if address.ipv4_mapped is not None or address in _NAT64:
                return None  # the IPv4 address is the destination
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_private:
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return "non-global address"
    return None


class TokenBucket:
    """Bytes per second with one second of burst; ``take`` returns how long
    to wait before the bytes may go (the caller waits, then they count)."""

    __slots__ = ("rate", "_tokens", "_at")

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = now

    def take(self, amount: int, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass(slots=True)
class _Client:
    connections: int = 0
    total_connections: int = 0
    bytes: int = 0
    bucket: TokenBucket | None = None


class ClientBook:
    """Per-client accounting.  ``admit`` answers which limit refuses a new
    connection (None: admitted, and counted until ``release``)."""

    def __init__(self, config: ExitConfig) -> None:
        self.config = config
        self.clients: dict[str, _Client] = {}
        self.open = 0

    def admit(self, client: str, now: float) -> str | None:
        entry = self.clients.get(client)
        if entry is None:
            entry = self.clients[client] = _Client(
                bucket=TokenBucket(self.config.rate, now) if self.config.rate else None)
        if self.open >= self.config.max_total:
            return "exit.connections_total"
        if entry.connections >= self.config.max_connections:
            return "exit.connections_per_client"
        if self.config.max_bytes and entry.bytes >= self.config.max_bytes:
            return "exit.bytes_per_client"
        entry.connections += 1
        entry.total_connections += 1
        self.open += 1
        return None

    def release(self, client: str) -> None:
        entry = self.clients[client]
        entry.connections -= 1
        self.open -= 1

    def charge(self, client: str, amount: int, now: float) -> float | None:
        """Count ``amount`` bytes; None when the byte limit is now exceeded
        (the connection must end), else the seconds to wait (rate)."""
        entry = self.clients[client]
        entry.bytes += amount
        if self.config.max_bytes and entry.bytes > self.config.max_bytes:
            return None
        return entry.bucket.take(amount, now) if entry.bucket is not None else 0.0

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {peer: {"open": c.connections, "connections": c.total_connections,
                       "bytes": c.bytes} for peer, c in sorted(self.clients.items())}
