"""The pure Kademlia behaviour: events in, actions out, at fixed times."""

from __future__ import annotations

import random

import pytest

from overlay.kad.behaviour import (
    BehaviourConfig,
    CheckPeer,
    KadBehaviour,
    PingNeeded,
    ProbeConnection,
    RefreshBuckets,
    StartBootstrap,
    VerifyPeer,
)
from overlay.kad.keyspace import Contact, fake_peer_id, peer_key
from overlay.kad.policy import FailureKind
from overlay.kad.routing import RoutingConfig, RoutingTable
from tests.kad.helpers import NOW, contact_in_bucket

LOCAL = peer_key(fake_peer_id(random.Random(42)))


def behaviour(k: int = 20, *, rebootstrap: bool = False, seed: int = 1) -> KadBehaviour:
    table = RoutingTable(LOCAL, RoutingConfig(k=k), random.Random(seed), NOW)
    return KadBehaviour(table, random.Random(seed), BehaviourConfig(rebootstrap=rebootstrap))


def far(count: int, seed: int = 2) -> list[Contact]:
    rng = random.Random(seed)
    return [contact_in_bucket(LOCAL, 255, rng) for _ in range(count)]


def test_an_identified_server_enters_only_after_it_answered_a_check() -> None:
    node = behaviour()
    [peer] = far(1)
    node.on_identified(peer, is_server=True, now=NOW)
    assert node.poll(NOW) == [VerifyPeer(peer)]
    assert peer.peer_id not in node.table
    # Identified again while the check runs: still one check.
    node.on_identified(peer, is_server=True, now=NOW)
    assert node.poll(NOW) == []
    seen = Contact(peer.peer_id, peer.key, peer.addrs, (b"4abc",))
    node.on_check_result(peer.peer_id, True, NOW + 0.1, seen=seen)
    assert node.table.get(peer.peer_id) == seen  # grouped as observed
    assert node.checking == set()


def test_a_silent_identified_peer_stays_out_and_is_not_evicted_as_a_member() -> None:
    node = behaviour()
    [peer] = far(1)
    node.on_identified(peer, is_server=True, now=NOW)
    node.poll(NOW)
    node.on_check_result(peer.peer_id, False, NOW + 1)
    assert peer.peer_id not in node.table
    assert node.evictions == 0 and node.checks_failed == 1


def test_a_client_is_dropped_and_a_member_identified_again_is_refreshed() -> None:
    node = behaviour()
    a, b = far(2)
    node.on_answered(a, NOW)
    node.on_answered(b, NOW)
    node.on_identified(a, is_server=True, now=NOW + 1)
    assert node.poll(NOW + 1) == []  # a member needs no check
    assert [c.peer_id for c in node.table.contacts()] == [b.peer_id, a.peer_id]
    node.on_identified(b, is_server=False, now=NOW + 2)
    assert b.peer_id not in node.table


def test_an_answer_samples_the_round_trip() -> None:
    node = behaviour()
    [peer] = far(1)
    node.on_answered(peer, NOW, rtt=0.08)
    estimate = node.rtt.peer(peer.peer_id)
    assert estimate is not None and estimate.srtt == pytest.approx(0.08)
    assert peer.peer_id in node.table


def test_a_full_bucket_checks_its_oldest_and_a_dead_one_is_replaced() -> None:
    node = behaviour(k=2)
    oldest, second, newcomer = far(3)
    node.on_answered(oldest, NOW)
    node.on_answered(second, NOW)
    node.on_answered(newcomer, NOW + 1)
    [check] = node.poll(NOW + 1)
    assert isinstance(check, PingNeeded) and check.contact == oldest
    assert node.next_deadline() == check.deadline
    node.on_check_result(oldest.peer_id, False, NOW + 2)
    members = {c.peer_id for c in node.table.contacts()}
    assert members == {second.peer_id, newcomer.peer_id}


def test_a_live_oldest_entry_keeps_its_place_and_the_newcomer_waits() -> None:
    node = behaviour(k=2)
    oldest, second, newcomer = far(3)
    for contact in (oldest, second, newcomer):
        node.on_answered(contact, NOW)
    node.poll(NOW)
    node.on_check_result(oldest.peer_id, True, NOW + 0.1)
    assert {c.peer_id for c in node.table.contacts()} == {oldest.peer_id, second.peer_id}


def test_an_unanswered_bucket_check_expires_on_the_timer() -> None:
    node = behaviour(k=1)
    old, new = far(2)
    node.on_answered(old, NOW)
    node.on_answered(new, NOW)
    [check] = node.poll(NOW)
    assert isinstance(check, PingNeeded)
    assert node.poll(check.deadline - 0.01) == []
    assert old.peer_id in node.table
    node.poll(check.deadline)
    assert old.peer_id not in node.table and new.peer_id in node.table


@pytest.mark.parametrize(
    ("kind", "connected", "evicted", "action"),
    [
        (FailureKind.UNREACHABLE, False, True, None),
        (FailureKind.TIMEOUT, False, True, None),
        (FailureKind.TIMEOUT, True, False, ProbeConnection),
        (FailureKind.RESET, True, False, None),  # overloaded, not dead
        (FailureKind.RESET, False, True, None),
        (FailureKind.LOCAL, False, False, None),
    ],
)
def test_failures_evict_except_overload_and_a_live_connection_is_probed(
    kind: FailureKind, connected: bool, evicted: bool, action: type | None
) -> None:
    node = behaviour()
    [peer] = far(1)
    node.on_answered(peer, NOW)
    node.on_request_failed(peer.peer_id, kind, connected=connected, now=NOW + 1)
    assert (peer.peer_id not in node.table) is evicted
    actions = node.poll(NOW + 1)
    assert [type(a) for a in actions] == ([action] if action else [])
    assert node.evictions == int(evicted)


def test_a_failed_probe_evicts_and_the_peer_is_not_asked_on_hearsay() -> None:
    node = behaviour()
    [peer] = far(1)
    node.on_answered(peer, NOW)
    node.on_request_failed(peer.peer_id, FailureKind.TIMEOUT, connected=True, now=NOW)
    assert node.poll(NOW) == [ProbeConnection(peer.peer_id)]
    node.on_check_result(peer.peer_id, False, NOW + 1)
    assert peer.peer_id not in node.table
    assert node.worth_asking([peer], NOW + 2) == []
    # It answers by itself later: forgiven.
    node.on_answered(peer, NOW + 3)
    assert node.worth_asking([peer], NOW + 4) == [peer]


def test_a_silent_close_is_checked_and_a_departure_evicts_at_once() -> None:
    node = behaviour()
    a, b = far(2)
    node.on_answered(a, NOW)
    node.on_answered(b, NOW)
    node.on_closed(a.peer_id, going_away=False, silent=True, now=NOW)
    assert node.poll(NOW) == [CheckPeer(a)]
    node.on_check_result(a.peer_id, True, NOW + 1)
    assert a.peer_id in node.table
    node.on_closed(b.peer_id, going_away=True, silent=False, now=NOW + 1)
    assert b.peer_id not in node.table and node.poll(NOW + 1) == []


def test_a_check_cancelled_by_its_driver_decides_nothing() -> None:
    node = behaviour()
    [peer] = far(1)
    node.on_answered(peer, NOW)
    node.on_closed(peer.peer_id, going_away=False, silent=True, now=NOW)
    node.poll(NOW)
    node.forget_check(peer.peer_id)
    assert peer.peer_id in node.table and not node.checking
    node.on_closed(peer.peer_id, going_away=False, silent=True, now=NOW + 1)
    assert node.poll(NOW + 1) == [CheckPeer(peer)]


def test_an_empty_table_bootstraps_again_backing_off() -> None:
    node = behaviour(rebootstrap=True)
    node.start_bootstrap()
    node.on_bootstrap_finished(NOW)
    first = node.next_deadline()
    assert first is not None and NOW + 0.5 <= first <= NOW + 1.0
    assert node.poll(first - 0.01) == []
    assert node.poll(first) == [StartBootstrap()]
    assert node.bootstrapping and node.poll(first + 100) == []  # one at a time
    node.on_bootstrap_finished(first + 1)
    second = node.next_deadline()
    assert second is not None and first + 1 + 1.0 <= second <= first + 1 + 2.0
    # A bootstrap that found someone stops the retries.
    node.poll(second)
    node.on_answered(far(1)[0], second + 0.5)
    node.on_bootstrap_finished(second + 1)
    assert all(not isinstance(a, StartBootstrap) for a in node.poll(second + 1000))


def test_a_node_without_bootstrap_peers_never_bootstraps() -> None:
    node = behaviour()
    node.on_bootstrap_finished(NOW)
    node.on_timer(NOW + 10_000)
    assert node.next_deadline() is None
    assert node.poll(NOW + 10_000) == []


def test_due_buckets_are_refreshed() -> None:
    node = behaviour()
    node.on_answered(far(1)[0], NOW)
    due = node.next_deadline()
    assert due == NOW + RoutingConfig().refresh_interval
    actions = node.poll(due)
    assert len(actions) == 1 and isinstance(actions[0], RefreshBuckets)
    assert actions[0].targets and node.poll(due) == []


def test_the_same_events_give_the_same_actions() -> None:
    def script(seed: int) -> list[object]:
        node = behaviour(k=3, rebootstrap=True, seed=seed)
        trace: list[object] = []
        for i, contact in enumerate(far(12, seed=5)):
            node.on_answered(contact, NOW + i)
            if i % 4 == 3:
                node.on_request_failed(contact.peer_id, FailureKind.TIMEOUT, connected=True, now=NOW + i)
            trace.extend(node.poll(NOW + i))
        return trace

    assert script(3) == script(3)
