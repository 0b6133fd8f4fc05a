"""The AutoNAT v2 server's decisions (pure): which address to dial back,
whether the requester must pay in dial data first, and who is over a limit.

What a server must not become is an amplifier: anyone can ask it to dial
any address.  So (after the spec) it dials at most one address per
request, the first it is willing to dial; an address whose IP is not the
requester's observed IP costs the requester 30-100 kB of data first (a
handshake costs the victim under 10 kB, so an attacker spends more than it
inflicts); private, loopback and other non-global addresses are refused
outside a lab; and requests are counted per peer, per IP prefix and in
total, since peer IDs cost nothing to make.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from overlay.errors import DecodeError, InvalidMultiaddr
from overlay.multiaddrs import QuicAddr, multiaddr_from_bytes, parse_quic_multiaddr
from overlay.nat.autonat_messages import MAX_ADDR_BYTES, DialRequest, ResponseStatus

__all__ = [
    "ServerConfig",
    "Reject",
    "DialBackPlan",
    "ServerDecision",
    "AutoNATServerCore",
    "ip_prefix",
    "is_dialable_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAX_TRACKED: Final = 4096
"""Peers or prefixes with a live rate-limit entry; a flood of fresh peer
IDs beyond this is refused rather than remembered."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    lab: bool = False
    """Dial private, loopback and documentation-range addresses too (labs,
    tests, namespaces).  Off on real networks: the spec says a server
    should not dial private addresses."""
    dial_data_min: int = 30_000
    """Fewest bytes asked of a requester whose target IP is not its own."""
    dial_data_max: int = 100_000
    ipv4: bool = True
    """This server can dial IPv4 (refuse IPv4 targets otherwise)."""
    ipv6: bool = True
    window: float = 60.0
    """Seconds over which requests are counted."""
    max_requests: int = 60
    """Requests served per window, all peers together."""
    max_requests_per_peer: int = 12
    max_requests_per_prefix: int = 24
    """Per /24 (IPv4) or /48 (IPv6) of the requester's observed IP."""
    max_dial_data_requests: int = 12
    """Requests per window that may ask for dial data (each means reading
    up to ``dial_data_max`` bytes)."""
    max_concurrent: int = 8
    """Requests being served at once."""
    max_concurrent_per_peer: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.dial_data_min <= self.dial_data_max:
            raise ValueError("need 0 < dial_data_min <= dial_data_max")
        if self.dial_data_max > 10_000_000:
            raise ValueError("dial_data_max above 10 MB is an amplifier of its own")
        if self.window <= 0:
            raise ValueError("window must be positive")
        for name in ("max_requests", "max_requests_per_peer", "max_requests_per_prefix",
                     "max_dial_data_requests", "max_concurrent", "max_concurrent_per_peer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer ``status`` without dialling (and without reading data)."""

    status: ResponseStatus
    reason: str


@dataclass(frozen=True, slots=True)
class DialBackPlan:
    """Dial ``target`` (the request's address ``addr_idx``) with the nonce;
    first ask for ``data_needed`` bytes if it is not zero."""

    addr_idx: int
    target: QuicAddr
    data_needed: int
    reason: str


ServerDecision = Reject | DialBackPlan


def ip_prefix(ip: str) -> str:
    """The prefix requests are counted by: /24 for IPv4, /48 for IPv6."""
    addr = ipaddress.ip_address(ip)
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def is_dialable_ip(ip: IPAddress, lab: bool) -> bool:
    """Global unicast; in a lab also private, loopback and documentation."""
    if ip.is_unspecified or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return False  # names an IPv4 host through the back door
    if lab:
        return not ip.is_link_local
    return ip.is_global


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class _Window:
    """Event times in the last ``window`` seconds."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def count(self, now: float, window: float) -> int:
        while self.times and self.times[0] <= now - window:
            self.times.popleft()
        return len(self.times)


class AutoNATServerCore:
    """Feed it each request with the requester and its observed IP; carry
    out what it returns; call ``finished`` when the request is over."""

    def __init__(self, config: ServerConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config or ServerConfig()
        self._rng = rng or random.Random()
        self._all = _Window()
        self._data = _Window()
        self._peers: dict[str, _Window] = {}
        self._prefixes: dict[str, _Window] = {}
        self._active: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        """Outcome counts for status: ``dialed``, ``rejected``, ``refused``."""

    @property
    def active(self) -> int:
        return sum(self._active.values())

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def _prune(self, table: dict[str, _Window], now: float) -> None:
        for key in [k for k, w in table.items() if w.count(now, self.config.window) == 0]:
            del table[key]

    def _over_limit(self, peer: str, prefix: str, now: float) -> str | None:
        cfg = self.config
        if self.active >= cfg.max_concurrent:
            return f"{cfg.max_concurrent} requests in progress"
        if self._active.get(peer, 0) >= cfg.max_concurrent_per_peer:
            return f"{cfg.max_concurrent_per_peer} requests from this peer in progress"
        if self._all.count(now, cfg.window) >= cfg.max_requests:
            return f"{cfg.max_requests} requests in the last {cfg.window:g} s"
        for table, key, limit, what in ((self._peers, peer, cfg.max_requests_per_peer, "peer"),
                                        (self._prefixes, prefix, cfg.max_requests_per_prefix,
                                         f"prefix {prefix}")):
            window = table.get(key)
            if window is not None and window.count(now, cfg.window) >= limit:
                return f"{limit} requests from this {what} in the last {cfg.window:g} s"
            if window is None and len(table) >= _MAX_TRACKED:
                self._prune(table, now)
                if len(table) >= _MAX_TRACKED:
                    return "too many requesters"
        return None

    def _choose(self, addrs: Sequence[bytes]) -> tuple[int, QuicAddr] | None:
        cfg = self.config
        for idx, raw in enumerate(addrs):
            try:
                addr = parse_quic_multiaddr(multiaddr_from_bytes(raw, MAX_ADDR_BYTES))
            except (DecodeError, InvalidMultiaddr):
                continue  # not an address we can dial; try the next one
            if addr.is_dns or addr.port == 0:
                continue  # resolving names for strangers is another amplifier
            ip = ipaddress.ip_address(addr.host)
            if (ip.version == 4 and not cfg.ipv4) or (ip.version == 6 and not cfg.ipv6):
                continue
            if not is_dialable_ip(ip, cfg.lab):
                continue
            return idx, addr
        return None

    def on_request(self, peer: str, observed_ip: str | None, request: DialRequest,
                   now: float) -> ServerDecision:
        """``observed_ip``: the requester's IP on the connection the request
        came over; None for a relayed connection, which we refuse (its
        source could be anyone)."""
        if observed_ip is None:
            self._count("rejected")
            return Reject(ResponseStatus.E_REQUEST_REJECTED,
                          "request over a relayed connection")
        prefix = ip_prefix(observed_ip)
        over = self._over_limit(peer, prefix, now)
        if over is not None:
            self._count("rejected")
            return Reject(ResponseStatus.E_REQUEST_REJECTED, over)
        chosen = self._choose(request.addrs)
        if chosen is None:
            self._count("refused")
            return Reject(ResponseStatus.E_DIAL_REFUSED, "no address we are willing to dial")
        idx, target = chosen
        needed = 0
        if not _same_ip(target.host, observed_ip):
            if self._data.count(now, self.config.window) >= self.config.max_dial_data_requests:
                self._count("rejected")
                return Reject(ResponseStatus.E_REQUEST_REJECTED,
                              "too many requests for third-party addresses")
            needed = self._rng.randint(self.config.dial_data_min, self.config.dial_data_max)
            self._data.times.append(now)
        self._all.times.append(now)
        self._peers.setdefault(peer, _Window()).times.append(now)
        self._prefixes.setdefault(prefix, _Window()).times.append(now)
        self._active[peer] = self._active.get(peer, 0) + 1
        self._count("dialed")
        why = "the requester's own IP" if needed == 0 else f"another IP: {needed} bytes first"
        return DialBackPlan(idx, target, needed, why)

    def finished(self, peer: str) -> None:
        """A ``DialBackPlan`` for ``peer`` is over (whatever its outcome)."""
        left = self._active.get(peer, 0) - 1
        if left > 0:
            self._active[peer] = left
        else:
            self._active.pop(peer, None)
