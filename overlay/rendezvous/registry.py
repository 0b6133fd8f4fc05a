"""The rendezvous point's state (pure): registrations by namespace with
wall-clock expiry, limits by peer, namespace, source prefix and in total,
and discovery pages continued by opaque cookies.

Nothing here reads a clock or does I/O: every entry point takes ``now``
(wall-clock seconds) and answers with the response message to send.  The
cookie secret is injected, so tests are deterministic and a restarted
server refuses the cookies of its previous life (``E_INVALID_COOKIE``).

A cookie is a cursor into one global registration sequence, bound to its
namespace and authenticated with an HMAC under the server's secret:
clients can neither forge a position nor replay a cookie in another
namespace.  Re-registering (a refresh) moves a registration to the end of
the sequence, so a client polling with its cookie sees refreshes as news.
"""

from __future__ import annotations

import heapq
import hmac
import ipaddress
import math
import struct
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

from overlay.errors import DecodeError, InvalidSignature
from overlay.identity import PeerId, open_peer_record
from overlay.rendezvous.errors import InvalidNamespace
from overlay.rendezvous.messages import (
    DEFAULT_TTL,
    MAX_RESPONSE_SIZE,
    MAX_TTL,
    Discover,
    DiscoverResponse,
    Register,
    RegisterResponse,
    Status,
    check_namespace,
)

__all__ = ["RegistryConfig", "Registration", "Registry", "source_prefix", "COOKIE_SIZE"]

_COOKIE_VERSION: Final = 1
_MAC_SIZE: Final = 16
COOKIE_SIZE: Final = 1 + 8 + _MAC_SIZE
# Protobuf overhead of one registration inside a DISCOVER_RESPONSE (tags,
# lengths, the ttl varint): counted so a page never outgrows the limit.
_ENTRY_OVERHEAD: Final = 32


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The rendezvous point's policy; defaults follow the spec's
    recommendations where it has one."""

    default_ttl: int = DEFAULT_TTL
    """Seconds granted to a REGISTER that names no TTL (spec: 2 h)."""
    min_ttl: int = DEFAULT_TTL
    """Shorter TTLs are refused with E_INVALID_TTL (spec: 2 h)."""
    max_ttl: int = MAX_TTL
    """Longer TTLs are refused with E_INVALID_TTL (spec: 72 h)."""
    max_per_peer: int = 1000
    """Namespaces one peer may be registered in (spec: 1000)."""
    max_per_namespace: int = 10_000
    """Peers in one namespace."""
    max_per_prefix: int = 2_000
    """Registrations made from one source prefix (IPv4 /24, IPv6 /48):
    peer IDs cost nothing to make, addresses do."""
    max_total: int = 20_000
    """All registrations: with ``max_record_bytes`` this bounds memory."""
    max_record_bytes: int = 4096
    """Largest signed peer record stored."""
    max_discover_limit: int = 1000
    """Registrations per DISCOVER_RESPONSE (spec: 1000); also the default."""
    page_bytes: int = MAX_RESPONSE_SIZE - 4096
    """Bytes of registrations per page, under the client's response limit."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_ttl <= self.default_ttl <= self.max_ttl:
            raise ValueError("need 1 <= min_ttl <= default_ttl <= max_ttl")
        for name in ("max_per_peer", "max_per_namespace", "max_per_prefix", "max_total",
                     "max_discover_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_record_bytes < 64:
            raise ValueError("max_record_bytes must be at least 64")
        if self.page_bytes < self.max_record_bytes + 1024:
            raise ValueError("page_bytes must hold at least one registration")


@dataclass(frozen=True, slots=True)
class Registration:
    ns: str
    peer: PeerId
    signed_peer_record: bytes
    addrs: tuple[bytes, ...]
    expires: float
    """Wall-clock seconds."""
    seq: int
    """Position in the registry's sequence (cookies point into it)."""
    prefix: str


def source_prefix(ip: str | None) -> str:
    """The address block limits are counted in: IPv4 /24, IPv6 /48 (an
    IPv4-mapped IPv6 address counts as IPv4)."""
    if ip is None:
        return "unknown"
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


class _Order:
    """Registrations in sequence order with lazy deletion: ``after(cursor)``
    costs a bisection plus the entries returned, not the whole list."""

    __slots__ = ("_seqs", "_live")

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._live: dict[int, Registration] = {}

    def __len__(self) -> int:
        return len(self._live)

    def add(self, reg: Registration) -> None:
        self._seqs.append(reg.seq)  # sequence numbers only grow: stays sorted
        self._live[reg.seq] = reg

    def remove(self, seq: int) -> None:
        self._live.pop(seq, None)
        if len(self._seqs) > 2 * len(self._live) + 64:
            self._seqs = [s for s in self._seqs if s in self._live]

    def after(self, cursor: int) -> Iterator[Registration]:
        i = bisect_right(self._seqs, cursor)
        while i < len(self._seqs):
            reg = self._live.get(self._seqs[i])
            if reg is not None:
                yield reg
            i += 1


def _refuse(status: Status, text: str) -> RegisterResponse:
    return RegisterResponse(status, text, 0)


class Registry:
    """Registrations of one rendezvous point."""

    def __init__(self, config: RegistryConfig | None = None, *, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the cookie secret needs at least 16 bytes")
        self.config = config or RegistryConfig()
        self._secret = secret
        self._regs: dict[tuple[str, PeerId], Registration] = {}
        self._by_ns: dict[str, _Order] = {}
        self._all = _Order()
        self._per_peer: Counter[PeerId] = Counter()
        self._per_prefix: Counter[str] = Counter()
        self._expiry: list[tuple[float, int, str, PeerId]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._regs)

    def namespaces(self) -> dict[str, int]:
        """Registrations per namespace (for status output)."""
        return {ns: len(order) for ns, order in self._by_ns.items()}

    def get(self, ns: str, peer: PeerId) -> Registration | None:
        return self._regs.get((ns, peer))

    # -- time ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the earliest registration expires (wall clock), or None."""
        return self._expiry[0][0] if self._expiry else None

    def expire(self, now: float) -> int:
        """Drop registrations whose TTL ended at or before ``now``."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, ns, peer = heapq.heappop(self._expiry)
            current = self._regs.get((ns, peer))
            if current is not None and current.seq == seq:
                self._remove(current)
                dropped += 1
        return dropped

    # -- requests -------------------------------------------------------------

    def register(self, peer: PeerId, source_ip: str | None, request: Register,
                 now: float) -> RegisterResponse:
        """REGISTER from ``peer`` (the stream's authenticated remote) whose
        connection comes from ``source_ip``."""
        cfg = self.config
        self.expire(now)
        try:
            ns = check_namespace(request.ns)
        except InvalidNamespace as exc:
            return _refuse(Status.E_INVALID_NAMESPACE, str(exc))
        ttl = request.ttl if request.ttl else cfg.default_ttl
        if not cfg.min_ttl <= ttl <= cfg.max_ttl:
            return _refuse(Status.E_INVALID_TTL,
                           f"ttl {ttl} s is outside {cfg.min_ttl}..{cfg.max_ttl} s")
        envelope = request.signed_peer_record
        if len(envelope) > cfg.max_record_bytes:
            return _refuse(Status.E_INVALID_SIGNED_PEER_RECORD,
                           f"signed peer record over {cfg.max_record_bytes} bytes")
        try:
            record = open_peer_record(envelope, cfg.max_record_bytes)
        except (DecodeError, InvalidSignature) as exc:
            return _refuse(Status.E_INVALID_SIGNED_PEER_RECORD, str(exc))
        if record.peer_id != peer:
            return _refuse(Status.E_NOT_AUTHORIZED,
                           "the signed peer record is not the registering peer's")
        if not record.addrs:
            return _refuse(Status.E_INVALID_SIGNED_PEER_RECORD,
                           "the signed peer record holds no address")
        prefix = source_prefix(source_ip)
        existing = self._regs.get((ns, peer))
        if existing is None:
            full = self._full(ns, peer, prefix)
            if full:
                return _refuse(Status.E_UNAVAILABLE, full)
        else:
            self._remove(existing)  # a refresh: the new TTL supersedes
        self._seq += 1
        reg = Registration(ns, peer, envelope, record.addrs, now + ttl, self._seq, prefix)
        self._regs[(ns, peer)] = reg
        self._by_ns.setdefault(ns, _Order()).add(reg)
        self._all.add(reg)
        self._per_peer[peer] += 1
        self._per_prefix[prefix] += 1
        heapq.heappush(self._expiry, (reg.expires, reg.seq, ns, peer))
        if len(self._expiry) > 2 * len(self._regs) + 64:
            # Refreshes leave stale heap entries behind; rebuild from the live set.
            self._expiry = [(r.expires, r.seq, r.ns, r.peer) for r in self._regs.values()]
            heapq.heapify(self._expiry)
        return RegisterResponse(Status.OK, "", ttl)

    def _full(self, ns: str, peer: PeerId, prefix: str) -> str:
        cfg = self.config
        if len(self._regs) >= cfg.max_total:
            return "the rendezvous point is full"
        if self._per_peer[peer] >= cfg.max_per_peer:
            return f"a peer may register in at most {cfg.max_per_peer} namespaces"
        order = self._by_ns.get(ns)
        if order is not None and len(order) >= cfg.max_per_namespace:
            return f"namespace {ns!r} is full ({cfg.max_per_namespace} peers)"
        if self._per_prefix[prefix] >= cfg.max_per_prefix:
            return f"too many registrations from {prefix}"
        return ""

    def unregister(self, peer: PeerId, ns: str, now: float) -> bool:
        """UNREGISTER: True if ``peer`` was registered in ``ns``.  The spec
        gives it no response, so a bad namespace is simply nothing to do."""
        self.expire(now)
        reg = self._regs.get((ns, peer))
        if reg is None:
            return False
        self._remove(reg)
        return True

    def _remove(self, reg: Registration) -> None:
        del self._regs[(reg.ns, reg.peer)]
        order = self._by_ns[reg.ns]
        order.remove(reg.seq)
        if not order:
            del self._by_ns[reg.ns]
        self._all.remove(reg.seq)
        self._per_peer[reg.peer] -= 1
        if self._per_peer[reg.peer] <= 0:
            del self._per_peer[reg.peer]
        self._per_prefix[reg.prefix] -= 1
        if self._per_prefix[reg.prefix] <= 0:
            del self._per_prefix[reg.prefix]

    def discover(self, request: Discover, now: float) -> DiscoverResponse:
        """DISCOVER: registrations of ``request.ns`` (all if empty) after
        the cookie's position, at most ``limit`` and one page of bytes."""
        cfg = self.config
        self.expire(now)
        try:
            ns = check_namespace(request.ns, allow_empty=True)
        except InvalidNamespace as exc:
            return DiscoverResponse(status=Status.E_INVALID_NAMESPACE, status_text=str(exc))
        cursor = 0
        if request.cookie:
            parsed = self._open_cookie(request.cookie, ns)
            if parsed is None:
                return DiscoverResponse(
                    status=Status.E_INVALID_COOKIE,
                    status_text="unknown cookie (another namespace or a restarted server)")
            cursor = parsed
        limit = min(request.limit or cfg.max_discover_limit, cfg.max_discover_limit)
        order = self._all if not ns else self._by_ns.get(ns)
        found: list[Register] = []
        budget = cfg.page_bytes
        exhausted = True
        for reg in order.after(cursor) if order is not None else iter(()):
            size = len(reg.signed_peer_record) + len(reg.ns.encode("utf-8")) + _ENTRY_OVERHEAD
            if len(found) >= limit or size > budget:
                exhausted = False
                break
            budget -= size
            found.append(Register(reg.ns, reg.signed_peer_record,
                                  max(1, math.ceil(reg.expires - now))))
            cursor = reg.seq
        if exhausted:
            # Everything up to now has been seen: later registrations only
            # can come after this point.
            cursor = max(cursor, self._seq)
        return DiscoverResponse(tuple(found), self._cookie(ns, cursor), Status.OK, "")

    # -- cookies -----------------------------------------------------------------

    def _mac(self, ns: str, body: bytes) -> bytes:
        message = b"overlay-rendezvous-cookie\x00" + body + ns.encode("utf-8")
        return hmac.new(self._secret, message, sha256).digest()[:_MAC_SIZE]

    def _cookie(self, ns: str, cursor: int) -> bytes:
        body = struct.pack(">BQ", _COOKIE_VERSION, cursor)
        return body + self._mac(ns, body)

    def _open_cookie(self, cookie: bytes, ns: str) -> int | None:
        if len(cookie) != COOKIE_SIZE or cookie[0] != _COOKIE_VERSION:
            return None
        body, mac = cookie[:9], cookie[9:]
        if not hmac.compare_digest(mac, self._mac(ns, body)):
            return None
        cursor: int = struct.unpack(">Q", body[1:])[0]
        return cursor
