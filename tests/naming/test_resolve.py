"""The resolver's quorum logic over answers from the closest nodes."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.naming import (
    Done,
    ForgedSignature,
    NeedMore,
    NotFound,
    QuorumCollector,
    Expired,
    make_transfer,
)
from tests.naming.helpers import CONFIG, NOW, key, nonce_for, owner_of, record

ALICE, MALLORY, BOB = key(1), key(666), key(2)
PEERS = [bytes([i]) * 4 for i in range(20)]  # closest first
GOOD = record(ALICE, sequence=5)
STALE = record(ALICE, sequence=3)
EXPIRED = record(ALICE, sequence=6, expires=NOW - 1)
FORGED = dataclasses.replace(record(MALLORY, sequence=99), owner=owner_of(ALICE))
SQUAT = record(MALLORY, sequence=1)
BAD_KINDS = {"stale": STALE, "expired": EXPIRED, "forged": FORGED, "squat": SQUAT, "none": None}


def _collector(quorum: int = 5) -> QuorumCollector:
    return QuorumCollector("alice.ovl", PEERS, quorum, CONFIG)


def _answer(c: QuorumCollector, peer: bytes, rec: object) -> object:
    value = None if rec is None else rec.to_bytes()  # type: ignore[attr-defined]
    return c.on_response(peer, value, NOW)


@settings(max_examples=60, deadline=None)
@given(
    bad_kinds=st.lists(st.sampled_from(sorted(BAD_KINDS)), min_size=4, max_size=4),
    bad_slots=st.lists(st.integers(0, 19), min_size=4, max_size=4, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_correct_record_wins_with_20_percent_bad_responders(
    bad_kinds: list[str], bad_slots: list[int], seed: int
) -> None:
    served = {peer: GOOD for peer in PEERS}
    for slot, kind in zip(bad_slots, bad_kinds):
        served[PEERS[slot]] = BAD_KINDS[kind]  # type: ignore[assignment]
    order = list(PEERS)
    random.Random(seed).shuffle(order)
    c = _collector()
    early: Done | None = None
    for peer in order:
        status = _answer(c, peer, served[peer])
        if isinstance(status, Done):
            # Any answer the collector gives, early or final, is the right one.
            assert status.record == GOOD
            early = early or status
    assert early is not None
    final = c.status()
    assert isinstance(final, Done) and final.final
    assert final.record == GOOD
    wrong = {PEERS[s] for s in bad_slots}
    assert set(final.to_correct) == wrong
    assert set(final.supporters) >= set(PEERS) - wrong


def test_returns_after_the_first_quorum_of_agreeing_answers() -> None:
    c = _collector(quorum=3)
    assert isinstance(_answer(c, PEERS[7], GOOD), NeedMore)
    assert isinstance(_answer(c, PEERS[2], GOOD), NeedMore)
    status = _answer(c, PEERS[11], GOOD)
    assert isinstance(status, Done)
    assert not status.final
    assert status.supporters == (PEERS[2], PEERS[7], PEERS[11])
    assert len(c.pending) == 17


def test_dissent_delays_the_answer() -> None:
    c = _collector(quorum=3)
    _answer(c, PEERS[0], SQUAT)
    for peer in PEERS[1:3]:
        assert isinstance(_answer(c, peer, GOOD), NeedMore)
    # 3 against 1 is not a lead of 3 yet.
    assert isinstance(_answer(c, PEERS[3], GOOD), NeedMore)
    status = _answer(c, PEERS[4], GOOD)
    assert isinstance(status, Done) and status.record == GOOD
    assert status.to_correct == (PEERS[0],)


def test_final_plurality_ties_go_to_the_closest() -> None:
    c = QuorumCollector("alice.ovl", PEERS[:4], 3, CONFIG)
    _answer(c, PEERS[3], GOOD)
    _answer(c, PEERS[1], SQUAT)
    _answer(c, PEERS[2], GOOD)
    assert isinstance(c.status(), NeedMore)
    status = _answer(c, PEERS[0], SQUAT)
    assert isinstance(status, Done) and status.final
    assert status.record == SQUAT
    assert status.to_correct == (PEERS[2], PEERS[3])


def test_nothing_found() -> None:
    c = QuorumCollector("alice.ovl", PEERS[:3], 2, CONFIG)
    _answer(c, PEERS[0], None)
    _answer(c, PEERS[1], FORGED)
    c.on_failure(PEERS[2])
    status = c.status()
    assert isinstance(status, NotFound)
    assert status.answered == 2
    assert status.invalid == (PEERS[1],)
    assert isinstance(c.rejection(PEERS[1]), ForgedSignature)
    assert c.rejection(PEERS[0]) is None


def test_unknown_and_repeated_responders_are_ignored() -> None:
    c = QuorumCollector("alice.ovl", PEERS[:3], 1, CONFIG)
    _answer(c, b"stranger", GOOD)
    assert isinstance(c.status(), NeedMore)
    _answer(c, PEERS[0], EXPIRED)
    assert isinstance(c.rejection(PEERS[0]), Expired)
    # A second answer from the same responder does not overwrite the first.
    assert isinstance(_answer(c, PEERS[0], GOOD), NeedMore)
    assert isinstance(_answer(c, PEERS[1], GOOD), Done)


def test_records_for_another_name_do_not_count() -> None:
    c = QuorumCollector("bob.ovl", PEERS[:2], 1, CONFIG)
    _answer(c, PEERS[0], GOOD)
    _answer(c, PEERS[1], GOOD)
    assert isinstance(c.status(), NotFound)


def test_transferred_owner_collects_the_old_owners_votes() -> None:
    transfer = make_transfer(
        ALICE,
        "alice.ovl",
        BOB.public_key(),
        sequence=10,
        expires=int(NOW + 3600),
        pow_nonce=nonce_for("alice.ovl", ALICE),
    )
    bobs = record(BOB, sequence=1, pow_nonce=0, transfer_proof=transfer.to_bytes())
    c = QuorumCollector("alice.ovl", PEERS[:5], 3, CONFIG)
    for peer in PEERS[:3]:
        _answer(c, peer, GOOD)  # nodes that missed the transfer
    _answer(c, PEERS[3], transfer)
    status = _answer(c, PEERS[4], bobs)
    assert isinstance(status, Done)
    assert status.record == bobs
    assert set(status.to_correct) == set(PEERS[:4])


def test_collector_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        QuorumCollector("alice.ovl", PEERS, 0, CONFIG)
    with pytest.raises(ValueError):
        QuorumCollector("alice.ovl", [PEERS[0], PEERS[0]], 1, CONFIG)


def test_a_pinned_owner_is_never_overruled_early() -> None:
    c = QuorumCollector("alice.ovl", PEERS[:8], 3, CONFIG, pinned_owner=owner_of(ALICE))
    # Three fast squatters would win early without a pin.
    for peer in PEERS[:3]:
        assert isinstance(_answer(c, peer, SQUAT), NeedMore)
    for peer in PEERS[3:7]:
        assert isinstance(_answer(c, peer, GOOD), NeedMore)
    status = _answer(c, PEERS[7], GOOD)
    assert isinstance(status, Done) and status.final and status.record == GOOD
    # The pinned owner itself still wins early.
    c = QuorumCollector("alice.ovl", PEERS[:8], 3, CONFIG, pinned_owner=owner_of(ALICE))
    for peer in PEERS[:2]:
        _answer(c, peer, GOOD)
    assert isinstance(_answer(c, PEERS[2], GOOD), Done)


def test_unpinned_resolver_can_be_outrun_by_fast_squatters_until_final() -> None:
    # Documented limit: x >= quorum fast attackers win the early answer, and
    # the final answer (background verification) corrects it.
    c = QuorumCollector("alice.ovl", PEERS[:8], 3, CONFIG)
    for peer in PEERS[:2]:
        _answer(c, peer, SQUAT)
    early = _answer(c, PEERS[2], SQUAT)
    assert isinstance(early, Done) and early.record == SQUAT and not early.final
    for peer in PEERS[3:8]:
        status = _answer(c, peer, GOOD)
    assert isinstance(status, Done) and status.final and status.record == GOOD
    assert status.to_correct == tuple(PEERS[:3])
