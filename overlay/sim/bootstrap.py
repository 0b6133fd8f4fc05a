"""Bootstrap by simulated joins: the slow, protocol-faithful alternative to
sampling tables from the global view (see ``network.py``).

Nodes join one by one.  A joiner knows one random earlier node, looks up
its own ID through the real lookup state machine and request handler, and
reports every peer that answered to its ``KadBehaviour`` (the daemon's);
every server it asked hears of the joiner as identify would tell it, and
checks it once before admitting it.  Checks are answered at once and
succeed (nobody has left yet), so the oldest entries of full buckets stay,
as Kademlia prefers.
Requests are answered at once: joins happen before the measured lookups
and their latency is not part of any figure.

After the last join every node refreshes its buckets once, as a node does
after bootstrapping.  A full lookup per bucket per node would cost
``N log N`` lookups, so a refresh here is a few FIND_NODE rounds: the node asks
the peer it knows closest to a random key in the bucket and admits the
peers of the answer, for up to three rounds until the bucket is full (it
asks ``table.closest`` with the key directly, since minting a peer ID that
hashes into a deep bucket takes ``2**cpl`` tries).

It costs about ``25 N`` request handlings, so it is meant for N up to
about 20,000 and for checking that sampled tables behave like grown ones.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

from overlay.kad.handler import handle_request
from overlay.kad.keyspace import KEY_BITS, Contact, random_key_in_bucket
from overlay.kad.lookup import Finished, Lookup, LookupConfig, LookupKind, SendRequest
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.routing import RoutingTable
from overlay.sim.network import SimNetwork

__all__ = ["MAX_JOIN_NODES", "bootstrap_by_joins"]

MAX_JOIN_NODES = 20_000
_REFRESH_ROUNDS = 3


def _answered(net: SimNetwork, node: int, contact: Contact, now: float) -> None:
    """``contact`` answered ``node``."""
    net.behaviour(node, now).on_answered(contact, now)
    net.settle_at_once(node, now)


def _asked_by(net: SimNetwork, node: int, asker: Contact, now: float) -> None:
    """``asker``, a DHT server, sent ``node`` a request."""
    net.behaviour(node, now).on_identified(asker, is_server=True, now=now)
    net.settle_at_once(node, now)


def bootstrap_by_joins(
    net: SimNetwork, nodes: Sequence[int], rng: random.Random, config: LookupConfig, now: float = 0.0
) -> int:
    """Join ``nodes`` in order; returns the number of requests it took."""
    if len(nodes) > MAX_JOIN_NODES:
        raise ValueError(f"join bootstrap is for at most {MAX_JOIN_NODES} nodes")
    requests = 0
    for position, node in enumerate(nodes):
        table = net.empty_server(node, now).table
        if position == 0:
            continue
        me = net.contacts[node]
        _answered(net, node, net.contacts[nodes[rng.randrange(position)]], now)
        target = me.peer_id.multihash
        lookup = Lookup(
            LookupKind.FIND_NODE, target, table.closest(me.key, config.k), config, local_key=me.key
        )
        request = KadMessage(MessageType.FIND_NODE, target)
        queue: deque[SendRequest] = deque()
        for _ in range(100_000):
            action = lookup.next(now)
            if isinstance(action, Finished):
                break
            if isinstance(action, SendRequest):
                queue.append(action)
                continue
            asked = queue.popleft()
            peer = net.index_of[asked.peer.peer_id]
            server = net.server(peer, now)
            response = handle_request(server, request, me.peer_id, now)
            requests += 1
            _asked_by(net, peer, me, now)
            assert response is not None  # FIND_NODE always has an answer
            closer = [net.contacts[net.index_of[info.peer_id]] for info in response.closer_peers]
            lookup.on_success(asked.peer.peer_id, closer, now)
            _answered(net, node, net.contacts[peer], now)
    for node in nodes:
        requests += _refresh_once(net, node, rng, now)
    return requests


def _refresh_once(net: SimNetwork, node: int, rng: random.Random, now: float) -> int:
    table = net.server(node, now).table
    me = net.contacts[node]
    occupied = [stats.index for stats in table.occupancy() if stats.size]
    if not occupied:
        return 0
    requests = 0
    for index in range(KEY_BITS - 1, min(occupied) - 1, -1):
        key = random_key_in_bucket(me.key, index, rng)
        asked: set[int] = set()
        # A few rounds, because the first peer asked may know nobody in
        # that part of the key space yet (it may have joined moments ago).
        for _ in range(_REFRESH_ROUNDS):
            nearest = [
                net.index_of[c.peer_id] for c in table.closest(key, _REFRESH_ROUNDS + 1)
            ]
            fresh = [peer for peer in nearest if peer not in asked]
            if not fresh:
                break
            peer = fresh[0]
            asked.add(peer)
            server = net.server(peer, now)
            requests += 1
            _asked_by(net, peer, me, now)
            for contact in server.table.closest(key, net.routing.k, exclude=me.peer_id):
                _answered(net, node, contact, now)
            if _bucket_size(table, index) >= net.routing.k:
                break
    return requests


def _bucket_size(table: RoutingTable, index: int) -> int:
    return next((s.size for s in table.occupancy() if s.index == index), 0)
