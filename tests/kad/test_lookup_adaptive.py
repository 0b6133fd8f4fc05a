"""Adaptive disjoint paths (issue #10): one path until evidence of lies,
then one more disjoint path per path that showed some."""

from __future__ import annotations

import pytest

from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import Lookup, LookupConfig, LookupKind, SendRequest
from overlay.kad.messages import KadMessage, MessageType, PeerInfo
from overlay.kad.records import Record, immutable_key
from tests.kad.helpers import NOW, Cluster, brute_closest, run_lookup

ADAPTIVE = LookupConfig(disjoint_paths=4, adaptive_paths=True)


@pytest.fixture(scope="module")
def published() -> tuple[Cluster, bytes, bytes]:
    """A cluster whose 8 peers closest to a /v/ key hold its record."""
    cluster = Cluster(200, seed=41)
    value = b"adaptive paths"
    key = immutable_key(value)
    for holder in brute_closest(cluster.contacts[1:], kad_key(key), 8):
        cluster.servers[holder.peer_id].records.put(Record(key, value), None, NOW)
    return cluster, key, value


def get(cluster: Cluster, key: bytes, config: LookupConfig, forgers: frozenset[Contact] = frozenset()):  # type: ignore[no-untyped-def]
    origin = cluster.contacts[0]
    seeds = cluster.servers[origin.peer_id].table.closest(kad_key(key), config.k)
    lookup = Lookup(LookupKind.GET_VALUE, key, seeds, config, local_key=origin.key,
                    registry=cluster.registry, validation_time=NOW)

    def respond(request: SendRequest) -> KadMessage | None:
        answer = cluster.answer(LookupKind.GET_VALUE, key, request.peer.peer_id, origin.peer_id)
        if request.peer in forgers and answer is not None:
            return KadMessage(answer.type, key, record=Record(key, b"forged"), closer_peers=answer.closer_peers)
        return answer

    return run_lookup(lookup, respond, lambda info: cluster.by_id[info.peer_id])


def test_without_evidence_adaptive_costs_exactly_one_path(published: tuple[Cluster, bytes, bytes]) -> None:
    cluster, key, value = published
    single, single_sent = get(cluster, key, LookupConfig())
    adaptive, adaptive_sent = get(cluster, key, ADAPTIVE)
    assert adaptive.record == single.record == Record(key, value)
    assert adaptive.paths == 1 and {s.path for s in adaptive_sent} == {0}
    assert [s.peer for s in adaptive_sent] == [s.peer for s in single_sent]
    assert adaptive.messages == single.messages


def test_an_invalid_record_opens_a_second_path_from_unasked_seeds(published: tuple[Cluster, bytes, bytes]) -> None:
    cluster, key, value = published
    origin = cluster.contacts[0]
    seeds = cluster.servers[origin.peer_id].table.closest(kad_key(key), 20)
    lookup = Lookup(LookupKind.GET_VALUE, key, seeds, ADAPTIVE, local_key=origin.key,
                    registry=cluster.registry, validation_time=NOW)
    first = lookup.next(NOW)
    assert isinstance(first, SendRequest) and first.path == 0
    second, third = lookup.next(NOW), lookup.next(NOW)
    assert isinstance(second, SendRequest) and isinstance(third, SendRequest)
    far = cluster.by_id[cluster.contacts[150].peer_id]  # named by the forger only
    lookup.on_success(first.peer.peer_id, [far], NOW, record=Record(key, b"forged"))
    sends = []
    action = lookup.next(NOW)
    while isinstance(action, SendRequest):
        sends.append(action)
        action = lookup.next(NOW)
    # Path 0 refills its freed slot; path 1 opens with alpha requests.
    assert [s.path for s in sends] == [0, 1, 1, 1]
    # The new path starts from seeds nobody asked, the closest first (kept
    # from path 0), and never from a peer the forger named.
    unasked = [s for s in sorted(seeds, key=lambda c: c.key ^ kad_key(key))
               if s not in {first.peer, second.peer, third.peer}]
    assert sends[1].peer == unasked[0] and sends[0].peer != unasked[0]
    assert all(s.peer in unasked for s in sends[1:]) and far not in {s.peer for s in sends[1:]}
    assert lookup.finish().paths == 2


def test_forgers_on_every_first_hop_do_not_hide_the_record(published: tuple[Cluster, bytes, bytes]) -> None:
    cluster, key, value = published
    holders = set(brute_closest(cluster.contacts[1:], kad_key(key), 8))
    origin = cluster.contacts[0]
    seeds = cluster.servers[origin.peer_id].table.closest(kad_key(key), 20)
    # Everyone the first path can reach before a holder forges.
    forgers = frozenset(s for s in seeds[:3]) | frozenset(c for c in cluster.contacts if c not in holders
                                                           and (c.key ^ kad_key(key)) < (seeds[2].key ^ kad_key(key)))
    single, _ = get(cluster, key, LookupConfig(), forgers)
    adaptive, sent = get(cluster, key, ADAPTIVE, forgers)
    assert adaptive.record == Record(key, value)
    assert adaptive.paths >= 2 and adaptive.invalid_peers
    assert len({s.peer for s in sent}) == len(sent)  # disjoint: nobody asked twice
    assert single.messages < adaptive.messages


def test_a_miss_widens_to_every_path() -> None:
    cluster = Cluster(200, seed=43)
    missing = immutable_key(b"nobody stored this")
    single, _ = get(cluster, missing, LookupConfig())
    adaptive, sent = get(cluster, missing, ADAPTIVE)
    assert single.record is None and adaptive.record is None
    # An eclipse hides a record by silence, so an empty path is evidence too.
    assert adaptive.paths == 4
    assert {s.path for s in sent} == {0, 1, 2, 3}
    assert len({s.peer for s in sent}) == len(sent)


def test_conflicting_valid_records_are_evidence() -> None:
    cluster = Cluster(200, seed=47)
    key = b"/seq/x"

    class Seq:
        def validate(self, key: bytes, value: bytes, now: float) -> None:
            pass

        def select(self, key: bytes, values: object) -> int:
            return 0

    cluster.registry.register("seq", Seq())
    for i, holder in enumerate(brute_closest(cluster.contacts[1:], kad_key(key), 8)):
        cluster.servers[holder.peer_id].records.put(Record(key, b"a" if i % 2 else b"b"), None, NOW)
    agreeing = LookupConfig(disjoint_paths=4, adaptive_paths=True, quorum=0)
    result, _ = get(cluster, key, agreeing)
    assert result.valid_records >= 2 and result.paths >= 2
    for i, holder in enumerate(brute_closest(cluster.contacts[1:], kad_key(key), 8)):
        cluster.servers[holder.peer_id].records.put(Record(key, b"a"), None, NOW)
    same, _ = get(cluster, key, agreeing)
    assert same.valid_records >= 2 and same.paths == 1


def eclipse(config: LookupConfig) -> tuple[bool, int]:
    """Seeds: three liars near the target and one honest peer far away;
    liars answer with the liars closest to the target."""
    cluster = Cluster(100, seed=21, k=100)
    target = cluster.contacts[0]
    key = target.peer_id.multihash
    liars = {c.peer_id for i, c in enumerate(cluster.contacts) if i % 10 < 7 and i != 0}
    near = [c for c in cluster.contacts if c.peer_id in liars and (c.key ^ target.key).bit_length() < 256][:3]
    honest_far = next(c for c in cluster.contacts[1:] if c.peer_id not in liars
                      and (c.key ^ target.key).bit_length() == 256)
    origin = next(c for c in cluster.contacts[1:] if c.peer_id not in liars and c is not honest_far)
    liar_contacts = sorted((c for c in cluster.contacts if c.peer_id in liars), key=lambda c: c.key ^ target.key)

    def respond(request: SendRequest) -> KadMessage | None:
        if request.peer.peer_id in liars:
            closer = tuple(PeerInfo(c.peer_id) for c in liar_contacts[:20])
            return KadMessage(MessageType.FIND_NODE, key, closer_peers=closer)
        return cluster.answer(LookupKind.FIND_NODE, key, request.peer.peer_id, origin.peer_id)

    lookup = Lookup(LookupKind.FIND_NODE, key, [*near, honest_far], config, local_key=origin.key)
    result, _ = run_lookup(lookup, respond, lambda info: cluster.by_id[info.peer_id])
    return result.target_found, result.paths


def test_find_peer_widens_when_its_path_ends_without_the_target() -> None:
    assert eclipse(LookupConfig(stop_when_found=True)) == (False, 1)
    assert eclipse(LookupConfig(stop_when_found=True, disjoint_paths=2, adaptive_paths=True)) == (True, 2)


def test_a_plain_find_node_has_no_evidence_and_keeps_one_path() -> None:
    # A lookup of a key (not a peer) cannot tell a captured path from a
    # good one: it stays one path (a PUT that must resist liars asks for
    # plain disjoint paths).
    assert eclipse(LookupConfig(disjoint_paths=2, adaptive_paths=True)) == (False, 1)


def test_adaptive_needs_room_to_widen() -> None:
    with pytest.raises(ValueError):
        LookupConfig(adaptive_paths=True)
