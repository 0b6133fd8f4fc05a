"""The /ovl-name/ namespace as the DHT record store sees it."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey
from overlay.naming import (
    NAMESPACE,
    BadProofOfWork,
    Expired,
    ForgedSignature,
    InvalidName,
    MalformedName,
    NameNamespace,
    OwnerPinned,
    Reason,
    TooLarge,
    make_transfer,
    verify_pow,
)
from tests.naming.helpers import CONFIG, NOW, nonce_for, record

NS = NameNamespace(CONFIG)
KEY = b"/ovl-name/alice.ovl"


def test_keys_hold_the_normalized_name() -> None:
    assert NAMESPACE == "/ovl-name/"
    assert NS.key_for("Alice.OVL.") == KEY
    assert NS.name_of(KEY) == "alice.ovl"
    assert NS.name_of(KEY.decode()) == "alice.ovl"
    with pytest.raises(InvalidName):
        NS.key_for("alice.com")
    with pytest.raises(MalformedName):
        NS.name_of(b"/pk/alice.ovl")
    with pytest.raises(MalformedName):
        NS.name_of(b"/ovl-name/\xff")


def test_validate_raises_typed_errors(alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey) -> None:
    NS.validate(KEY, record(alice).to_bytes(), NOW)
    with pytest.raises(MalformedName):
        NS.validate(b"/ovl-name/bob.ovl", record(alice).to_bytes(), NOW)
    with pytest.raises(Expired):
        NS.validate(KEY, record(alice, expires=NOW).to_bytes(), NOW)
    owner = alice.public_key().to_protobuf()
    bad = next(n for n in range(1000) if not verify_pow("alice.ovl", owner, n, CONFIG.pow_bits))
    with pytest.raises(BadProofOfWork):
        NS.validate(KEY, record(alice, pow_nonce=bad).to_bytes(), NOW)
    forged = bytearray(record(alice).to_bytes())
    forged[-1] ^= 0x01
    with pytest.raises(ForgedSignature):
        NS.validate(KEY, bytes(forged), NOW)
    with pytest.raises(TooLarge):
        NS.validate(KEY, b"\x00" * (CONFIG.max_record_bytes + 1), NOW)


def test_select_prefers_the_newest_of_one_owner(alice: Ed25519PrivateKey) -> None:
    values = [record(alice, sequence=s).to_bytes() for s in (3, 7, 5)]
    assert NS.select(KEY, values) == 1
    # Undecodable values and values for other names are never chosen.
    other_name = record(alice, name="bob.ovl", sequence=99).to_bytes()
    assert NS.select(KEY, [b"\xff", other_name, values[0]]) == 2
    with pytest.raises(ValueError):
        NS.select(KEY, [])


def test_accept_replacement_pins_the_owner(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    held = record(alice, sequence=2, expires=NOW + 600).to_bytes()
    assert NS.accept_replacement(KEY, held, record(alice, sequence=3).to_bytes(), NOW)
    assert not NS.accept_replacement(KEY, held, record(alice, sequence=1).to_bytes(), NOW)
    assert not NS.accept_replacement(KEY, held, record(mallory, sequence=9).to_bytes(), NOW)
    decision = NS.decide_replacement(KEY, held, record(mallory).to_bytes(), NOW)
    assert isinstance(decision.error, OwnerPinned)
    # An invalid incoming value never replaces anything.
    assert not NS.accept_replacement(KEY, held, b"\xff", NOW)
    # An expired held value pins nobody.
    later = NOW + 600
    assert NS.accept_replacement(KEY, held, record(mallory, expires=later + 60).to_bytes(), later)
    # A transfer lets the new owner in.
    transfer = make_transfer(
        alice,
        "alice.ovl",
        bob.public_key(),
        sequence=4,
        expires=int(NOW + 600),
        pow_nonce=nonce_for("alice.ovl", alice),
    )
    bobs = record(bob, pow_nonce=0, transfer_proof=transfer.to_bytes()).to_bytes()
    assert NS.decide_replacement(KEY, held, bobs, NOW).reason is Reason.TRANSFERRED


def test_select_with_the_stores_incoming_then_held_order(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    held = record(alice, sequence=2).to_bytes()
    # Another owner's record never displaces the held one...
    assert NS.select(KEY, [record(mallory, sequence=50).to_bytes(), held]) == 1
    # ...while the owner's newer record does, and a replay does not.
    assert NS.select(KEY, [record(alice, sequence=3).to_bytes(), held]) == 0
    assert NS.select(KEY, [record(alice, sequence=1).to_bytes(), held]) == 1


class StoreError(Exception):
    pass


def test_errors_can_be_wrapped_for_the_record_store(alice: Ed25519PrivateKey) -> None:
    ns = NameNamespace(CONFIG, wrap_error=lambda exc: StoreError(str(exc)))
    with pytest.raises(StoreError) as info:
        ns.validate(KEY, record(alice, expires=NOW).to_bytes(), NOW)
    assert isinstance(info.value.__cause__, Expired)
    ns.validate(KEY, record(alice).to_bytes(), NOW)
