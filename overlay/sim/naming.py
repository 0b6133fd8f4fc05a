"""Name resolution in the virtual-time simulator (pure, seeded).

Each resolution is what ``Resolver`` does on the network: one GET_VALUE
lookup run to its end, every answer fed to an ``AnswerTracker``; the
latency is the virtual time of the first safe decision (or of the final
one when none came early).  The population, routing tables and per-pair
RTTs come from ``overlay.sim.network.SimNetwork``; servers answer with the
pure ``handle_request`` on their own record stores, which enforce the
name namespace.  Adversaries answer like honest servers about closer
peers but serve a bad record for the name: half of them a validly signed
registration of the same name by a colluding key, half a copy of the real
record with a broken signature.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from overlay.errors import OverlayError
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.errors import InvalidRecord
from overlay.kad.handler import ServerConfig, handle_request
from overlay.kad.keyspace import kad_key
from overlay.kad.lookup import Finished, Lookup, LookupConfig, LookupKind, SendRequest
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.records import NamespaceRegistry, Record, default_registry
from overlay.kad.routing import RoutingConfig
from overlay.naming.builders import make_record
from overlay.naming.config import NamingConfig
from overlay.naming.dht_namespace import NameNamespace
from overlay.naming.pow import solve_pow
from overlay.naming.record import NameRecord, PeerTarget
from overlay.naming.resolve import Done
from overlay.naming.tracker import Answer, AnswerTracker
from overlay.sim.network import NetworkModel, SimNetwork, xor_closest_positions

__all__ = ["NameSimConfig", "ResolveOutcome", "simulate_resolutions"]

_WALL0 = 1_800_000_000.0
"""Wall-clock origin of virtual time: records carry absolute expiries."""


@dataclass(frozen=True, slots=True)
class NameSimConfig:
    nodes: int = 10_000
    """Simulated population."""
    resolutions: int = 200
    """Names registered and then resolved, one after another."""
    seed: int = 0
    """Seeds every random choice; print it with any failure."""
    quorum: int = 4
    """Agreeing records that settle a name early."""
    adversaries: float = 0.0
    """Fraction of nodes serving forged or squatting records."""
    lookup: LookupConfig = field(default_factory=lambda: LookupConfig(peer_timeout=1.0))
    """The GET_VALUE lookup (alpha, per-peer timeout); it always runs to its end."""
    network: NetworkModel = field(default_factory=NetworkModel)
    """Per-pair RTT distribution and loss."""
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    """Routing tables (k = 20 closest store each name)."""
    pow_bits: int = 8
    """Proof-of-work difficulty of the simulated network (cheap by default)."""

    def __post_init__(self) -> None:
        if self.nodes < 2 or self.resolutions < 1 or self.quorum < 1:
            raise ValueError("need 2 nodes, 1 resolution and a quorum of at least 1")
        if not 0.0 <= self.adversaries < 1.0:
            raise ValueError("adversaries must be a fraction within [0, 1)")


@dataclass(frozen=True, slots=True)
class ResolveOutcome:
    latency: float
    """Virtual seconds until the answer the caller gets."""
    correct: bool
    """The answer is the real owner's record."""
    early: bool
    """The answer came before the lookup ended."""
    final_correct: bool
    """Background verification's final decision is the real record."""
    lookup_time: float
    """Virtual seconds until the lookup ended (background verification)."""
    messages: int


def _registry(naming: NamingConfig) -> NamespaceRegistry:
    registry = default_registry()
    registry.register("ovl-name", NameNamespace(naming, wrap_error=lambda e: InvalidRecord(str(e))))
    return registry


def _signed(key: Ed25519PrivateKey, name: str, naming: NamingConfig, rng: random.Random,
            sequence: int) -> NameRecord:
    owner = key.public_key().to_protobuf()
    nonce = solve_pow(name, owner, naming.pow_bits, rng)
    peer = PeerId.from_public_key(key.public_key())
    return make_record(key, name, sequence=sequence, expires=int(_WALL0 + 24 * 3600), ttl=300,
                       peers=(PeerTarget(peer.to_bytes()),), pow_nonce=nonce)


def simulate_resolutions(config: NameSimConfig,
                         progress: Callable[[int], None] | None = None) -> list[ResolveOutcome]:
    rng = random.Random(config.seed)
    naming = NamingConfig(pow_bits=config.pow_bits)
    registry = _registry(naming)
    net = SimNetwork(config.nodes, config.seed, config.network, config.routing, registry,
                     ServerConfig(k=config.routing.k))
    adversary_count = int(config.nodes * config.adversaries)
    for node in rng.sample(range(config.nodes), adversary_count):
        net.adversary[node] = 1
    squatter = Ed25519PrivateKey.from_seed(rng.randbytes(32))
    outcomes = []
    for number in range(config.resolutions):
        owner = Ed25519PrivateKey.from_seed(rng.randbytes(32))
        name = f"name{number}-{config.seed}.ovl"
        real = _signed(owner, name, naming, rng, sequence=1)
        squat = _signed(squatter, name, naming, rng, sequence=2)
        forged = replace(real, txt=("forged",)).to_bytes()
        key = NameNamespace(naming).key_for(name)
        _store(net, key, real.to_bytes(), config.routing.k)
        outcomes.append(_resolve(net, registry, config, naming, rng, name, key, real,
                                 squat.to_bytes(), forged))
        if progress is not None:
            progress(number + 1)
    return outcomes


def _store(net: SimNetwork, key: bytes, value: bytes, k: int) -> None:
    """The owner's PUT: the k closest nodes store it (adversaries drop it)."""
    target = kad_key(key)
    for position in xor_closest_positions(net.sorted_keys, target, k):
        node = net.order[position]
        if not net.adversary[node]:
            net.server(node, 0.0).records.put(Record(key, value), None, _WALL0)


def _resolve(net: SimNetwork, registry: NamespaceRegistry, config: NameSimConfig,
             naming: NamingConfig, rng: random.Random, name: str, key: bytes,
             real: NameRecord, squat: bytes, forged: bytes) -> ResolveOutcome:
    origin = rng.randrange(len(net))
    while net.adversary[origin]:
        origin = rng.randrange(len(net))
    target = kad_key(key)
    seeds = net.server(origin, 0.0).table.closest(target, config.lookup.k)
    lookup = Lookup(LookupKind.GET_VALUE, key, seeds, replace(config.lookup, quorum=0),
                    local_key=net.keys[origin], registry=registry, validation_time=_WALL0)
    tracker = AnswerTracker(name, config.quorum, naming, max_responders=config.routing.k)
    request = KadMessage(MessageType.GET_VALUE, key)
    events: list[tuple[float, int, int, KadMessage | None]] = []
    seq = 0
    now = 0.0
    answer_at: float | None = None
    early: Done | None = None
    while True:
        action = lookup.next(now)
        if isinstance(action, SendRequest):
            node = net.index_of.get(action.peer.peer_id)
            if node is None or not net.alive(node, now):
                continue  # silent: the lookup's timeout handles it
            response: KadMessage | None
            try:
                response = handle_request(net.server(node, now), request,
                                          net.peer_ids[origin], _WALL0 + now)
            except OverlayError:
                response = None
            if response is not None and net.adversary[node]:
                bad = squat if node % 2 else forged
                response = replace(response, record=Record(key, bad))
            seq += 1
            heapq.heappush(events, (now + net.rtt(origin, node), seq, node, response))
            continue
        if isinstance(action, Finished):
            break
        if not events:
            if action.deadline is None:
                break
            now = action.deadline
            continue
        when, _, node, response = heapq.heappop(events)
        if action.deadline is not None and action.deadline < when:
            heapq.heappush(events, (when, _, node, response))
            now = action.deadline
            continue
        now = when
        peer = net.peer_ids[node]
        distance = net.keys[node] ^ target
        if response is None:
            lookup.on_failure(peer, now)
            tracker.add(Answer(peer.to_bytes(), distance, failed=True), _WALL0 + now)
            continue
        closer = [net.contacts[i] if (i := net.index_of.get(info.peer_id)) is not None
                  else info.contact() for info in response.closer_peers]
        lookup.on_success(peer, closer, now, record=response.record)
        value = response.record.value if response.record is not None else None
        decided = tracker.add(Answer(peer.to_bytes(), distance, value), _WALL0 + now)
        if decided is not None and early is None:
            early, answer_at = decided, now
    final = tracker.finish(_WALL0 + now)
    chosen = early if early is not None else final
    real_bytes = real.to_bytes()
    correct = isinstance(chosen, Done) and chosen.record.to_bytes() == real_bytes
    final_correct = isinstance(final, Done) and final.record.to_bytes() == real_bytes
    return ResolveOutcome(
        latency=answer_at if answer_at is not None else now,
        correct=correct,
        early=early is not None,
        final_correct=final_correct,
        lookup_time=now,
        messages=lookup.finish().messages,
    )
