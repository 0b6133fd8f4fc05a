"""A virtual-time, discrete-event simulation of Kademlia lookups.

Every node runs the pure core: servers answer with ``handle_request`` on
their own routing table and stores, each lookup is a ``Lookup`` state
machine driven exactly as the network service drives it, and every node's
routing decisions are the daemon's ``KadBehaviour`` (who enters the table
once it answered, liveness checks of full buckets, eviction of peers whose
requests failed but not of overloaded ones, probes after a lost message),
whose checks travel as simulated messages.  Time only moves through the
event heap; one seeded ``random.Random`` decides everything else, so a run
is reproducible from its seed.

Connections are modelled as far as the behaviour sees them: two nodes that
exchanged an answer stay connected (QUIC keep-alives) until one leaves;
the survivor's connection then dies of silence ``idle_timeout`` later,
which the behaviour hears as a silent close and checks.  A request to a
peer that left times out on that stale connection and is probed first,
or fails outright (and evicts) once the connection is gone.  Checks and
probes are never lost (QUIC retransmits them); lost lookup messages are
timeouts on a live connection, which are probed and evict nobody.

Adversaries answer every request with closer peers of their choosing
("eclipse": the colluding adversaries closest to the key, the classic
attack disjoint paths defend against; "random": random node IDs), drop
the records they are asked to store and answer GET_VALUE with forged
records.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from overlay.errors import OverlayError
from overlay.kad.behaviour import KadBehaviour, RefreshBuckets, StartBootstrap
from overlay.kad.handler import ServerConfig, handle_request
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import (
    Finished,
    Lookup,
    LookupConfig,
    LookupKind,
    LookupResult,
    SendRequest,
)
from overlay.kad.messages import KadMessage, MessageType, PeerInfo, decode_message, encode_message
from overlay.kad.policy import FailureKind, NodePolicy, ProbeConnection
from overlay.kad.records import Record, default_registry, immutable_key
from overlay.kad.rtt import RttConfig, RttEstimator
from overlay.sim.bootstrap import bootstrap_by_joins
from overlay.sim.config import LookupOutcome, SimConfig
from overlay.sim.network import SimNetwork, xor_closest_positions

__all__ = ["SimConfig", "LookupOutcome", "Simulator"]

_START, _RESPONSE, _WAKE, _TIMEOUT, _LOST, _CHECKED, _CLOSED = range(7)
_REQUEST_TYPES = {
    LookupKind.FIND_NODE: MessageType.FIND_NODE,
    LookupKind.GET_VALUE: MessageType.GET_VALUE,
    LookupKind.GET_PROVIDERS: MessageType.GET_PROVIDERS,
}


@dataclass(slots=True)
class _Run:
    number: int
    origin: int
    lookup: Lookup
    started: float
    expected: bytes = b""
    done: bool = False
    wakes: set[float] = field(default_factory=set)


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.registry = default_registry()
        joiners = int(config.nodes * config.churn)
        ceiling = config.lookup.peer_timeout
        self._rtt_config = RttConfig(min_timeout=min(RttConfig().min_timeout, ceiling), max_timeout=ceiling)
        self.net = SimNetwork(
            config.nodes + joiners,
            config.seed,
            config.network,
            config.routing,
            self.registry,
            ServerConfig(k=config.routing.k),
            self._rtt_config,
            forget_departed_after=(
                config.idle_timeout + config.lookup.peer_timeout
                if config.table_connections and config.evict_on_failure else None
            ),
        )
        self.duration = config.lookups * config.lookup_interval
        self._churn(joiners)
        self._adversaries: list[int] = []
        self._adversary_keys: list[int] = []
        self._pick_adversaries()
        self.bootstrap_requests = 0
        if config.bootstrap == "join":
            order = list(range(config.nodes))
            self.rng.shuffle(order)
            self.bootstrap_requests = bootstrap_by_joins(self.net, order, self.rng, config.lookup)
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.outcomes: list[LookupOutcome] = []
        self._announced: set[int] = set()
        self.messages_sent = 0
        self.checks_sent = 0
        """Liveness checks, verifications and probes the behaviours sent."""
        self._now = 0.0
        """The time of the event being handled."""
        self._links: dict[int, dict[int, None]] = {}
        """Open connections: node → peers it exchanged answers with."""
        self.departures: dict[int, tuple[int, ...]] = {}
        """Peers that left → the live nodes still connected to them then."""

    # --- set-up ---------------------------------------------------------------

    def _churn(self, joiners: int) -> None:
        initial = self.config.nodes
        for node in range(initial, initial + joiners):
            self.net.join_time[node] = self.rng.uniform(0.0, self.duration)
        for node in self.rng.sample(range(initial), int(initial * self.config.churn)):
            self.net.leave_time[node] = self.rng.uniform(0.0, self.duration)

    def _pick_adversaries(self) -> None:
        count = int(len(self.net) * self.config.adversaries)
        chosen = sorted(self.rng.sample(range(len(self.net)), count))
        for node in chosen:
            self.net.adversary[node] = 1
        ordered = sorted(chosen, key=self.net.keys.__getitem__)
        self._adversaries = ordered
        self._adversary_keys = [self.net.keys[n] for n in ordered]

    def _honest_live(self, now: float) -> int:
        for _ in range(100_000):
            node = self.rng.randrange(len(self.net))
            if self.net.alive(node, now) and not self.net.adversary[node]:
                return node
        raise OverlayError("no live honest node left to pick")

    # --- events ---------------------------------------------------------------

    def _push(self, when: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, payload))

    def run(self) -> list[LookupOutcome]:
        for number in range(self.config.lookups):
            self._push(number * self.config.lookup_interval, _START, number)
        for node, left in enumerate(self.net.leave_time):
            if left != math.inf and self.config.update_tables:
                self._push(left + self.config.idle_timeout, _CLOSED, node)
        while self._events:
            now, _, kind, payload = heapq.heappop(self._events)
            self._now = now
            if kind == _START:
                assert isinstance(payload, int)
                self._start(payload, now)
            elif kind == _RESPONSE:
                assert isinstance(payload, tuple)
                run, node, response, sent, dialed = payload
                self._deliver(run, node, response, sent, now, dialed)
            elif kind == _TIMEOUT:
                assert isinstance(payload, tuple)
                run, node, attempt = payload
                self._timed_out(run, node, attempt, now)
            elif kind == _LOST:
                assert isinstance(payload, tuple)
                origin, node = payload
                self._lost(origin, node, now)
            elif kind == _CHECKED:
                assert isinstance(payload, tuple)
                owner, node, alive = payload
                if not alive:
                    self._unlink(owner, node)  # the driver drops a dead connection
                self.behaviour(owner, now).on_check_result(
                    self.net.peer_ids[node], alive, now, seen=self.net.contacts[node]
                )
                self._carry_out(owner, now)
            elif kind == _CLOSED:
                assert isinstance(payload, int)
                self._connections_died(payload, now)
            else:
                assert isinstance(payload, _Run)
                payload.wakes.discard(now)
                self._drive(payload, now)
        return self.outcomes

    def _start(self, number: int, now: float) -> None:
        origin = self._honest_live(now)
        self._announce(origin, now)
        config = self.config
        table = self.net.server(origin, now).table
        local_record = None
        if config.kind is LookupKind.FIND_NODE:
            target_node = origin
            while target_node == origin:
                target_node = self._honest_live(now)
            self._announce(target_node, now)
            target = self.net.peer_ids[target_node].multihash
            expected = target
        elif config.kind is LookupKind.GET_VALUE:
            value = f"sim value {config.seed}/{number}".encode()
            target = immutable_key(value)
            expected = value
            self._publish(target, Record(target, value), now)
            stored = self.net.server(origin, now).records.get(target, now)
            local_record = stored.record if stored is not None else None
        else:
            content = kad_key(f"sim content {config.seed}/{number}".encode())
            target = b"\x12\x20" + content.to_bytes(32, "big")  # a sha2-256 multihash
            expected = self.net.peer_ids[self._publish(target, None, now)].multihash
        seeds = table.closest(kad_key(target), config.lookup.k)
        lookup = Lookup(
            config.kind,
            target,
            seeds,
            config.lookup,
            local_key=self.net.keys[origin],
            registry=self.registry,
            validation_time=now,
            local_record=local_record,
            timeout_for=self._timeout_for(origin) if config.adaptive_timeouts else None,
        )
        self._drive(_Run(number, origin, lookup, now, expected), now)

    @property
    def estimators(self) -> Mapping[int, RttEstimator]:
        """The round-trip estimates of every node that measured some (as
        an asker; they set its timeouts with ``adaptive_timeouts``)."""
        return {node: b.rtt for node, b in self.net.behaviours().items() if b.rtt.warm.samples}

    def estimator(self, node: int) -> RttEstimator:
        """The round-trip estimates ``node`` measured as an asker."""
        return self.net.behaviour(node, 0.0).rtt

    def _timeout_for(self, origin: int) -> Callable[[Contact], float]:
        estimator = self.estimator(origin)
        if not self.config.dials:
            return lambda contact: estimator.timeout(contact.peer_id, connected=True)

        def timeout(contact: Contact) -> float:
            node = self.net.index_of.get(contact.peer_id)
            connected = node is not None and self._connected(origin, node, self._now)
            return estimator.timeout(contact.peer_id, connected=connected)

        return timeout

    def _publish(self, target: bytes, record: Record | None, now: float) -> int:
        """A random honest node finds the peers closest to ``target`` and
        stores ``record`` there (or announces itself as provider).  Answers
        are immediate: publishing is set-up, not a measured lookup.
        Adversaries on the path lie as usual and drop what they are given."""
        publisher = self._honest_live(now)
        self._announce(publisher, now)
        sender = self.net.peer_ids[publisher]
        # A PUT's lookup of a key has no evidence to widen adaptive paths
        # on (no record to check, no target to find), so it runs every
        # disjoint path: else liars near the key keep what is published
        # from honest holders, and no GET can find it.
        closest = self._find_now(publisher, target, now, every_path=True)
        if record is not None:
            message = KadMessage(MessageType.PUT_VALUE, target, record=record)
        else:
            message = KadMessage(MessageType.ADD_PROVIDER, target, provider_peers=(PeerInfo(sender),))
        for contact in closest:
            node = self.net.index_of.get(contact.peer_id)
            if node is None or not self.net.alive(node, now) or self.net.adversary[node]:
                continue
            try:
                handle_request(self.net.server(node, now), message, sender, now)
            except OverlayError:
                pass  # refused (quota, stale): that holder simply lacks it
        return publisher

    def _find_now(
        self, origin: int, target: bytes, now: float, every_path: bool = False
    ) -> tuple[Contact, ...]:
        """A FIND_NODE whose answers arrive at once (set-up work such as
        publishing or joining, whose latency is not measured); with
        ``every_path`` (publishing), ``SimConfig.publish_paths`` disjoint
        paths, all open from the start."""
        config = self.config.lookup
        paths = config.disjoint_paths
        if every_path and self.config.publish_paths is not None:
            paths = self.config.publish_paths
        lookup = Lookup(
            LookupKind.FIND_NODE,
            target,
            self.net.server(origin, now).table.closest(kad_key(target), config.k),
            LookupConfig(config.alpha, config.k, config.peer_timeout, paths,
                         adaptive_paths=config.adaptive_paths and not every_path),
            local_key=self.net.keys[origin],
        )
        for _ in range(100_000):
            action = lookup.next(now)
            if isinstance(action, Finished):
                break
            if not isinstance(action, SendRequest):
                raise OverlayError("a synchronous lookup cannot wait")  # every answer is immediate
            node = self.net.index_of.get(action.peer.peer_id)
            answer = None
            if node is not None and self.net.alive(node, now):
                answer = self._answer(origin, LookupKind.FIND_NODE, target, node, now)
            if answer is None:
                if node is not None and self.config.evict_on_failure and not self.net.alive(node, now):
                    self.behaviour(origin, now).on_request_failed(
                        action.peer.peer_id, FailureKind.TIMEOUT,
                        connected=self._connected(origin, node, now), now=now,
                    )
                lookup.on_failure(action.peer.peer_id, now)
            else:
                closer = self._closer(origin, answer.closer_peers, now)
                lookup.on_success(action.peer.peer_id, closer, now)
                if self.config.update_tables and node is not None:
                    self._learn(origin, node, now)
            self._run_refreshes(origin, self.net.settle_at_once(origin, now), now)
            if answer is not None and node is not None and not self.net.adversary[node]:
                self._run_refreshes(node, self.net.settle_at_once(node, now), now)
        return lookup.finish().closest

    def _announce(self, node: int, now: float) -> None:
        """A churn joiner's table reflects the network when it joins; the
        others learn of it only from its self-lookup, as in the protocol.

        The self-lookup runs when the joiner first takes part in a measured
        lookup (as origin or target), not at its join time: running one for
        every joiner costs a table for each of the ~25 peers it asks, which
        at 100,000 nodes and 20% churn is minutes of set-up.  A joiner that
        never takes part stays unknown, which only removes a routing hop."""
        if node < self.config.nodes or node in self._announced:
            return
        self._announced.add(node)
        self.net.server(node, self.net.join_time[node])
        self._find_now(node, self.net.peer_ids[node].multihash, now)

    def _drive(self, run: _Run, now: float) -> None:
        if run.done:
            return  # a wake-up left over from before the lookup finished
        while True:
            action = run.lookup.next(now)
            if isinstance(action, SendRequest):
                self._send(run, action, now)
            elif isinstance(action, Finished):
                self._finish(run, action.result, now)
                return
            else:
                deadline = action.deadline
                if deadline is not None and deadline not in run.wakes:
                    run.wakes.add(deadline)
                    self._push(deadline, _WAKE, run)
                return

    def _send(self, run: _Run, request: SendRequest, now: float) -> None:
        self.messages_sent += 1
        node = self.net.index_of.get(request.peer.peer_id)
        loss = self.config.network.loss
        if node is None or not self.net.alive(node, now):
            # Nobody answers; the lookup's own timeout moves it on (a retry
            # first), and the request's timeout tells the asker's behaviour.
            if node is not None and self.config.evict_on_failure:
                self._push(request.deadline, _TIMEOUT, (run, node, request.attempt))
            return
        if loss and (self.rng.random() < loss or self.rng.random() < loss):
            # The lookup's timeout notices, as a driver's would; the asker's
            # behaviour hears of a timeout on a live connection.
            if self.config.evict_on_failure:
                self._push(request.deadline, _LOST, (run.origin, node))
            return
        rtt = self.net.rtt(run.origin, node)
        dialed = self.config.dials and not self._connected(run.origin, node, now)
        if dialed:
            now += rtt  # the handshake first
        lookup = run.lookup
        response = self._answer(run.origin, lookup.kind, lookup.target, node, now + rtt / 2)
        self._push(now + rtt, _RESPONSE, (run, node, response, now - rtt if dialed else now, dialed))

    def _answer(
        self, origin: int, kind: LookupKind, target: bytes, node: int, now: float
    ) -> KadMessage | None:
        request = KadMessage(_REQUEST_TYPES[kind], target)
        try:
            if self.config.exercise_codec:
                request = decode_message(encode_message(request))
            if self.net.adversary[node]:
                response = self._lie(kind, target, kad_key(target))
            else:
                answer = handle_request(
                    self.net.server(node, now), request, self.net.peer_ids[origin], now
                )
                if answer is None:
                    return None
                response = answer
            if self.config.exercise_codec:
                response = decode_message(encode_message(response))
        except OverlayError:
            return None  # the stream would be reset: a failed request
        return response

    def _lie(self, kind: LookupKind, target: bytes, key: int) -> KadMessage:
        k = self.config.routing.k
        if self.config.adversary_mode == "eclipse":
            positions = xor_closest_positions(self._adversary_keys, key, k)
            closer = tuple(PeerInfo(self.net.peer_ids[self._adversaries[p]]) for p in positions)
        else:
            closer = tuple(PeerInfo(self.net.peer_ids[self.rng.randrange(len(self.net))]) for _ in range(k))
        record = None
        providers: tuple[PeerInfo, ...] = ()
        if kind is LookupKind.GET_VALUE:
            record = Record(target, self.rng.randbytes(32))
        elif kind is LookupKind.GET_PROVIDERS:
            # Provider records are not signed: a liar can name anyone.
            providers = (PeerInfo(self.net.peer_ids[self.rng.randrange(len(self.net))]),)
        return KadMessage(
            _REQUEST_TYPES[kind], target, record=record, closer_peers=closer, provider_peers=providers
        )

    def behaviour(self, node: int, now: float) -> KadBehaviour:
        """The node's routing behaviour (the one the daemon runs)."""
        return self.net.behaviour(node, now)

    def policy(self, node: int, now: float) -> NodePolicy:
        """The node's eviction rules (its behaviour's)."""
        return self.behaviour(node, now).policy

    @property
    def evictions(self) -> int:
        return sum(b.evictions for b in self.net.behaviours().values())

    def _connected(self, a: int, b: int, now: float) -> bool:
        """Whether ``a`` still holds a connection to ``b`` (one to a peer
        that left dies of silence ``idle_timeout`` later)."""
        if now >= self.net.leave_time[b] + self.config.idle_timeout:
            return False
        links = self._links.get(a)
        if links is not None and b in links:
            return True
        return (self.config.table_connections and self.net.has_table(a)
                and self.net.peer_ids[b] in self.net.server(a, now).table)

    def _link(self, a: int, b: int) -> None:
        self._links.setdefault(a, {})[b] = None
        self._links.setdefault(b, {})[a] = None

    def _unlink(self, a: int, b: int) -> None:
        self._links.get(a, {}).pop(b, None)
        self._links.get(b, {}).pop(a, None)

    def _connections_died(self, gone: int, now: float) -> None:
        """``gone`` left ``idle_timeout`` ago: whoever was still connected
        to it sees that connection close in silence."""
        holders = dict(self._links.pop(gone, {}))
        if self.config.table_connections:
            holders.update(dict.fromkeys(self.net.tables_holding(self.net.peer_ids[gone])))
        peers = [p for p in holders if p != gone and self.net.alive(p, now)]
        self.departures[gone] = tuple(peers)
        peer_id = self.net.peer_ids[gone]
        for peer in peers:
            self._links.get(peer, {}).pop(gone, None)
            if self.config.evict_on_failure:
                self.behaviour(peer, now).on_closed(peer_id, going_away=False, silent=True, now=now)
                self._carry_out(peer, now)

    def _timed_out(self, run: _Run, node: int, attempt: int, now: float) -> None:
        peer_id = self.net.peer_ids[node]
        connected = self._connected(run.origin, node, now)
        # Gone: on a connection not yet known dead the behaviour probes first.
        self.behaviour(run.origin, now).on_request_failed(
            peer_id, FailureKind.TIMEOUT, connected=connected, now=now
        )
        self._carry_out(run.origin, now)
        if not run.lookup.finished:
            # No connection, so no message was lost: the dial went
            # unanswered, and the lookup does not dial again (as the
            # daemon's driver, ``net_lookup``).
            run.lookup.on_failure(peer_id, now, timed_out=connected, attempt=attempt)
            self._drive(run, now)

    def _lost(self, origin: int, node: int, now: float) -> None:
        # Alive, so still connected: the behaviour probes before evicting.
        self.behaviour(origin, now).on_request_failed(
            self.net.peer_ids[node], FailureKind.TIMEOUT, connected=True, now=now
        )
        self._carry_out(origin, now)

    def _carry_out(self, owner: int, now: float) -> None:
        """Send the checks ``owner``'s behaviour asks for: each answer (or
        its timeout, if the peer is gone) comes back as a ``_CHECKED``."""
        behaviour = self.behaviour(owner, now)
        for action in behaviour.poll(now):
            if isinstance(action, RefreshBuckets):
                self._run_refreshes(owner, [action], now)
                continue
            if isinstance(action, StartBootstrap):
                behaviour.on_bootstrap_finished(now)  # no bootstrap peers here
                continue
            peer = action.peer if isinstance(action, ProbeConnection) else action.contact.peer_id
            node = self.net.index_of.get(peer)
            if node is None:
                behaviour.on_check_result(peer, False, now)
                continue
            self.checks_sent += 1
            if self.net.alive(node, now):
                self._push(now + self.net.rtt(owner, node), _CHECKED, (owner, node, True))
            else:
                timeout = behaviour.rtt.timeout(peer, connected=False) if self.config.adaptive_timeouts \
                    else self.config.lookup.peer_timeout
                if isinstance(action, ProbeConnection):
                    timeout *= 2  # a ping leaves room for a busy peer (``net_health``)
                self._push(now + timeout, _CHECKED, (owner, node, False))

    def _run_refreshes(self, owner: int, refreshes: Sequence[RefreshBuckets], now: float) -> None:
        # Refreshes are set-up work: their lookups' answers arrive at once.
        for refresh in refreshes:
            for target in refresh.targets:
                self._find_now(owner, target.multihash, now)

    def _closer(self, origin: int, infos: Sequence[PeerInfo], now: float) -> list[Contact]:
        closer = [self._contact(info) for info in infos]
        if self.config.evict_on_failure:
            closer = self.behaviour(origin, now).worth_asking(closer, now)
        return closer

    def _deliver(
        self, run: _Run, node: int, response: KadMessage | None, sent: float, now: float,
        dialed: bool = False,
    ) -> None:
        peer_id = self.net.peer_ids[node]
        learns = self.config.update_tables and response is not None and not run.lookup.finished
        if not learns:
            # Otherwise the asker's behaviour samples it with the answer.
            self.estimator(run.origin).sample(peer_id, now - sent, now, dialed=dialed)
        if run.lookup.finished:
            return
        if response is None:
            # A refusal (a stream reset on a live connection): overload is
            # not death, and the behaviour keeps the peer.
            if self.config.evict_on_failure:
                self.behaviour(run.origin, now).on_request_failed(
                    peer_id, FailureKind.RESET, connected=True, now=now
                )
            run.lookup.on_failure(peer_id, now)
        else:
            closer = self._closer(run.origin, response.closer_peers, now)
            run.lookup.on_success(
                peer_id, closer, now, record=response.record, providers=response.provider_peers
            )
            if self.config.update_tables:
                self._learn(run.origin, node, now, rtt=now - sent, dialed=dialed)
        self._drive(run, now)

    def _contact(self, info: PeerInfo) -> Contact:
        node = self.net.index_of.get(info.peer_id)
        return self.net.contacts[node] if node is not None else info.contact()

    def _learn(
        self, origin: int, node: int, now: float, rtt: float | None = None, dialed: bool = False
    ) -> None:
        """The asker's behaviour hears that the peer answered; the
        answering server's hears of the asker (a DHT server, as identify
        would tell it) and checks it before admitting it.  With ``rtt``
        the checks travel (``_carry_out``), else they settle at once."""
        self._link(origin, node)
        self.behaviour(origin, now).on_answered(self.net.contacts[node], now, rtt=rtt, dialed=dialed)
        if not self.net.adversary[node]:
            self.behaviour(node, now).on_identified(self.net.contacts[origin], is_server=True, now=now)
        if rtt is not None:
            self._carry_out(origin, now)
            if not self.net.adversary[node]:
                self._carry_out(node, now)

    def _finish(self, run: _Run, result: LookupResult, now: float) -> None:
        run.done = True
        if result.kind is LookupKind.FIND_NODE:
            success = result.target_found
        elif result.kind is LookupKind.GET_VALUE:
            success = result.record is not None and result.record.value == run.expected
        else:
            success = any(p.peer_id.multihash == run.expected for p in result.providers)
        self.outcomes.append(
            LookupOutcome(
                success, result.rounds, result.messages, now - run.started, result.failed, result.retries,
                result.paths,
            )
        )
