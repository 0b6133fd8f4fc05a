import random

import pytest

from overlay.kad.keyspace import Contact, bucket_index, fake_peer_id, peer_key
from overlay.kad.routing import AddOutcome, RoutingConfig, RoutingTable
from tests.kad.helpers import NOW, brute_closest, contact_in_bucket, contacts, ip4, ip6

LOCAL = peer_key(fake_peer_id(random.Random(99)))


def table(**overrides: int) -> RoutingTable:
    return RoutingTable(LOCAL, RoutingConfig(**overrides), random.Random(5), NOW)


def fill_bucket(t: RoutingTable, index: int, count: int, seed: int = 3) -> list[Contact]:
    rng = random.Random(seed)
    added = []
    for _ in range(count):
        c = contact_in_bucket(LOCAL, index, rng)
        assert t.add(c, NOW).outcome is AddOutcome.ADDED
        added.append(c)
    return added


def test_add_then_update_moves_entry_to_most_recent() -> None:
    t = table(k=3)
    first, second = fill_bucket(t, 255, 2)
    assert t.add(first, NOW + 1).outcome is AddOutcome.UPDATED
    assert list(t.contacts()) == [second, first]
    assert len(t) == 2 and first.peer_id in t


def test_full_bucket_asks_for_ping_and_live_oldest_stays() -> None:
    t = table(k=2)
    oldest, newest = fill_bucket(t, 255, 2)
    newcomer = contact_in_bucket(LOCAL, 255, random.Random(50))
    result = t.add(newcomer, NOW)
    assert result.outcome is AddOutcome.PENDING
    assert result.ping is not None and result.ping.contact == oldest
    assert result.ping.deadline == NOW + t.config.ping_timeout
    # A second newcomer while the check is running only waits in the cache.
    other = contact_in_bucket(LOCAL, 255, random.Random(51))
    assert t.add(other, NOW).outcome is AddOutcome.CACHED
    assert t.on_ping_result(oldest.peer_id, True, NOW + 1) is None
    assert list(t.contacts()) == [newest, oldest]
    assert newcomer.peer_id not in t


def test_dead_oldest_is_replaced_by_most_recent_replacement() -> None:
    t = table(k=2)
    oldest, newest = fill_bucket(t, 255, 2)
    first = contact_in_bucket(LOCAL, 255, random.Random(60))
    second = contact_in_bucket(LOCAL, 255, random.Random(61))
    t.add(first, NOW)
    t.add(second, NOW)
    promoted = t.on_ping_result(oldest.peer_id, False, NOW + 1)
    assert promoted == second
    assert oldest.peer_id not in t and second.peer_id in t
    assert t.occupancy()[0].replacements == 1


def test_unanswered_ping_expires_on_timer_and_evicts() -> None:
    t = table(k=1, refresh_interval=10_000)
    (oldest,) = fill_bucket(t, 255, 1)
    newcomer = contact_in_bucket(LOCAL, 255, random.Random(70))
    ping = t.add(newcomer, NOW).ping
    assert ping is not None
    assert t.next_deadline() == ping.deadline
    t.on_timer(ping.deadline - 0.001)
    assert oldest.peer_id in t
    t.on_timer(ping.deadline)
    assert oldest.peer_id not in t and newcomer.peer_id in t


def test_seen_alive_while_checked_answers_the_check() -> None:
    t = table(k=1)
    (oldest,) = fill_bucket(t, 255, 1)
    t.add(contact_in_bucket(LOCAL, 255, random.Random(80)), NOW)
    assert t.add(oldest, NOW + 1).outcome is AddOutcome.UPDATED
    assert not t.occupancy()[0].pending_check
    assert t.on_ping_result(oldest.peer_id, False, NOW + 2) is None
    assert oldest.peer_id in t


def test_clients_and_self_never_enter() -> None:
    t = table()
    c = contacts(1)[0]
    assert t.add(c, NOW, is_server=False).outcome is AddOutcome.REJECTED_CLIENT
    assert c.peer_id not in t
    t.add(c, NOW)
    # A server that turns client is dropped.
    t.add(c, NOW, is_server=False)
    assert c.peer_id not in t
    me = Contact(fake_peer_id(random.Random(1)), LOCAL)
    assert t.add(me, NOW).outcome is AddOutcome.REJECTED_SELF


def test_ip_prefix_limit_per_bucket() -> None:
    t = table(max_per_group_per_bucket=2, max_per_group_per_table=10)
    rng = random.Random(4)
    outcomes = [
        t.add(contact_in_bucket(LOCAL, 255, rng, (ip4(8, 8, 4, i),)), NOW).outcome for i in range(3)
    ]
    assert outcomes == [AddOutcome.ADDED, AddOutcome.ADDED, AddOutcome.REJECTED_DIVERSITY]
    # Another /24 is fine, and so is the same /24 in another bucket.
    assert t.add(contact_in_bucket(LOCAL, 255, rng, (ip4(8, 8, 5, 1),)), NOW).outcome is AddOutcome.ADDED
    assert t.add(contact_in_bucket(LOCAL, 254, rng, (ip4(8, 8, 4, 9),)), NOW).outcome is AddOutcome.ADDED


def test_ip_prefix_limit_per_table_and_ipv6_48() -> None:
    t = table(max_per_group_per_bucket=2, max_per_group_per_table=3)
    rng = random.Random(5)
    results = [
        t.add(contact_in_bucket(LOCAL, 255 - i, rng, (ip6(b"\x20\x01\x0d\xb9\x00\x01", i + 1),)), NOW).outcome
        for i in range(4)
    ]
    assert results[:3] == [AddOutcome.ADDED] * 3
    assert results[3] is AddOutcome.REJECTED_DIVERSITY
    # Removing one frees the slot.
    victim = next(iter(t.contacts()))
    t.remove(victim.peer_id)
    again = contact_in_bucket(LOCAL, 250, rng, (ip6(b"\x20\x01\x0d\xb9\x00\x01", 9),))
    assert t.add(again, NOW).outcome is AddOutcome.ADDED


def test_private_and_loopback_addresses_are_exempt() -> None:
    t = table(max_per_group_per_bucket=1, max_per_group_per_table=1)
    rng = random.Random(6)
    for i in range(5):
        assert t.add(contact_in_bucket(LOCAL, 255, rng, (ip4(127, 0, 0, 1, 4000 + i),)), NOW).outcome is AddOutcome.ADDED
        assert t.add(contact_in_bucket(LOCAL, 254, rng, (ip4(192, 168, 1, i),)), NOW).outcome is AddOutcome.ADDED


def test_replacement_is_promoted_only_if_diverse_enough() -> None:
    t = table(k=1, max_per_group_per_bucket=1, max_per_group_per_table=1)
    rng = random.Random(8)
    holder = contact_in_bucket(LOCAL, 255, rng, (ip4(9, 9, 9, 1),))
    t.add(holder, NOW)
    other_bucket = contact_in_bucket(LOCAL, 254, rng, (ip4(1, 2, 3, 4),))
    t.add(other_bucket, NOW)
    same_group = contact_in_bucket(LOCAL, 255, rng, (ip4(1, 2, 3, 5),))
    assert t.add(same_group, NOW).outcome is AddOutcome.REJECTED_DIVERSITY
    fresh = contact_in_bucket(LOCAL, 255, rng, (ip4(5, 5, 5, 5),))
    assert t.add(fresh, NOW).outcome is AddOutcome.PENDING
    # While fresh waits in the cache, its /24 fills up elsewhere in the table.
    t.add(contact_in_bucket(LOCAL, 253, rng, (ip4(5, 5, 5, 9),)), NOW)
    assert t.on_ping_result(holder.peer_id, False, NOW) is None
    assert fresh.peer_id not in t and holder.peer_id not in t


def test_closest_matches_brute_force() -> None:
    t = table()
    everyone = contacts(600, seed=11)
    t.load(everyone)
    members = list(t.contacts())
    assert len(members) == len(t) < 600  # far buckets are capped at k
    rng = random.Random(12)
    for _ in range(50):
        key = rng.getrandbits(256)
        assert t.closest(key, 20) == brute_closest(members, key, 20)
    some = members[5]
    assert some not in t.closest(some.key, 20, exclude=some.peer_id)
    assert t.closest(some.key, 1) == [some]


def test_bucket_refresh_actions_every_ten_minutes() -> None:
    t = table()
    rng = random.Random(13)
    for index in (255, 254, 253):
        t.add(contact_in_bucket(LOCAL, index, rng), NOW)
    assert t.next_deadline() == NOW + 600
    assert t.on_timer(NOW + 599) == []
    actions = t.on_timer(NOW + 600)
    assert sorted(a.index for a in actions) == [253, 254, 255]
    for action in actions:
        assert bucket_index(LOCAL, action.key) == action.index
        assert peer_key(action.target) == action.key
    assert t.on_timer(NOW + 601) == []
    t.mark_refreshed(contact_in_bucket(LOCAL, 255, rng).key, NOW + 900)
    later = t.on_timer(NOW + 1200)
    assert sorted(a.index for a in later) == [253, 254]


def test_occupancy_reports_bucket_sizes() -> None:
    t = table(k=2)
    fill_bucket(t, 255, 2)
    t.add(contact_in_bucket(LOCAL, 255, random.Random(90)), NOW)
    fill_bucket(t, 250, 1, seed=4)
    stats = t.occupancy()
    assert [(s.index, s.common_prefix_length, s.size, s.replacements, s.pending_check) for s in stats] == [
        (255, 0, 2, 1, True),
        (250, 5, 1, 0, False),
    ]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RoutingConfig(k=0)
    with pytest.raises(ValueError):
        RoutingConfig(max_per_group_per_table=0)
    with pytest.raises(ValueError):
        RoutingConfig(refresh_interval=0)


def test_address_change_into_a_crowded_prefix_keeps_the_old_addresses() -> None:
    t = table(max_per_group_per_bucket=1, max_per_group_per_table=5)
    rng = random.Random(9)
    first = contact_in_bucket(LOCAL, 255, rng, (ip4(8, 8, 8, 1),))
    mover = contact_in_bucket(LOCAL, 255, rng, (ip4(9, 9, 9, 1),))
    t.add(first, NOW)
    t.add(mover, NOW)
    moved = Contact.of(mover.peer_id, (ip4(8, 8, 8, 2),))
    assert t.add(moved, NOW + 1).outcome is AddOutcome.UPDATED
    assert t.get(mover.peer_id) == mover
    elsewhere = Contact.of(mover.peer_id, (ip4(7, 7, 7, 7),))
    t.add(elsewhere, NOW + 2)
    assert t.get(mover.peer_id) == elsewhere
