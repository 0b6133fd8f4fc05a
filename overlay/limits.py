"""Limits by source, shared by every server a remote can load (pure).

Peer IDs cost nothing to make, so a cap counted only globally or only per
peer lets one host use it up for everyone (STYLE rule 17).  As go-libp2p's
resource manager does with its scopes, a resource here is counted in
several scopes at once — the system, the source's IP prefix, the peer, the
protocol — and is granted only when every scope has room.

- ``source_key(ip)``: the scope of an address — its /24 (IPv4) or /48
  (IPv6), except that every loopback address is a source of its own
  (tests and local attackers bind distinct 127.x.y.z addresses).
- ``ScopedCounter``: concurrent resources (streams, connections) per key
  with a limit; ``acquire``/``release``; keys at zero are forgotten, so
  memory is bounded by what is held.
- ``RateLimiter``: token buckets per key, taking ``now``; an LRU bounds
  the number of sources remembered (a forgotten source starts full, which
  is at worst one extra burst).
- ``LimitHits``: hit counters by cause, and ``should_log(cause, now)``
  that says yes at most once a minute per cause (with the number of hits
  the log line summarises).

Nothing here reads a clock or does I/O; callers pass ``now``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = [
    "LOG_INTERVAL",
    "source_key",
    "ScopedCounter",
    "TokenBucket",
    "RateLimiter",
    "LimitHits",
]

LOG_INTERVAL = 60.0
"""Seconds between two log lines about the same cause."""


def source_key(ip: str) -> str:
    """The source scope of ``ip``: ``"v4:a.b.c.0/24"``, ``"v6:…/48"``, or the
    address itself for loopback (each loopback address is its own source).
    Anything that is not an IP (a Unix socket, a relay path) is its own key."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"other:{ip}"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return f"lo:{addr}"
    if isinstance(addr, ipaddress.IPv4Address):
        net4 = ipaddress.IPv4Network((int(addr) & 0xFFFFFF00, 24))
        return f"v4:{net4}"
    net6 = ipaddress.IPv6Network((int(addr) >> 80 << 80, 48))
    return f"v6:{net6}"


class ScopedCounter:
    """Concurrent holdings per key, each key limited to ``limit``."""

    __slots__ = ("limit", "_held")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._held: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def held(self, key: Hashable) -> int:
        return self._held.get(key, 0)

    def has_room(self, key: Hashable) -> bool:
        return self._held.get(key, 0) < self.limit

    def acquire(self, key: Hashable) -> bool:
        count = self._held.get(key, 0)
        if count >= self.limit:
            return False
        self._held[key] = count + 1
        return True

    def release(self, key: Hashable) -> None:
        count = self._held.get(key, 0) - 1
        if count > 0:
            self._held[key] = count
        else:
            self._held.pop(key, None)


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class RateLimiter:
    """Token buckets per key (a source scope, a peer), ``max_keys`` at most."""

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)


class LimitHits:
    """How often each limit was hit, by cause (``"kad.streams_per_peer"``)."""

    __slots__ = ("counts", "interval", "_last_log", "_unlogged")

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.counts: dict[str, int] = {}
        self.interval = interval
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def hit(self, cause: str, now: float) -> int:
        """Count one hit of ``cause``; returns how many hits a log line
        should report now (0: stay quiet, a line went out less than
        ``interval`` ago)."""
        self.counts[cause] = self.counts.get(cause, 0) + 1
        pending = self._unlogged.get(cause, 0) + 1
        last = self._last_log.get(cause)
        if last is not None and now - last < self.interval:
            self._unlogged[cause] = pending
            return 0
        self._last_log[cause] = now
        self._unlogged[cause] = 0
        return pending

    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
