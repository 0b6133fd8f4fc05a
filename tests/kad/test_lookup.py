from __future__ import annotations

from collections.abc import Sequence

import pytest

from overlay.kad.errors import InvalidRecord, LookupStateError
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import Finished, Lookup, LookupConfig, LookupKind, SendRequest, Waiting
from overlay.kad.messages import KadMessage, MessageType, PeerInfo
from overlay.kad.records import Record
from tests.kad.helpers import NOW, Cluster, brute_closest, run_lookup


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster(300, seed=7)


def honest(cluster: Cluster, origin: Contact, kind: LookupKind, target: bytes):  # type: ignore[no-untyped-def]
    def respond(request: SendRequest) -> KadMessage | None:
        return cluster.answer(kind, target, request.peer.peer_id, origin.peer_id)

    return respond


def start(cluster: Cluster, origin: Contact, kind: LookupKind, target: bytes, config: LookupConfig, **kw: object) -> Lookup:
    table = cluster.servers[origin.peer_id].table
    seeds = table.closest(kad_key(target), config.k)
    return Lookup(kind, target, seeds, config, local_key=origin.key, registry=cluster.registry, validation_time=NOW, **kw)  # type: ignore[arg-type]


def to_contact(cluster: Cluster):  # type: ignore[no-untyped-def]
    return lambda info: cluster.by_id[info.peer_id]


def test_find_node_terminates_with_the_true_k_closest(cluster: Cluster) -> None:
    origin, target = cluster.contacts[0], cluster.contacts[123]
    config = LookupConfig()
    lookup = start(cluster, origin, LookupKind.FIND_NODE, target.peer_id.multihash, config)
    result, sent = run_lookup(lookup, honest(cluster, origin, LookupKind.FIND_NODE, target.peer_id.multihash), to_contact(cluster))
    others = [c for c in cluster.contacts if c is not origin]
    assert list(result.closest) == brute_closest(others, target.key, 20)
    assert result.target_found
    assert result.messages == len(sent) == len({s.peer.peer_id for s in sent})
    assert result.queried == tuple(s.peer.peer_id for s in sent)
    # Requests still in flight when the k closest had answered are not waited for.
    assert result.answered <= len(sent) and result.failed == 0
    assert 1 <= result.rounds <= 4
    assert origin.peer_id not in {s.peer.peer_id for s in sent}


def test_at_most_alpha_requests_in_flight(cluster: Cluster) -> None:
    origin, target = cluster.contacts[1], cluster.contacts[200]
    lookup = start(cluster, origin, LookupKind.FIND_NODE, target.peer_id.multihash,
                   LookupConfig(alpha=3, slow_after=1.0))
    sends = []
    action = lookup.next(NOW)
    while isinstance(action, SendRequest):
        sends.append(action)
        action = lookup.next(NOW)
    assert len(sends) == 3
    assert isinstance(action, Waiting) and action.deadline == NOW + 10.0
    # One answer frees exactly one slot.
    lookup.on_failure(sends[0].peer.peer_id, NOW)
    assert isinstance(lookup.next(NOW), SendRequest)
    assert isinstance(lookup.next(NOW), Waiting)


def test_slow_peer_stops_counting_after_its_timeout_and_late_answer_counts(cluster: Cluster) -> None:
    origin, target = cluster.contacts[2], cluster.contacts[150]
    key = target.peer_id.multihash
    config = LookupConfig(alpha=1, peer_timeout=5.0, retries=0, slow_after=1.0)  # retries: test_lookup_retry
    lookup = start(cluster, origin, LookupKind.FIND_NODE, key, config)
    first = lookup.next(NOW)
    assert isinstance(first, SendRequest)
    assert lookup.next(NOW + 4.9) == Waiting(NOW + 5.0)
    # At the deadline the slot is released and the next peer is asked.
    second = lookup.next(NOW + 5.0)
    assert isinstance(second, SendRequest) and second.peer != first.peer
    # The slow peer answers late: its answer is used, not discarded.
    answer = cluster.answer(LookupKind.FIND_NODE, key, first.peer.peer_id, origin.peer_id)
    assert answer is not None
    lookup.on_success(first.peer.peer_id, [cluster.by_id[i.peer_id] for i in answer.closer_peers], NOW + 6)
    result = lookup.finish()
    assert result.answered == 1 and result.failed == 0
    assert first.peer in result.closest


def test_lookup_finishes_although_one_peer_never_answers(cluster: Cluster) -> None:
    origin, target = cluster.contacts[3], cluster.contacts[42]
    key = target.peer_id.multihash
    lookup = start(cluster, origin, LookupKind.FIND_NODE, key, LookupConfig(peer_timeout=2.0))
    # One of the k closest never answers, so the lookup must get past it.
    others = [c for c in cluster.contacts if c is not origin]
    silent = brute_closest(others, target.key, 3)[1].peer_id
    asked_silent_at: float | None = None
    now = NOW
    pending: list[SendRequest] = []
    for _ in range(1000):
        action = lookup.next(now)
        if isinstance(action, Finished):
            break
        if isinstance(action, SendRequest):
            if action.peer.peer_id == silent:
                asked_silent_at = now
            else:
                pending.append(action)
            continue
        if pending:
            request = pending.pop(0)
            answer = cluster.answer(LookupKind.FIND_NODE, key, request.peer.peer_id, origin.peer_id)
            assert answer is not None
            lookup.on_success(request.peer.peer_id, [cluster.by_id[i.peer_id] for i in answer.closer_peers], now)
        else:
            assert action.deadline is not None
            now = action.deadline
    else:
        raise AssertionError("lookup never finished")
    result = action.result
    assert result.target_found and result.failed == 1
    assert asked_silent_at is not None
    assert now == asked_silent_at + 2.0  # waited for the silent peer one timeout, no more
    assert silent not in {c.peer_id for c in result.closest}


def test_empty_seed_list_finishes_at_once() -> None:
    lookup = Lookup(LookupKind.FIND_NODE, b"\x12\x20" + bytes(32), [], LookupConfig())
    action = lookup.next(NOW)
    assert isinstance(action, Finished) and action.result.closest == () and action.result.messages == 0


def test_answer_from_a_peer_never_asked_is_a_local_error(cluster: Cluster) -> None:
    origin = cluster.contacts[4]
    lookup = start(cluster, origin, LookupKind.FIND_NODE, cluster.contacts[9].peer_id.multihash, LookupConfig())
    stranger = cluster.contacts[5]
    seeded = {c.peer_id for c in cluster.servers[origin.peer_id].table.closest(kad_key(cluster.contacts[9].peer_id.multihash), 20)}
    if stranger.peer_id in seeded:
        stranger = next(c for c in cluster.contacts if c.peer_id not in seeded and c is not origin)
    with pytest.raises(LookupStateError):
        lookup.on_success(stranger.peer_id, [], NOW)
    # A duplicate answer is ignored rather than counted twice.
    request = lookup.next(NOW)
    assert isinstance(request, SendRequest)
    lookup.on_success(request.peer.peer_id, [], NOW)
    lookup.on_success(request.peer.peer_id, [], NOW)
    assert lookup.finish().answered == 1


# --- disjoint paths against liars --------------------------------------------


def liar_scenario(disjoint: int) -> tuple[bool, list[SendRequest]]:
    cluster = Cluster(100, seed=21, k=100)  # every honest node knows everyone
    target = cluster.contacts[0]
    key = target.peer_id.multihash
    liars = {c.peer_id for i, c in enumerate(cluster.contacts) if i % 10 < 7 and i != 0}
    near = lambda c: (c.key ^ target.key).bit_length() < 256  # noqa: E731
    honest_far = next(c for c in cluster.contacts[1:] if c.peer_id not in liars and not near(c))
    liars_near = [c for c in cluster.contacts if c.peer_id in liars and near(c)][:3]
    origin = next(c for c in cluster.contacts[1:] if c.peer_id not in liars and c is not honest_far)
    liar_contacts = sorted((c for c in cluster.contacts if c.peer_id in liars), key=lambda c: c.key ^ target.key)

    def respond(request: SendRequest) -> KadMessage | None:
        if request.peer.peer_id in liars:
            return KadMessage(MessageType.FIND_NODE, key, closer_peers=tuple(PeerInfo(c.peer_id) for c in liar_contacts[:20]))
        return cluster.answer(LookupKind.FIND_NODE, key, request.peer.peer_id, origin.peer_id)

    config = LookupConfig(disjoint_paths=disjoint)
    lookup = Lookup(LookupKind.FIND_NODE, key, [*liars_near, honest_far], config, local_key=origin.key)
    result, sent = run_lookup(lookup, respond, lambda info: cluster.by_id[info.peer_id])
    return result.target_found, sent


def test_single_path_is_eclipsed_by_colluding_liars() -> None:
    found, sent = liar_scenario(1)
    assert not found
    assert all(s.path == 0 for s in sent)


def test_disjoint_paths_find_the_target_despite_liars() -> None:
    found, sent = liar_scenario(2)
    assert found
    assert {s.path for s in sent} == {0, 1}
    # Disjoint: no peer was asked by two paths (nor twice by one).
    assert len({s.peer.peer_id for s in sent}) == len(sent)


# --- GET_VALUE: quorum, selector, correction ----------------------------------


class SeqValidator:
    """Values are b"<seq>:<payload>"; the highest sequence number wins."""

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        head, sep, _ = value.partition(b":")
        if not sep or not head.isdigit():
            raise InvalidRecord("not a sequenced value")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        return max(range(len(values)), key=lambda i: int(values[i].partition(b":")[0]))


def value_cluster() -> tuple[Cluster, bytes, list[Contact], Contact]:
    cluster = Cluster(200, seed=31)
    cluster.registry.register("seq", SeqValidator())
    key = b"/seq/name"
    closest = brute_closest(cluster.contacts[1:], kad_key(key), 8)
    for i, holder in enumerate(closest[1:6]):  # the very closest lacks it
        value = b"2:new" if i % 2 == 0 else b"1:old"
        cluster.servers[holder.peer_id].records.put(Record(key, value), None, NOW)
    return cluster, key, closest, cluster.contacts[0]


def forging_responder(cluster: Cluster, key: bytes, origin: Contact, forger: Contact):  # type: ignore[no-untyped-def]
    def respond(request: SendRequest) -> KadMessage | None:
        answer = cluster.answer(LookupKind.GET_VALUE, key, request.peer.peer_id, origin.peer_id)
        if request.peer == forger and answer is not None:
            return KadMessage(answer.type, key, record=Record(key, b"forged"), closer_peers=answer.closer_peers)
        return answer

    return respond


def test_get_value_selects_best_and_reports_peers_to_correct() -> None:
    cluster, key, closest, origin = value_cluster()
    forger = closest[7]
    lookup = start(cluster, origin, LookupKind.GET_VALUE, key, LookupConfig(quorum=0))
    result, _ = run_lookup(lookup, forging_responder(cluster, key, origin, forger), to_contact(cluster))
    assert result.record == Record(key, b"2:new")
    assert result.valid_records == 5
    stale = {closest[2].peer_id, closest[4].peer_id}
    assert {c.peer_id for c in result.outdated_peers} == stale | {forger.peer_id}
    assert [c.peer_id for c in result.invalid_peers] == [forger.peer_id]
    assert result.cache_peer == closest[0]


def test_get_value_stops_at_quorum() -> None:
    cluster, key, _, origin = value_cluster()
    full = start(cluster, origin, LookupKind.GET_VALUE, key, LookupConfig(quorum=0))
    full_result, _ = run_lookup(full, honest(cluster, origin, LookupKind.GET_VALUE, key), to_contact(cluster))
    quick = start(cluster, origin, LookupKind.GET_VALUE, key, LookupConfig(quorum=2))
    result, _ = run_lookup(quick, honest(cluster, origin, LookupKind.GET_VALUE, key), to_contact(cluster))
    assert result.quorum_reached and result.valid_records == 2
    assert result.messages < full_result.messages
    assert result.record is not None and result.record.value in (b"1:old", b"2:new")


def test_local_record_counts_towards_quorum() -> None:
    cluster, key, _, origin = value_cluster()
    lookup = start(cluster, origin, LookupKind.GET_VALUE, key, LookupConfig(quorum=1), local_record=Record(key, b"3:mine"))
    action = lookup.next(NOW)
    assert isinstance(action, Finished)
    assert action.result.record == Record(key, b"3:mine") and action.result.messages == 0


def test_get_value_without_registry_is_refused() -> None:
    with pytest.raises(ValueError):
        Lookup(LookupKind.GET_VALUE, b"/v/x", [], LookupConfig())


def test_get_providers_stops_after_enough_providers(cluster: Cluster) -> None:
    key = b"\x12\x20" + bytes(range(32))
    closest = brute_closest(cluster.contacts[1:], kad_key(key), 5)
    providers = [PeerInfo(c.peer_id) for c in cluster.contacts[250:253]]
    for holder in closest:
        for info in providers:
            cluster.servers[holder.peer_id].providers.add(key, info, NOW)
    origin = cluster.contacts[0]
    lookup = start(cluster, origin, LookupKind.GET_PROVIDERS, key, LookupConfig(max_providers=3))
    result, _ = run_lookup(lookup, honest(cluster, origin, LookupKind.GET_PROVIDERS, key), to_contact(cluster))
    assert {p.peer_id for p in result.providers} == {p.peer_id for p in providers}
    assert result.quorum_reached


def test_config_validation() -> None:
    for bad in ({"alpha": 0}, {"k": 0}, {"peer_timeout": 0}, {"disjoint_paths": 0}, {"quorum": -1}):
        with pytest.raises(ValueError):
            LookupConfig(**bad)  # type: ignore[arg-type]


def test_a_slow_request_frees_its_alpha_slot_yet_still_holds_the_end(cluster: Cluster) -> None:
    origin, target = cluster.contacts[3], cluster.contacts[160]
    key = target.peer_id.multihash
    config = LookupConfig(alpha=1, peer_timeout=1.0, retries=0, slow_after=0.3)
    lookup = start(cluster, origin, LookupKind.FIND_NODE, key, config)
    first = lookup.next(NOW)
    assert isinstance(first, SendRequest) and first.deadline == NOW + 1.0
    assert lookup.next(NOW + 0.29) == Waiting(NOW + 0.3)
    # Past 0.3 of its timeout the slot is free: the next peer is asked.
    second = lookup.next(NOW + 0.3)
    assert isinstance(second, SendRequest) and second.peer != first.peer
    # The slow peer's answer still counts.
    answer = cluster.answer(LookupKind.FIND_NODE, key, first.peer.peer_id, origin.peer_id)
    assert answer is not None
    closer = [cluster.by_id[p.peer_id] for p in answer.closer_peers]
    lookup.on_success(first.peer.peer_id, closer, NOW + 0.5)
    assert lookup.finish().answered == 1


def test_a_lone_slow_peer_is_waited_for_until_its_timeout(cluster: Cluster) -> None:
    origin, only = cluster.contacts[4], cluster.contacts[170]
    config = LookupConfig(alpha=3, peer_timeout=1.0, retries=0, slow_after=0.3)
    lookup = Lookup(LookupKind.FIND_NODE, only.peer_id.multihash, [only], config, local_key=origin.key)
    assert isinstance(lookup.next(NOW), SendRequest)
    assert lookup.next(NOW + 0.3) == Waiting(NOW + 1.0)  # slow, not given up
    action = lookup.next(NOW + 1.0)
    assert isinstance(action, Finished) and action.result.failed == 1
