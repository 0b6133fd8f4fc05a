"""Storage-node policy and selection: pinning, sequences, transfer, release."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.identity import Ed25519PrivateKey
from overlay.naming import (
    NameRecord,
    OwnerPinned,
    Reason,
    StaleSequence,
    StoragePolicy,
    WrongOwner,
    make_release,
    make_transfer,
    select,
    select_index,
    validate,
)
from tests.naming.helpers import CONFIG, NOW, key, nonce_for, record

POLICY = StoragePolicy(CONFIG)


def _accept(existing: NameRecord | None, incoming: NameRecord, now: float = NOW) -> Reason:
    validate(incoming, now, CONFIG)  # the policy only ever sees valid records
    decision = POLICY.accept(existing, incoming, now)
    if not decision.accept:
        assert decision.error is not None
        with pytest.raises(type(decision.error)):
            decision.raise_if_refused()
    else:
        assert decision.error is None
        decision.raise_if_refused()
    return decision.reason


def test_first_registration_is_accepted(alice: Ed25519PrivateKey) -> None:
    assert _accept(None, record(alice)) is Reason.NEW


def test_same_owner_needs_a_higher_sequence(alice: Ed25519PrivateKey) -> None:
    held = record(alice, sequence=5)
    assert _accept(held, record(alice, sequence=6)) is Reason.NEWER
    decision = POLICY.accept(held, record(alice, sequence=4), NOW)
    assert not decision.accept and decision.reason is Reason.STALE
    assert isinstance(decision.error, StaleSequence)
    assert (decision.error.incoming, decision.error.held) == (4, 5)
    assert _accept(held, held) is Reason.DUPLICATE


def test_replayed_old_sequence_is_refused(alice: Ed25519PrivateKey) -> None:
    old = record(alice, sequence=1, ips=(bytes([10, 0, 0, 1]),))
    new = record(alice, sequence=2, ips=(bytes([10, 0, 0, 2]),))
    assert _accept(old, new) is Reason.NEWER
    # Someone replays the old (validly signed, unexpired) record.
    decision = POLICY.accept(new, old, NOW)
    assert isinstance(decision.error, StaleSequence)


def test_equal_sequences_break_ties_deterministically(alice: Ed25519PrivateKey) -> None:
    a = record(alice, sequence=3, expires=NOW + 100)
    b = record(alice, sequence=3, expires=NOW + 200)
    assert _accept(a, b) is Reason.NEWER
    assert not POLICY.accept(b, a, NOW).accept
    assert select(a, b) == select(b, a) == b


def test_other_owner_is_refused_while_pinned(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    held = record(alice, expires=NOW + 600)
    squat = record(mallory, sequence=10**9)
    decision = POLICY.accept(held, squat, NOW)
    assert not decision.accept and decision.reason is Reason.OWNER_PINNED
    assert isinstance(decision.error, OwnerPinned)
    assert decision.error.pinned_until == held.expires
    # Once the held record expires, the name is free again.
    later = NOW + 601
    squat_later = record(mallory, expires=later + 60)
    assert _accept(held, squat_later, later) is Reason.REPLACES_EXPIRED


def test_transfer_flow(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    held = record(alice, sequence=5)
    transfer = make_transfer(
        alice,
        "alice.ovl",
        bob.public_key(),
        sequence=6,
        expires=int(NOW + 3600),
        pow_nonce=nonce_for("alice.ovl", alice),
    )
    assert _accept(held, transfer) is Reason.NEWER
    # After the transfer only Bob may follow; Alice is locked out.
    bobs = record(bob, sequence=1, pow_nonce=nonce_for("alice.ovl", bob))
    assert _accept(transfer, bobs) is Reason.TRANSFERRED
    again = POLICY.accept(transfer, record(alice, sequence=7), NOW)
    assert not again.accept and again.reason is Reason.TRANSFERRED_AWAY
    assert isinstance(again.error, WrongOwner)
    assert not POLICY.accept(transfer, record(mallory), NOW).accept


def test_transfer_proof_convinces_nodes_that_missed_the_transfer(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    held = record(alice, sequence=5)
    nonce = nonce_for("alice.ovl", alice)
    transfer = make_transfer(
        alice, "alice.ovl", bob.public_key(), sequence=6, expires=int(NOW + 3600), pow_nonce=nonce
    )
    bobs = record(bob, sequence=1, pow_nonce=0, transfer_proof=transfer.to_bytes())
    assert _accept(held, bobs) is Reason.TRANSFERRED
    # A proof older than what the node holds is not enough: Alice published
    # again after signing it.
    newer = record(alice, sequence=7)
    assert not POLICY.accept(newer, bobs, NOW).accept
    # Mallory cannot reuse Bob's proof (validation refuses it already).
    with pytest.raises(WrongOwner):
        validate(record(mallory, pow_nonce=0, transfer_proof=transfer.to_bytes()), NOW, CONFIG)


def test_release_flow(alice: Ed25519PrivateKey, bob: Ed25519PrivateKey) -> None:
    nonce = nonce_for("alice.ovl", alice)
    old = record(alice, sequence=5)
    release = make_release(alice, "alice.ovl", sequence=6, expires=int(NOW + 3600), pow_nonce=nonce)
    assert _accept(old, release) is Reason.NEWER
    # The name is free for anyone...
    assert _accept(release, record(bob)) is Reason.RELEASED
    # ...but a replay of Alice's earlier record cannot resurrect it.
    assert not POLICY.accept(release, old, NOW).accept
    # Alice herself may register again with a higher sequence.
    assert _accept(release, record(alice, sequence=7)) is Reason.NEWER


def test_different_names_never_replace_each_other(alice: Ed25519PrivateKey) -> None:
    a = record(alice, name="alice.ovl")
    b = record(alice, name="bob.ovl", sequence=99)
    assert not POLICY.accept(a, b, NOW).accept
    assert not POLICY.accept(a, b, a.expires + 1).accept


@settings(deadline=None)
@given(st.permutations(range(6)))
def test_select_is_order_independent_within_one_owner(order: list[int]) -> None:
    owner = key(11)
    records = [_HISTORY[i] for i in order]
    best = records[select_index(records)]
    assert best == max(_HISTORY, key=lambda r: (r.sequence, r.expires, r.to_bytes()))
    folded = records[0]
    for rec in records[1:]:
        folded = select(folded, rec)
    assert folded == best
    assert owner.public_key().to_protobuf() == best.owner


_HISTORY = [
    record(key(11), sequence=seq, expires=NOW + exp)
    for seq, exp in itertools.product((1, 2, 3), (100, 200))
]


def test_select_keeps_the_held_owner_against_unrelated_owners(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    a, m = record(alice), record(mallory, sequence=99)
    assert select(a, m) == a
    assert select(m, a) == m
    with pytest.raises(ValueError):
        select_index([])


def test_onward_transfer_passes_a_node_that_saw_only_the_first(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    carol = key(3)
    first = make_transfer(
        alice,
        "alice.ovl",
        bob.public_key(),
        sequence=6,
        expires=int(NOW + 3600),
        pow_nonce=nonce_for("alice.ovl", alice),
    )
    onward = make_transfer(
        bob,
        "alice.ovl",
        carol.public_key(),
        sequence=1,
        expires=int(NOW + 3600),
        pow_nonce=nonce_for("alice.ovl", bob),
    )
    carols = record(carol, pow_nonce=0, transfer_proof=onward.to_bytes())
    assert _accept(first, carols) is Reason.TRANSFERRED
    # Mallory's own "onward transfer" is not signed by Bob, so it cannot pass.
    fake = make_transfer(
        mallory,
        "alice.ovl",
        carol.public_key(),
        sequence=1,
        expires=int(NOW + 3600),
        pow_nonce=nonce_for("alice.ovl", mallory),
    )
    carols_fake = record(carol, pow_nonce=0, transfer_proof=fake.to_bytes())
    assert not POLICY.accept(first, carols_fake, NOW).accept
