"""The routing table's "recently failed" set: evicted at once, kept out
while others keep naming it, forgiven when it proves alive by itself."""

from __future__ import annotations

import random

from overlay.kad.keyspace import fake_peer_id, peer_key
from overlay.kad.routing import AddOutcome, RoutingConfig, RoutingTable
from tests.kad.helpers import NOW, contact_in_bucket

LOCAL = peer_key(fake_peer_id(random.Random(99)))


def table(**overrides: float) -> RoutingTable:
    return RoutingTable(LOCAL, RoutingConfig(**overrides), random.Random(5), NOW)  # type: ignore[arg-type]


def test_a_failed_peer_leaves_at_once_and_a_replacement_takes_its_place() -> None:
    t = table(k=2)
    rng = random.Random(1)
    first, second, spare = (contact_in_bucket(LOCAL, 255, rng) for _ in range(3))
    t.add(first, NOW)
    t.add(second, NOW)
    assert t.add(spare, NOW).outcome is AddOutcome.PENDING  # cached as a replacement
    assert t.mark_failed(first.peer_id, NOW) == spare
    assert first.peer_id not in t and spare.peer_id in t
    assert t.recently_failed(first.peer_id, NOW + 1)
    assert first not in t.closest(first.key, 20)


def test_hearsay_does_not_bring_a_failed_peer_back_but_its_own_answer_does() -> None:
    t = table(failed_ttl=60.0)
    dead = contact_in_bucket(LOCAL, 254, random.Random(2))
    t.add(dead, NOW)
    t.mark_failed(dead.peer_id, NOW)
    assert t.load([dead]) == 0 and dead.peer_id not in t
    # It answered us itself: alive after all.
    assert t.add(dead, NOW + 5).outcome is AddOutcome.ADDED
    assert not t.recently_failed(dead.peer_id, NOW + 5)


def test_the_failed_mark_expires_and_is_bounded() -> None:
    t = table(failed_ttl=30.0, max_failed=2)
    rng = random.Random(3)
    peers = [contact_in_bucket(LOCAL, 255, rng) for _ in range(3)]
    t.mark_failed(peers[0].peer_id, NOW)
    assert t.recently_failed(peers[0].peer_id, NOW + 29.9)
    assert not t.recently_failed(peers[0].peer_id, NOW + 30.0)
    for contact in peers:
        t.mark_failed(contact.peer_id, NOW + 40)
    assert not t.recently_failed(peers[0].peer_id, NOW + 41)  # pushed out by the cap
    assert t.recently_failed(peers[2].peer_id, NOW + 41)


def test_an_unanswered_liveness_check_counts_as_a_failure() -> None:
    t = table(k=1, ping_timeout=2.0)
    rng = random.Random(4)
    old, new = contact_in_bucket(LOCAL, 255, rng), contact_in_bucket(LOCAL, 255, rng)
    t.add(old, NOW)
    ping = t.add(new, NOW).ping
    assert ping is not None and ping.contact == old
    t.on_timer(NOW + 2.0)
    assert new.peer_id in t and old.peer_id not in t
    assert t.recently_failed(old.peer_id, NOW + 3)
