"""The Kademlia routing table: k-buckets with replacement caches, liveness
checks requested as actions, IP-prefix diversity limits and bucket refresh.

Nothing here performs I/O.  A full bucket records a pending check of its
least-recently-seen entry and returns ``PingNeeded``; the driver pings and
reports back through ``on_ping_result``.  ``on_timer(now)`` expires
unanswered checks and returns ``RefreshBucket`` actions.

Buckets are indexed by the bit length of the XOR distance minus one, so
bucket 255 is the far half of the key space.  The 256 buckets are created
on first use; this holds the same peers as the lazily split table of the
spec, because only buckets near the local key ever get split there too.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from overlay.identity import PeerId
from overlay.kad.keyspace import (
    KEY_BITS,
    Contact,
    bucket_index,
    peer_key,
    random_peer_id_in_bucket,
)

__all__ = [
    "RoutingConfig",
    "RoutingTable",
    "AddOutcome",
    "AddResult",
    "PingNeeded",
    "RefreshBucket",
    "BucketStats",
    "observed_groups",
    "runs_on_local",
]


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Routing-table parameters; defaults follow the kad-dht spec and go-libp2p."""

    k: int = 20
    """Bucket size (the replication parameter)."""
    replacement_cache_size: int = 20
    """Recently seen peers kept per full bucket to replace evicted entries."""
    max_per_group_per_bucket: int = 2
    """Entries one public /24 (IPv4) or /48 (IPv6) may hold in one bucket
    (go-libp2p's peer-diversity filter uses 2 per common-prefix length)."""
    max_per_group_per_table: int = 3
    """Entries one public /24 or /48 may hold in the whole table (go-libp2p's
    example filter uses 3).  Loopback and private addresses are exempt."""
    ping_timeout: float = 10.0
    """Seconds a liveness check may take before the entry counts as dead."""
    refresh_interval: float = 600.0
    """Seconds between refreshes of one bucket (10 min, as in the spec)."""
    max_refresh_cpl: int = 15
    """Deepest common-prefix length refreshed: a random ID for a deeper
    bucket costs 2**cpl SHA-256 tries (go-libp2p stops at 15 as well)."""
    failed_ttl: float = 300.0
    """Seconds a peer that failed stays "recently failed": it is neither
    re-admitted from a bulk load or the replacement cache nor worth asking
    when others name it, until it proves alive by itself."""
    max_failed: int = 1024
    """Recently failed peers remembered (the oldest are forgotten first)."""
    exempt_local: bool = True
    """Peers seen from loopback or private addresses are exempt from the
    IP-prefix limits when this node itself listens on such an address (a
    lab, a LAN).  False counts them too, each loopback address as a group
    of its own and private ones by /24 (attack tests on one machine)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")
        if self.replacement_cache_size < 0:
            raise ValueError("replacement_cache_size must not be negative")
        if self.max_per_group_per_bucket < 1 or self.max_per_group_per_table < 1:
            raise ValueError("IP-prefix limits must be at least 1")
        if self.ping_timeout <= 0 or self.refresh_interval <= 0:
            raise ValueError("ping_timeout and refresh_interval must be positive")
        if not 0 <= self.max_refresh_cpl <= 20:
            raise ValueError("max_refresh_cpl must be within 0..20")
        if self.failed_ttl < 0 or self.max_failed < 0:
            raise ValueError("failed_ttl and max_failed must not be negative")


def runs_on_local(listen_ips: Iterable[str]) -> bool:
    """True if any of our listen addresses is loopback, private or a
    wildcard (which covers the loopback and LAN interfaces)."""
    for text in listen_ips:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_loopback or ip.is_private or ip.is_link_local:
            return True
    return False


def observed_groups(ip: str | None, *, exempt_local: bool) -> tuple[bytes, ...]:
    """The diversity group of a peer's *observed* address (the connection's
    remote IP, never an address it claims): its public /24 or /48.
    Loopback and private addresses form no group when ``exempt_local``;
    otherwise each loopback address is its own group and private ones
    group by /24.  Relayed peers (no IP) form none."""
    if ip is None:
        return ()
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ()
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    local = addr.is_loopback or addr.is_private or addr.is_link_local
    if local and exempt_local:
        return ()
    if isinstance(addr, ipaddress.IPv4Address):
        if addr.is_loopback:
            return (b"L" + addr.packed,)
        return (b"4" + addr.packed[:3],)
    if addr.is_loopback:
        return (b"L" + addr.packed,)
    return (b"6" + addr.packed[:6],)


class AddOutcome(Enum):
    ADDED = "added"
    UPDATED = "updated"
    PENDING = "pending"  # bucket full; its oldest entry must be checked
    CACHED = "cached"  # bucket full and already checking; kept as a replacement
    REJECTED_DIVERSITY = "rejected-diversity"
    REJECTED_CLIENT = "rejected-client"
    REJECTED_SELF = "rejected-self"


@dataclass(frozen=True, slots=True)
class PingNeeded:
    """Check whether ``contact`` is alive and call ``on_ping_result``."""

    contact: Contact
    deadline: float


@dataclass(frozen=True, slots=True)
class RefreshBucket:
    """Run a FIND_NODE for ``target`` (a random ID in bucket ``index``)."""

    index: int
    target: PeerId
    key: int


@dataclass(frozen=True, slots=True)
class AddResult:
    outcome: AddOutcome
    ping: PingNeeded | None = None


@dataclass(frozen=True, slots=True)
class BucketStats:
    index: int
    common_prefix_length: int
    size: int
    replacements: int
    pending_check: bool


class _Bucket:
    __slots__ = ("entries", "replacements", "pending", "pending_deadline")

    def __init__(self) -> None:
        self.entries: list[Contact] = []  # least recently seen first
        self.replacements: list[Contact] = []  # most recently seen last
        self.pending: Contact | None = None
        self.pending_deadline = 0.0


class RoutingTable:
    def __init__(
        self, local_key: int, config: RoutingConfig, rng: random.Random, now: float
    ) -> None:
        self.local_key = local_key
        self.config = config
        self._rng = rng
        self._buckets: dict[int, _Bucket] = {}
        self._where: dict[PeerId, int] = {}
        self._group_counts: dict[bytes, int] = {}
        self._refreshed: dict[int, float] = {}
        self._created = now
        self._failed: OrderedDict[PeerId, float] = OrderedDict()  # peer → until

    # --- queries --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, peer: PeerId) -> bool:
        return peer in self._where

    def get(self, peer: PeerId) -> Contact | None:
        index = self._where.get(peer)
        if index is None:
            return None
        for contact in self._buckets[index].entries:
            if contact.peer_id == peer:
                return contact
        return None

    def contacts(self) -> Iterator[Contact]:
        for index in sorted(self._buckets):
            yield from self._buckets[index].entries

    def closest(self, key: int, n: int, exclude: PeerId | None = None) -> list[Contact]:
        """The ``n`` entries closest to ``key`` by XOR distance."""
        if n <= 0 or not self._where:
            return []
        target = bucket_index(self.local_key, key)
        # Entries of the key's own bucket are the closest, then every bucket
        # nearer to us (all at the same order of distance), then the farther
        # buckets one by one in increasing order.
        found: list[Contact] = []
        if target >= 0 and target in self._buckets:
            found.extend(self._buckets[target].entries)
        for index, bucket in self._buckets.items():
            if index < target:
                found.extend(bucket.entries)
        if len(found) < n + 1:
            for index in sorted(i for i in self._buckets if i > target):
                found.extend(self._buckets[index].entries)
                if len(found) >= n + 1:
                    break
        if exclude is not None:
            found = [c for c in found if c.peer_id != exclude]
        found.sort(key=lambda c: c.key ^ key)
        return found[:n]

    def recently_failed(self, peer: PeerId, now: float) -> bool:
        """``peer`` failed within ``failed_ttl``: do not ask or re-admit it
        on hearsay (other peers naming it)."""
        until = self._failed.get(peer)
        if until is None:
            return False
        if until <= now:
            del self._failed[peer]
            return False
        return True

    def occupancy(self) -> list[BucketStats]:
        return [
            BucketStats(
                index,
                KEY_BITS - 1 - index,
                len(bucket.entries),
                len(bucket.replacements),
                bucket.pending is not None,
            )
            for index, bucket in sorted(self._buckets.items(), reverse=True)
            if bucket.entries or bucket.replacements
        ]

    # --- updates --------------------------------------------------------------

    def add(self, contact: Contact, now: float, *, is_server: bool = True) -> AddResult:
        """Record that ``contact`` was seen alive (a query answered, an
        identify listed the DHT protocol)."""
        if contact.key == self.local_key:
            return AddResult(AddOutcome.REJECTED_SELF)
        # Seen alive first-hand: whatever failed before is forgiven.
        self._failed.pop(contact.peer_id, None)
        if not is_server:
            # A peer that stopped serving the DHT must not be handed out.
            self.remove(contact.peer_id)
            return AddResult(AddOutcome.REJECTED_CLIENT)
        index = bucket_index(self.local_key, contact.key)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        if contact.peer_id in self._where:
            return self._update(bucket, contact)
        if not self._diverse_enough(bucket, contact):
            return AddResult(AddOutcome.REJECTED_DIVERSITY)
        if len(bucket.entries) < self.config.k:
            self._insert(index, bucket, contact)
            return AddResult(AddOutcome.ADDED)
        self._cache_replacement(bucket, contact)
        if bucket.pending is not None:
            return AddResult(AddOutcome.CACHED)
        bucket.pending = bucket.entries[0]
        bucket.pending_deadline = now + self.config.ping_timeout
        return AddResult(AddOutcome.PENDING, PingNeeded(bucket.pending, bucket.pending_deadline))

    def load(self, contacts: Iterable[Contact]) -> int:
        """Bulk-insert known servers (a saved table, a simulator's bootstrap).

        Same admission rules as ``add`` but no liveness checks: a contact
        for a full bucket goes to the replacement cache.  Returns how many
        entered the table."""
        added = 0
        k = self.config.k
        local = self.local_key
        buckets = self._buckets
        where = self._where
        failed = self._failed
        for contact in contacts:
            if contact.key == local or contact.peer_id in where:
                continue
            if failed and contact.peer_id in failed:
                continue
            index = (local ^ contact.key).bit_length() - 1
            bucket = buckets.get(index)
            if bucket is None:
                bucket = buckets[index] = _Bucket()
            if contact.ip_groups and not self._diverse_enough(bucket, contact):
                continue
            if len(bucket.entries) < k:
                bucket.entries.append(contact)
                where[contact.peer_id] = index
                if contact.ip_groups:
                    self._count_groups(contact, +1)
                added += 1
            else:
                self._cache_replacement(bucket, contact)
        return added

    def on_ping_result(self, peer: PeerId, alive: bool, now: float) -> Contact | None:
        """Settle a liveness check; returns the replacement promoted, if any."""
        index = self._where.get(peer)
        if index is None:
            return None
        bucket = self._buckets[index]
        if bucket.pending is None or bucket.pending.peer_id != peer:
            return None
        pending = bucket.pending
        bucket.pending = None
        if alive:
            bucket.entries.remove(pending)
            bucket.entries.append(pending)
            return None
        self._remember_failure(peer, now)
        return self._evict(index, bucket, pending)

    def mark_failed(self, peer: PeerId, now: float) -> Contact | None:
        """``peer`` failed a request (refused, unreachable, silent without
        a connection) or announced its departure: drop it at once, keep it
        out for ``failed_ttl``, and promote a replacement (returned)."""
        self._remember_failure(peer, now)
        return self.remove(peer)

    def remove(self, peer: PeerId) -> Contact | None:
        """Drop ``peer`` (for example after repeated failures); returns the
        replacement promoted in its place, if any."""
        index = self._where.get(peer)
        if index is None:
            for bucket in self._buckets.values():
                bucket.replacements = [c for c in bucket.replacements if c.peer_id != peer]
            return None
        bucket = self._buckets[index]
        victim = next(c for c in bucket.entries if c.peer_id == peer)
        if bucket.pending is victim:
            bucket.pending = None
        return self._evict(index, bucket, victim)

    # --- time -----------------------------------------------------------------

    def mark_refreshed(self, key: int, now: float) -> None:
        """A lookup for ``key`` ran, which refreshes the key's bucket."""
        index = bucket_index(self.local_key, key)
        if index >= 0:
            self._refreshed[index] = now

    def refresh_indexes(self) -> list[int]:
        """Buckets a full refresh visits: the farthest to our nearest
        occupied one, no deeper than ``max_refresh_cpl``."""
        return list(self._refresh_range())

    def _refresh_range(self) -> range:
        if not self._where:
            return range(0)
        nearest = min(i for i, b in self._buckets.items() if b.entries)
        lowest = max(nearest, KEY_BITS - 1 - self.config.max_refresh_cpl)
        return range(KEY_BITS - 1, lowest - 1, -1)

    def next_deadline(self) -> float | None:
        deadlines = [b.pending_deadline for b in self._buckets.values() if b.pending is not None]
        for index in self._refresh_range():
            deadlines.append(self._refreshed.get(index, self._created) + self.config.refresh_interval)
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> list[RefreshBucket]:
        """Expire unanswered liveness checks and return due bucket refreshes."""
        for index, bucket in list(self._buckets.items()):
            if bucket.pending is not None and bucket.pending_deadline <= now:
                pending = bucket.pending
                bucket.pending = None
                self._remember_failure(pending.peer_id, now)
                self._evict(index, bucket, pending)
        actions: list[RefreshBucket] = []
        for index in self._refresh_range():
            if self._refreshed.get(index, self._created) + self.config.refresh_interval <= now:
                self._refreshed[index] = now
                target = random_peer_id_in_bucket(self.local_key, index, self._rng)
                actions.append(RefreshBucket(index, target, peer_key(target)))
        return actions

    # --- internals ------------------------------------------------------------

    def _update(self, bucket: _Bucket, contact: Contact) -> AddResult:
        old = next(c for c in bucket.entries if c.peer_id == contact.peer_id)
        bucket.entries.remove(old)
        self._count_groups(old, -1)
        if contact.ip_groups != old.ip_groups and not self._diverse_enough(bucket, contact):
            # Moving into a crowded prefix must not bypass the limits: keep
            # the addresses we admitted it with.
            contact = old
        bucket.entries.append(contact)
        self._count_groups(contact, +1)
        if bucket.pending is old:
            # Seen alive while being checked: that answers the check.
            bucket.pending = None
        return AddResult(AddOutcome.UPDATED)

    def _insert(self, index: int, bucket: _Bucket, contact: Contact) -> None:
        bucket.entries.append(contact)
        self._where[contact.peer_id] = index
        self._count_groups(contact, +1)
        bucket.replacements = [c for c in bucket.replacements if c.peer_id != contact.peer_id]

    def _remember_failure(self, peer: PeerId, now: float) -> None:
        if self.config.max_failed == 0 or self.config.failed_ttl == 0:
            return
        self._failed.pop(peer, None)
        self._failed[peer] = now + self.config.failed_ttl
        while len(self._failed) > self.config.max_failed:
            self._failed.popitem(last=False)

    def _evict(self, index: int, bucket: _Bucket, victim: Contact) -> Contact | None:
        bucket.entries.remove(victim)
        del self._where[victim.peer_id]
        self._count_groups(victim, -1)
        while bucket.replacements:
            candidate = bucket.replacements.pop()
            if candidate.peer_id in self._failed:
                continue
            if candidate.peer_id not in self._where and self._diverse_enough(bucket, candidate):
                self._insert(index, bucket, candidate)
                return candidate
        return None

    def _cache_replacement(self, bucket: _Bucket, contact: Contact) -> None:
        if self.config.replacement_cache_size == 0:
            return
        bucket.replacements = [c for c in bucket.replacements if c.peer_id != contact.peer_id]
        bucket.replacements.append(contact)
        if len(bucket.replacements) > self.config.replacement_cache_size:
            del bucket.replacements[0]

    def _diverse_enough(self, bucket: _Bucket, contact: Contact) -> bool:
        for group in contact.ip_groups:
            if self._group_counts.get(group, 0) >= self.config.max_per_group_per_table:
                return False
            in_bucket = sum(1 for c in bucket.entries if group in c.ip_groups)
            if in_bucket >= self.config.max_per_group_per_bucket:
                return False
        return True

    def _count_groups(self, contact: Contact, delta: int) -> None:
        for group in contact.ip_groups:
            count = self._group_counts.get(group, 0) + delta
            if count:
                self._group_counts[group] = count
            else:
                self._group_counts.pop(group, None)
