"""Bounded retries in the pure lookup: a peer whose request timed out is
asked again (``LookupConfig.retries`` times, with a fresh timeout), a peer
that answered or failed with an error never is, and a retry never runs
past the lookup's deadline."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from overlay.identity import PeerId
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import Finished, Lookup, LookupConfig, LookupKind, LookupResult, SendRequest, Waiting
from tests.kad.helpers import NOW, Cluster


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster(150, seed=23)


def start(cluster: Cluster, origin: Contact, target: Contact, config: LookupConfig, **kw: object) -> Lookup:
    key = target.peer_id.multihash
    seeds = cluster.servers[origin.peer_id].table.closest(kad_key(key), config.k)
    return Lookup(LookupKind.FIND_NODE, key, seeds, config, local_key=origin.key, **kw)  # type: ignore[arg-type]


def closer(cluster: Cluster, origin: Contact, target: Contact, peer: PeerId) -> list[Contact]:
    answer = cluster.answer(LookupKind.FIND_NODE, target.peer_id.multihash, peer, origin.peer_id)
    assert answer is not None
    return [cluster.by_id[info.peer_id] for info in answer.closer_peers]


def sends(lookup: Lookup, now: float) -> list[SendRequest]:
    out = []
    while isinstance(action := lookup.next(now), SendRequest):
        out.append(action)
    return out


def test_a_timed_out_peer_is_asked_once_more_with_a_fresh_timeout(cluster: Cluster) -> None:
    origin, target = cluster.contacts[0], cluster.contacts[80]
    lookup = start(cluster, origin, target, LookupConfig(alpha=1, slow_after=1.0, peer_timeout=1.0))
    [first] = sends(lookup, NOW)
    assert first.attempt == 0 and first.deadline == NOW + 1.0
    assert lookup.next(NOW + 0.9) == Waiting(NOW + 1.0)
    # Its deadline passes: the same peer again, a fresh second to answer.
    [retry] = sends(lookup, NOW + 1.0)
    assert retry.peer == first.peer and retry.attempt == 1 and retry.deadline == NOW + 2.0
    # The retry times out too: now it counts as failed and others are asked.
    [other] = sends(lookup, NOW + 2.0)
    assert other.peer != first.peer and other.attempt == 0
    result = lookup.finish()
    assert result.failed == 1 and result.retries == 1 and result.messages == 3
    assert result.queried == (first.peer.peer_id, other.peer.peer_id)


def test_the_retry_answer_counts_as_an_answer(cluster: Cluster) -> None:
    origin, target = cluster.contacts[1], cluster.contacts[60]
    lookup = start(cluster, origin, target, LookupConfig(alpha=1, slow_after=1.0, peer_timeout=1.0))
    [first] = sends(lookup, NOW)
    [retry] = sends(lookup, NOW + 1.0)
    lookup.on_success(retry.peer.peer_id, closer(cluster, origin, target, retry.peer.peer_id), NOW + 1.1)
    # The first attempt's own timeout, reported late by the driver, changes nothing.
    assert not lookup.on_failure(first.peer.peer_id, NOW + 1.2, timed_out=True, attempt=0)
    result = lookup.finish()
    assert result.answered == 1 and result.failed == 0 and result.retries == 1
    assert first.peer in result.closest


def test_a_driver_reported_timeout_is_retried_and_a_stale_one_ignored(cluster: Cluster) -> None:
    origin, target = cluster.contacts[2], cluster.contacts[40]
    lookup = start(cluster, origin, target, LookupConfig(alpha=1, slow_after=1.0, peer_timeout=5.0))
    [first] = sends(lookup, NOW)
    # The driver's request timed out before the lookup's own deadline.
    assert not lookup.on_failure(first.peer.peer_id, NOW + 0.5, timed_out=True, attempt=0)
    [retry] = sends(lookup, NOW + 0.5)
    assert retry.peer == first.peer and retry.attempt == 1 and retry.deadline == NOW + 5.5
    # A failure of the first attempt arriving now is stale: the retry is out.
    assert not lookup.on_failure(first.peer.peer_id, NOW + 0.6, attempt=0)
    assert lookup.next(NOW + 0.6) == Waiting(NOW + 5.5)
    # The retry's own timeout is final.
    assert lookup.on_failure(first.peer.peer_id, NOW + 1.0, timed_out=True, attempt=1)
    [other] = sends(lookup, NOW + 1.0)
    assert other.peer != first.peer
    assert lookup.finish().failed == 1


def test_a_peer_that_answered_late_is_not_retried(cluster: Cluster) -> None:
    origin, target = cluster.contacts[3], cluster.contacts[90]
    lookup = start(cluster, origin, target, LookupConfig(alpha=1, slow_after=1.0, peer_timeout=1.0))
    [first] = sends(lookup, NOW)
    # Timed out (the driver says so), then its answer arrives before the
    # lookup got round to the retry.
    assert not lookup.on_failure(first.peer.peer_id, NOW + 1.0, timed_out=True, attempt=0)
    lookup.on_success(first.peer.peer_id, closer(cluster, origin, target, first.peer.peer_id), NOW + 1.01)
    following = sends(lookup, NOW + 1.01)
    assert following and first.peer not in {s.peer for s in following}
    result = lookup.finish()
    assert result.retries == 0 and result.answered == 1 and result.failed == 0


def test_an_error_answer_is_never_retried(cluster: Cluster) -> None:
    origin, target = cluster.contacts[4], cluster.contacts[30]
    lookup = start(cluster, origin, target, LookupConfig(alpha=1, slow_after=1.0, peer_timeout=1.0))
    [first] = sends(lookup, NOW)
    assert lookup.on_failure(first.peer.peer_id, NOW + 0.1, attempt=0)  # refused, reset, unreachable
    [other] = sends(lookup, NOW + 0.1)
    assert other.peer != first.peer
    # Nor is a peer whose retry is pending and that then errors.
    assert not lookup.on_failure(other.peer.peer_id, NOW + 1.1, timed_out=True, attempt=0)
    assert lookup.on_failure(other.peer.peer_id, NOW + 1.2, attempt=0)
    after = sends(lookup, NOW + 1.2)
    assert after and {first.peer, other.peer}.isdisjoint({s.peer for s in after})
    result = lookup.finish()
    assert result.retries == 0 and result.failed == 2


def test_no_retry_when_its_timeout_would_outlive_the_deadline(cluster: Cluster) -> None:
    origin, target = cluster.contacts[5], cluster.contacts[70]
    config = LookupConfig(alpha=1, slow_after=1.0)
    lookup = start(cluster, origin, target, config, timeout_for=lambda c: 0.6, deadline=NOW + 1.0)
    [first] = sends(lookup, NOW)
    assert first.deadline == NOW + 0.6
    # At NOW + 0.6 a fresh 0.6 s would end at NOW + 1.2, past the deadline.
    following = sends(lookup, NOW + 0.6)
    assert [s.peer for s in following] != [first.peer] and following[0].attempt == 0
    assert following[0].deadline == NOW + 1.0  # capped as every request is
    assert lookup.finish().retries == 0


def test_retries_zero_gives_up_at_the_first_timeout(cluster: Cluster) -> None:
    origin, target = cluster.contacts[6], cluster.contacts[20]
    lookup = start(cluster, origin, target, LookupConfig(alpha=1, slow_after=1.0, peer_timeout=1.0, retries=0))
    [first] = sends(lookup, NOW)
    [other] = sends(lookup, NOW + 1.0)
    assert other.peer != first.peer
    assert lookup.on_failure(other.peer.peer_id, NOW + 1.5, timed_out=True, attempt=0)


def test_retries_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        LookupConfig(retries=-1)


@pytest.mark.parametrize("seed", range(12))
def test_lossy_runs_keep_every_retry_rule(cluster: Cluster, seed: int) -> None:
    """Virtual time with random latencies (some past the timeout) and lost
    messages: every rule checked on every request of whole lookups."""
    rng = random.Random(seed)
    retries = 1 + seed % 3
    origin = cluster.contacts[seed]
    target = cluster.contacts[100 + seed]
    deadline = NOW + 4.0
    lookup = start(cluster, origin, target, LookupConfig(peer_timeout=0.5, retries=retries),
                   deadline=deadline)
    now = NOW
    pending: list[tuple[float, SendRequest]] = []
    asked: Counter[PeerId] = Counter()
    answered: set[PeerId] = set()
    last_deadline: dict[PeerId, float] = {}
    result: LookupResult | None = None
    for _ in range(100_000):
        action = lookup.next(now)
        if isinstance(action, Finished):
            result = action.result
            break
        if isinstance(action, SendRequest):
            peer = action.peer.peer_id
            assert peer not in answered, f"seed {seed}: re-asked {peer} after it answered"
            assert action.attempt == asked[peer] <= retries, f"seed {seed}"
            if action.attempt:
                assert now >= last_deadline[peer], f"seed {seed}: retried before its timeout"
            # A retry gets its whole fresh timeout; a first request is capped.
            full = now + 0.5
            assert action.deadline == (full if action.attempt else min(full, deadline)) <= deadline
            asked[peer] += 1
            last_deadline[peer] = action.deadline
            if rng.random() >= 0.3:  # 30% of requests or answers lost
                pending.append((now + rng.choice((0.05, 0.2, 0.7)), action))
            continue
        assert isinstance(action, Waiting) and action.deadline is not None
        wake = [at for at, _ in pending if at <= action.deadline]
        now = min([action.deadline, *wake])
        for request in [r for at, r in pending if at <= now]:
            answered.add(request.peer.peer_id)
            lookup.on_success(request.peer.peer_id,
                              closer(cluster, origin, target, request.peer.peer_id), now)
        pending = [(at, r) for at, r in pending if at > now]
    assert result is not None, f"seed {seed}: lookup did not finish"
    assert now <= deadline
    assert result.messages == sum(asked.values())
    assert result.retries == result.messages - len(asked)
    assert result.retries > 0, f"seed {seed}: 30% loss and no retry"
