"""The plan of `overlay demo --nat` (pure): which peers, which pairs, in
which rounds, with which goal.  The run itself is interop/test_demo_nat.py."""

from __future__ import annotations

from itertools import combinations_with_replacement

from overlay.demo_nat import NAMES, PAIRS, PEER_KINDS, goal_of, schedule
from overlay.lab.natkinds import NatKind

SYMMETRIC = {NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_SEQUENTIAL}


def _klass(kind: NatKind) -> str:
    return "symmetric" if kind in SYMMETRIC else kind.value


def test_every_pair_of_kinds_is_tried_once_at_least() -> None:
    classes = sorted({_klass(k) for k in PEER_KINDS})
    tried = {frozenset((_klass(PEER_KINDS[a - 1]), _klass(PEER_KINDS[b - 1]))) for a, b in PAIRS}
    wanted = {frozenset(pair) for pair in combinations_with_replacement(classes, 2)}
    assert tried == wanted
    # Both symmetric allocations meet the port-restricted cone (birthday).
    against_port = {PEER_KINDS[x - 1] for a, b in PAIRS for x, y in ((a, b), (b, a))
                    if PEER_KINDS[y - 1] is NatKind.PORT_RESTRICTED_CONE}
    assert SYMMETRIC <= against_port


def test_pairs_are_distinct_peers_and_unique() -> None:
    assert len(set(PAIRS)) == len(PAIRS)
    assert all(a != b and 1 <= a <= len(PEER_KINDS) and 1 <= b <= len(PEER_KINDS)
               for a, b in PAIRS)
    assert len({frozenset(p) for p in PAIRS}) == len(PAIRS)


def test_goals_follow_the_issue() -> None:
    for a in NatKind:
        for b in NatKind:
            want = "relayed" if a in SYMMETRIC and b in SYMMETRIC else "direct"
            assert goal_of(a, b) == want == goal_of(b, a)
    relayed = [p for p in PAIRS if goal_of(PEER_KINDS[p[0] - 1], PEER_KINDS[p[1] - 1])
               == "relayed"]
    assert len(relayed) == 1


def test_rounds_never_use_a_peer_twice_and_cover_every_pair() -> None:
    rounds = schedule(PAIRS)
    assert sorted(p for r in rounds for p in r) == sorted(PAIRS)
    for r in rounds:
        peers = [x for pair in r for x in pair]
        assert len(peers) == len(set(peers)), r
    # Bounded: the busiest peer is in four pairs, and greedy needs no more
    # than one round over that here.
    assert len(rounds) <= 5


def test_schedule_keeps_order_within_a_round() -> None:
    assert schedule([(1, 2), (3, 4), (2, 3), (1, 4)]) == [[(1, 2), (3, 4)], [(2, 3), (1, 4)]]
    assert schedule([]) == []


def test_names_are_owned_by_peers_of_the_demo() -> None:
    assert len({name for name, _ in NAMES}) == len(NAMES)
    assert all(1 <= owner <= len(PEER_KINDS) for _, owner in NAMES)
