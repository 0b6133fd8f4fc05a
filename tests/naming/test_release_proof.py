"""The next owner after a release carries the RELEASE as proof: storage
nodes that missed the release and resolvers that pinned the old owner let
it in; a proof that is forged, for another name, or older than what the pin
saw does not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overlay.identity import PrivateKey
from overlay.naming import make_release
from overlay.naming.errors import ForgedSignature, MalformedRecord, OwnerChanged, WrongOwner
from overlay.naming.pins import OwnerPins, released_from
from overlay.naming.policy import Reason, StoragePolicy, decide
from overlay.naming.record import NameRecord, RecordKind, decode_record, sign_record
from overlay.naming.validate import validate
from tests.naming.helpers import CONFIG, NOW, nonce_for, owner_of, record


def _release(private: PrivateKey, name: str = "alice.ovl", sequence: int = 5) -> NameRecord:
    return make_release(private, name, sequence=sequence, expires=int(NOW + 3600),
                        pow_nonce=nonce_for(name, private))


def test_a_record_with_a_release_proof_round_trips_and_validates(
        alice: PrivateKey, bob: PrivateKey) -> None:
    proof = _release(alice).to_bytes()
    rec = record(bob, release_proof=proof)
    assert decode_record(rec.to_bytes()) == rec
    assert validate(rec.to_bytes(), NOW, CONFIG).release_proof == proof
    assert released_from(rec) == owner_of(alice)


def test_the_release_proof_is_signed_with_the_record(alice: PrivateKey, bob: PrivateKey) -> None:
    rec = record(bob, release_proof=_release(alice).to_bytes())
    stripped = replace(rec, release_proof=b"")
    with pytest.raises(ForgedSignature):
        validate(stripped.to_bytes(), NOW, CONFIG)


@pytest.mark.parametrize("what", ["other-name", "forged", "not-a-release", "own"])
def test_bad_release_proofs_are_refused(alice: PrivateKey, bob: PrivateKey, what: str) -> None:
    expected: type[Exception]
    if what == "other-name":
        proof, expected = _release(alice, "carol.ovl").to_bytes(), WrongOwner
    elif what == "forged":
        good = _release(alice)
        proof, expected = replace(good, sequence=good.sequence + 1).to_bytes(), ForgedSignature
    elif what == "not-a-release":
        proof, expected = record(alice).to_bytes(), MalformedRecord
    else:
        proof, expected = _release(bob).to_bytes(), MalformedRecord
    rec = record(bob, release_proof=proof)
    with pytest.raises(expected):
        validate(rec.to_bytes(), NOW, CONFIG)


def test_release_and_transfer_records_carry_no_release_proof(
        alice: PrivateKey, bob: PrivateKey) -> None:
    release = _release(bob)
    bad = sign_record(replace(release, release_proof=_release(alice).to_bytes()), bob)
    assert bad.kind is RecordKind.RELEASE
    with pytest.raises(MalformedRecord, match="no release proof"):
        validate(bad.to_bytes(), NOW, CONFIG)


def test_a_storage_node_that_missed_the_release_accepts_the_next_owner(
        alice: PrivateKey, bob: PrivateKey) -> None:
    held = record(alice, sequence=3)
    nxt = record(bob, release_proof=_release(alice, sequence=5).to_bytes())
    assert decide(nxt, held) is Reason.RELEASED
    assert StoragePolicy(CONFIG).accept(held, nxt, NOW).accept
    # A release older than the held record (the owner registered again) does not.
    newer = record(alice, sequence=9)
    assert decide(nxt, newer) is Reason.OWNER_PINNED
    # Without a proof nothing changes.
    assert decide(record(bob), held) is Reason.OWNER_PINNED


def test_a_pin_gives_way_to_the_pinned_owners_release(
        alice: PrivateKey, bob: PrivateKey, mallory: PrivateKey) -> None:
    pins = OwnerPins()
    pins.observe(record(alice, sequence=3), NOW)
    with pytest.raises(OwnerChanged):
        pins.check(record(bob), NOW)
    with pytest.raises(OwnerChanged):  # released by someone else
        pins.check(record(bob, release_proof=_release(mallory).to_bytes()), NOW)
    nxt = record(bob, release_proof=_release(alice, sequence=5).to_bytes())
    pins.observe(nxt, NOW)
    pin = pins.get("alice.ovl")
    assert pin is not None and pin.owner == owner_of(bob)


def test_a_release_the_owner_took_back_does_not_unlock_the_pin(
        alice: PrivateKey, bob: PrivateKey) -> None:
    pins = OwnerPins()
    pins.observe(record(alice, sequence=9), NOW)  # alice registered again after releasing
    with pytest.raises(OwnerChanged):
        pins.check(record(bob, release_proof=_release(alice, sequence=5).to_bytes()), NOW)


def test_pins_keep_the_sequence_across_a_save(alice: PrivateKey) -> None:
    pins = OwnerPins()
    pins.observe(record(alice, sequence=7), NOW)
    doc = pins.to_dict()
    again = OwnerPins.from_dict(doc)
    assert again.get("alice.ovl") == pins.get("alice.ovl")
    pin = again.get("alice.ovl")
    assert pin is not None and pin.sequence == 7
    # Files from before release proofs load with sequence 0.
    del doc["pins"]["alice.ovl"]["sequence"]
    old = OwnerPins.from_dict(doc).get("alice.ovl")
    assert old is not None and old.sequence == 0
