"""Lookups bounded in time: per-request timeouts from a callable, an overall
deadline, and a result that says how many of the closest peers answered."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from overlay.identity import PeerId
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import Finished, Lookup, LookupConfig, LookupKind, LookupResult, SendRequest, Waiting
from overlay.kad.messages import KadMessage
from tests.kad.helpers import NOW, Cluster, brute_closest


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster(200, seed=11)


def drive(
    lookup: Lookup,
    answer: Callable[[SendRequest], KadMessage | None],
    cluster: Cluster,
    silent: set[PeerId],
    latency: float = 0.01,
) -> tuple[LookupResult, float]:
    """Virtual time: answers arrive ``latency`` after the request, silent
    peers never answer; returns the result and the time it finished."""
    now = NOW
    pending: list[tuple[float, SendRequest]] = []
    for _ in range(10_000):
        action = lookup.next(now)
        if isinstance(action, Finished):
            return action.result, now
        if isinstance(action, SendRequest):
            if action.peer.peer_id not in silent:
                pending.append((now + latency, action))
            continue
        assert isinstance(action, Waiting)
        wake = [at for at, _ in pending]
        if action.deadline is not None:
            wake.append(action.deadline)
        assert wake, "the lookup waits for nothing"
        now = max(now, min(wake))
        due = [p for p in pending if p[0] <= now]
        pending = [p for p in pending if p[0] > now]
        for _, request in due:
            message = answer(request)
            assert message is not None
            lookup.on_success(
                request.peer.peer_id,
                [cluster.by_id[info.peer_id] for info in message.closer_peers],
                now,
            )
    raise AssertionError("lookup did not finish")


def start(cluster: Cluster, origin: Contact, target: bytes, **kw: object) -> Lookup:
    table = cluster.servers[origin.peer_id].table
    seeds = table.closest(kad_key(target), 20)
    return Lookup(LookupKind.FIND_NODE, target, seeds, LookupConfig(), local_key=origin.key, **kw)  # type: ignore[arg-type]


def responder(cluster: Cluster, origin: Contact, target: bytes) -> Callable[[SendRequest], KadMessage | None]:
    return lambda request: cluster.answer(LookupKind.FIND_NODE, target, request.peer.peer_id, origin.peer_id)


def test_silent_peers_do_not_hold_the_lookup_open(cluster: Cluster) -> None:
    origin, target = cluster.contacts[0], cluster.contacts[100]
    key = target.peer_id.multihash
    others = [c for c in cluster.contacts if c is not origin]
    truth = brute_closest(others, target.key, 25)
    silent = {c.peer_id for c in truth[:5]}  # five of the very closest crashed
    lookup = start(cluster, origin, key, timeout_for=lambda contact: 0.3, deadline=NOW + 10.0)
    result, finished_at = drive(lookup, responder(cluster, origin, key), cluster, silent)
    # Each silent peer costs one 0.3 s timeout at most, overlapping: far
    # below the 10 s deadline and far below five sequential timeouts.
    assert finished_at - NOW < 1.5
    assert not result.deadline_reached
    # The live closest, in order, without the crashed ones (answers name
    # only peers closer than the responder, so fewer than k may be known).
    found = [c.peer_id for c in result.closest]
    assert len(found) >= 15 and found == [c.peer_id for c in truth[5 : 5 + len(found)]]
    assert result.closest_failed == 5
    assert result.closest_answered == len(found) and result.closest_silent == 0
    assert result.complete


def test_requests_take_their_timeout_from_the_callable(cluster: Cluster) -> None:
    origin, target = cluster.contacts[1], cluster.contacts[50]
    seen: list[Contact] = []

    def timeout_for(contact: Contact) -> float:
        seen.append(contact)
        return 0.25

    lookup = start(cluster, origin, target.peer_id.multihash, timeout_for=timeout_for)
    first = lookup.next(NOW)
    assert isinstance(first, SendRequest) and first.deadline == NOW + 0.25
    assert seen == [first.peer]


def test_the_deadline_ends_the_lookup_and_reports_who_answered(cluster: Cluster) -> None:
    origin, target = cluster.contacts[2], cluster.contacts[70]
    key = target.peer_id.multihash
    # Everyone is silent and the per-peer timeout is longer than the deadline.
    everyone = {c.peer_id for c in cluster.contacts}
    lookup = start(cluster, origin, key, timeout_for=lambda contact: 30.0, deadline=NOW + 2.0)
    result, finished_at = drive(lookup, responder(cluster, origin, key), cluster, everyone)
    assert finished_at == NOW + 2.0
    assert result.deadline_reached and not result.complete
    assert result.closest_answered == 0
    assert result.closest_silent == 3  # alpha requests were out, still within their timeout
    assert result.closest_silent + result.closest_unasked == 20
    # Every request's deadline is capped by the lookup's.
    assert lookup.next(NOW + 100.0) == Finished(result)


def test_a_converged_lookup_reports_a_complete_window(cluster: Cluster) -> None:
    origin, target = cluster.contacts[3], cluster.contacts[90]
    key = target.peer_id.multihash
    lookup = start(cluster, origin, key, deadline=NOW + 60.0)
    result, _ = drive(lookup, responder(cluster, origin, key), cluster, set())
    assert result.complete and result.closest_answered == 20
    assert result.closest_failed == 0 and not result.deadline_reached


def test_the_deadline_answers_even_between_request_timeouts(cluster: Cluster) -> None:
    origin, target = cluster.contacts[4], cluster.contacts[10]
    lookup = start(cluster, origin, target.peer_id.multihash, timeout_for=lambda c: 5.0, deadline=NOW + 1.0)
    while isinstance(action := lookup.next(NOW), SendRequest):
        assert action.deadline == NOW + 1.0
    assert action == Waiting(NOW + 1.0)
