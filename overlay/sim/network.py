"""The simulated population: node identities, liveness, adversaries,
pairwise latency, and routing tables built on first use.

Routing tables are materialised lazily from a sorted global view of the
keys.  Bucket ``b`` of a node is one contiguous range of that sorted list,
so filling it is two bisections and a sample of ``k`` members: the table a
well-maintained node converges to (each bucket holds ``min(k, population)``
peers drawn uniformly).  Only nodes a lookup touches ever get a table, which
is what lets 100,000 nodes fit in one process; simulating every join would
cost ``N log N`` lookups before the first measurement (``bootstrap.py`` does
that for small N, to check this model).  Initial nodes' tables show the
initial network, including nodes that have since left: stale entries are
what churn is about.  A node joining later gets a table of the network as
it joins, and others learn of it only through the protocol.

Each node's routing decisions are the daemon's own ``KadBehaviour`` over
that table (``behaviour``), made on first use as well.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from statistics import NormalDist

from overlay.identity import PeerId
from overlay.kad.behaviour import Action, KadBehaviour, RefreshBuckets, StartBootstrap
from overlay.kad.handler import KadServer, ServerConfig
from overlay.kad.keyspace import KEY_BITS, Contact, fake_peer_id
from overlay.kad.messages import PeerInfo
from overlay.kad.providers import ProviderConfig, ProviderStore
from overlay.kad.records import NamespaceRegistry
from overlay.kad.policy import ProbeConnection
from overlay.kad.routing import RoutingConfig, RoutingTable
from overlay.kad.rtt import RttConfig, RttEstimator
from overlay.kad.store import MemoryRecordStore, StoreConfig

__all__ = ["NetworkModel", "SimNetwork", "xor_closest_positions"]

_MASK64 = (1 << 64) - 1
_UNIT = NormalDist()


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


def xor_closest_positions(sorted_keys: list[int], target: int, n: int) -> list[int]:
    """Positions in ``sorted_keys`` of the ``n`` keys XOR-closest to ``target``.

    Keys sharing a prefix with the target are one contiguous range, and the
    smallest such aligned range holding ``n`` keys holds the ``n`` closest."""
    total = len(sorted_keys)
    if n >= total:
        return sorted(range(total), key=lambda i: sorted_keys[i] ^ target)
    low, high = 0, KEY_BITS  # the block at level KEY_BITS is everything
    while low < high:
        level = (low + high) // 2
        start = target >> level << level
        count = bisect.bisect_left(sorted_keys, start + (1 << level)) - bisect.bisect_left(
            sorted_keys, start
        )
        if count >= n:
            high = level
        else:
            low = level + 1
    start = target >> low << low
    first = bisect.bisect_left(sorted_keys, start)
    last = bisect.bisect_left(sorted_keys, start + (1 << low))
    block = sorted(range(first, last), key=lambda i: sorted_keys[i] ^ target)
    return block[:n]


@dataclass(frozen=True, slots=True)
class NetworkModel:
    """Latency and loss of the simulated network."""

    median_rtt: float = 0.1
    """Median round-trip time in seconds of the per-pair lognormal."""
    rtt_sigma: float = 0.5
    """Shape of the lognormal (sigma of the underlying normal)."""
    min_rtt: float = 0.005
    max_rtt: float = 2.0
    loss: float = 0.0
    """Probability that a request or its answer is lost."""

    def __post_init__(self) -> None:
        if not 0 < self.min_rtt <= self.median_rtt <= self.max_rtt:
            raise ValueError("need 0 < min_rtt <= median_rtt <= max_rtt")
        if self.rtt_sigma < 0 or not 0.0 <= self.loss < 1.0:
            raise ValueError("rtt_sigma must be >= 0 and loss within [0, 1)")


class SimNetwork:
    """``total`` nodes; node ``i`` exists from ``join_time[i]`` and is gone
    from ``leave_time[i]`` (infinite unless churned)."""

    def __init__(
        self,
        total: int,
        seed: int,
        model: NetworkModel,
        routing: RoutingConfig,
        registry: NamespaceRegistry,
        server_config: ServerConfig,
        rtt: RttConfig | None = None,
        forget_departed_after: float | None = None,
    ) -> None:
        """``rtt``: how each node's measured round trips become timeouts.
        ``forget_departed_after``: a table built this many seconds or more
        after a member left no longer holds it (its owner noticed the
        departure on the connection it held to it); None keeps them all."""
        self.seed = seed
        self.rtt_config = rtt or RttConfig()
        self.forget_departed_after = forget_departed_after
        self.model = model
        self.routing = routing
        self.registry = registry
        self.server_config = server_config
        rng = random.Random(seed)
        self.peer_ids: list[PeerId] = [fake_peer_id(rng) for _ in range(total)]
        self.contacts: list[Contact] = [Contact.of(p) for p in self.peer_ids]
        self.keys: list[int] = [c.key for c in self.contacts]
        self.index_of: dict[PeerId, int] = {p: i for i, p in enumerate(self.peer_ids)}
        self.order: list[int] = sorted(range(total), key=self.keys.__getitem__)
        self.sorted_keys: list[int] = [self.keys[i] for i in self.order]
        self.join_time: list[float] = [0.0] * total
        self.leave_time: list[float] = [math.inf] * total
        self.adversary = bytearray(total)
        self._servers: dict[int, KadServer] = {}
        self._behaviours: dict[int, KadBehaviour] = {}
        self._departed_cache: tuple[float, set[int]] | None = None
        self._rtt_seed = _mix64(seed & _MASK64)
        self._log_median = math.log(model.median_rtt)

    def __len__(self) -> int:
        return len(self.peer_ids)

    def alive(self, node: int, now: float) -> bool:
        return self.join_time[node] <= now < self.leave_time[node]

    def rtt(self, a: int, b: int) -> float:
        """The pair's round-trip time, derived from the pair so it is never stored."""
        if a > b:
            a, b = b, a
        h = _mix64((a * 0x9E3779B97F4A7C15 + b * 0xC2B2AE3D27D4EB4F) & _MASK64 ^ self._rtt_seed)
        u = ((h >> 11) + 0.5) / float(1 << 53)
        value = math.exp(self._log_median + self.model.rtt_sigma * _UNIT.inv_cdf(u))
        return min(self.model.max_rtt, max(self.model.min_rtt, value))

    def server(self, node: int, now: float) -> KadServer:
        """The node's server, its table sampled from the global view on first use."""
        server = self._servers.get(node)
        if server is None:
            server = self._install(node, self._build_table(node, now))
        return server

    def empty_server(self, node: int, now: float) -> KadServer:
        """A server with an empty table, for nodes that bootstrap by joining."""
        own = self.keys[node]
        rng = random.Random(_mix64((self.seed * 1_000_003 + node) & _MASK64))
        return self._install(node, RoutingTable(own, self.routing, rng, now))

    def _install(self, node: int, table: RoutingTable) -> KadServer:
        server = KadServer(
            local=PeerInfo(self.peer_ids[node]),
            table=table,
            records=MemoryRecordStore(StoreConfig(), self.registry),
            providers=ProviderStore(ProviderConfig()),
            config=self.server_config,
        )
        self._servers[node] = server
        self._behaviours.pop(node, None)  # a new table: decisions start afresh
        return server

    def behaviour(self, node: int, now: float) -> KadBehaviour:
        """The node's routing behaviour (the daemon's), over its table."""
        behaviour = self._behaviours.get(node)
        if behaviour is None:
            table = self.server(node, now).table
            rng = random.Random(_mix64((self.seed * 1_000_033 + node) & _MASK64) ^ 0x5EED)
            behaviour = KadBehaviour(table, rng, rtt=RttEstimator(self.rtt_config))
            self._behaviours[node] = behaviour
        return behaviour

    def behaviours(self) -> dict[int, KadBehaviour]:
        """Behaviours made so far, by node."""
        return self._behaviours

    def settle_at_once(self, node: int, now: float) -> list[RefreshBuckets]:
        """Carry out ``node``'s pending checks with answers that arrive at
        once (set-up work whose latency is not measured): a live peer
        answers, a gone one fails.  Returns the refreshes it asked for."""
        behaviour = self.behaviour(node, now)
        refreshes: list[RefreshBuckets] = []
        for _ in range(10_000):
            actions: list[Action] = behaviour.poll(now)
            if not actions:
                break
            for action in actions:
                if isinstance(action, RefreshBuckets):
                    refreshes.append(action)
                elif isinstance(action, StartBootstrap):
                    behaviour.on_bootstrap_finished(now)  # no bootstrap peers here
                else:
                    peer = action.peer if isinstance(action, ProbeConnection) else action.contact.peer_id
                    checked = self.index_of.get(peer)
                    alive = checked is not None and self.alive(checked, now)
                    behaviour.on_check_result(peer, alive, now)
        return refreshes

    def has_table(self, node: int) -> bool:
        """Whether ``node``'s table has been built (it took part somewhere)."""
        return node in self._servers

    @property
    def materialised(self) -> int:
        return len(self._servers)

    def _departed_before(self, now: float) -> set[int] | frozenset[int]:
        if self.forget_departed_after is None:
            return frozenset()
        limit = now - self.forget_departed_after
        if self._departed_cache is None or self._departed_cache[0] != limit:
            self._departed_cache = (limit, {n for n, t in enumerate(self.leave_time) if t <= limit})
        return self._departed_cache[1]

    def tables_holding(self, peer: PeerId) -> list[int]:
        """Nodes whose (built) table holds ``peer``."""
        return [node for node, server in self._servers.items() if peer in server.table]

    def _build_table(self, node: int, now: float) -> RoutingTable:
        own = self.keys[node]
        rng = random.Random(_mix64((self.seed * 1_000_003 + node) & _MASK64))
        table = RoutingTable(own, self.routing, rng, now)
        k = self.routing.k
        keys = self.sorted_keys
        # Tables of the initial nodes show the initial network; a joiner's
        # shows the network as it joins.  Later joiners are learned only
        # through the protocol (their self-lookups reach the tables).
        cutoff = now if self.join_time[node] > 0 else 0.0
        gone = self._departed_before(now)
        for level in range(KEY_BITS - 1, -1, -1):
            # Stop once nothing else shares the node's prefix at this level.
            mine = own >> (level + 1) << (level + 1)
            if bisect.bisect_left(keys, mine + (1 << (level + 1))) - bisect.bisect_left(keys, mine) <= 1:
                break
            start = ((own >> level) ^ 1) << level
            first = bisect.bisect_left(keys, start)
            last = bisect.bisect_left(keys, start + (1 << level))
            if first == last:
                continue
            if last - first <= k:
                picks = list(range(first, last))
            else:
                picks = rng.sample(range(first, last), min(last - first, k + k // 2))
            members = [self.order[position] for position in picks]
            joined = [m for m in members if self.join_time[m] <= cutoff and m not in gone][:k]
            table.load([self.contacts[m] for m in joined])
        return table
