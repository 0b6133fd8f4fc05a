from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.naming import (
    BadProofOfWork,
    Expired,
    ForgedSignature,
    MalformedName,
    MalformedRecord,
    NameRecord,
    NamingConfig,
    RecordKind,
    RecordRejected,
    Service,
    TooLarge,
    ValidityTooLong,
    WrongOwner,
    make_release,
    make_transfer,
    self_certifying_name,
    sign_record,
    validate,
)
from overlay.naming.record import PeerTarget
from tests.naming.helpers import CONFIG, NOW, nonce_for, owner_of, record


def test_valid_record_passes(alice: Ed25519PrivateKey) -> None:
    rec = record(alice)
    assert validate(rec.to_bytes(), NOW, CONFIG) == rec
    assert validate(rec, NOW, CONFIG) == rec


def test_tampered_record_is_a_forgery(alice: Ed25519PrivateKey) -> None:
    rec = record(alice)
    for changed in (
        dataclasses.replace(rec, sequence=rec.sequence + 1),
        dataclasses.replace(rec, ips=(bytes([10, 0, 0, 66]),)),
        dataclasses.replace(rec, expires=rec.expires + 10),
        dataclasses.replace(rec, signature=b""),
        dataclasses.replace(rec, signature=bytes(64)),
    ):
        with pytest.raises(ForgedSignature):
            validate(changed.to_bytes(), NOW, CONFIG)


def test_record_signed_by_another_key_is_a_forgery(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    # Mallory claims Alice's key as owner but signs with her own.
    forged = dataclasses.replace(record(mallory), owner=owner_of(alice))
    with pytest.raises(ForgedSignature):
        validate(forged.to_bytes(), NOW, CONFIG)


def test_signature_is_domain_separated(alice: Ed25519PrivateKey) -> None:
    rec = record(alice)
    # A signature over the bare encoding (another protocol's message with the
    # same bytes) must not verify as a name-record signature.
    unsigned = dataclasses.replace(rec, signature=b"")
    bare = alice.sign(unsigned.to_bytes())
    with pytest.raises(ForgedSignature):
        validate(dataclasses.replace(rec, signature=bare), NOW, CONFIG)


def test_expired_record(alice: Ed25519PrivateKey) -> None:
    rec = record(alice, expires=NOW)
    with pytest.raises(Expired) as info:
        validate(rec, NOW, CONFIG)
    assert info.value.expires == int(NOW)
    assert validate(rec, NOW - 1, CONFIG) == rec


def test_validity_is_bounded(alice: Ed25519PrivateKey) -> None:
    limit = NOW + CONFIG.max_validity + CONFIG.clock_skew
    assert validate(record(alice, expires=limit), NOW, CONFIG)
    with pytest.raises(ValidityTooLong):
        validate(record(alice, expires=limit + 1), NOW, CONFIG)


def test_proof_of_work_must_verify(alice: Ed25519PrivateKey) -> None:
    good = nonce_for("alice.ovl", alice)
    bad = next(n for n in range(good + 1, good + 10_000) if not _pow_ok("alice.ovl", alice, n))
    with pytest.raises(BadProofOfWork) as info:
        validate(record(alice, pow_nonce=bad), NOW, CONFIG)
    assert info.value.bits == CONFIG.pow_bits
    # The proof binds the name: a nonce for another name does not carry over.
    other = nonce_for("bob.ovl", alice)
    if not _pow_ok("alice.ovl", alice, other):
        with pytest.raises(BadProofOfWork):
            validate(record(alice, pow_nonce=other), NOW, CONFIG)
    # A network with a higher difficulty refuses the cheap proof.
    hard = NamingConfig(pow_bits=24)
    with pytest.raises(BadProofOfWork):
        validate(record(alice, pow_nonce=good), NOW, hard)


def _pow_ok(name: str, key: Ed25519PrivateKey, nonce: int) -> bool:
    from overlay.naming import verify_pow

    return verify_pow(name, owner_of(key), nonce, CONFIG.pow_bits)


def test_proof_of_work_binds_the_owner(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    stolen = nonce_for("alice.ovl", alice)
    if _pow_ok("alice.ovl", mallory, stolen):
        pytest.skip("the nonce happens to work for both keys at this tiny difficulty")
    with pytest.raises(BadProofOfWork):
        validate(record(mallory, pow_nonce=stolen), NOW, CONFIG)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("Alice.ovl", "normalized"),
        ("alice.com", "zone"),
        ("al_ice.ovl", "ldh"),
        ("a" * 64 + ".ovl", "label-length"),
        ("alice..ovl", "empty-label"),
        ("-alice.ovl", "hyphen"),
    ],
)
def test_malformed_names_in_records(alice: Ed25519PrivateKey, name: str, rule: str) -> None:
    rec = record(alice, name=name, pow_nonce=0)
    with pytest.raises(MalformedName) as info:
        validate(rec, NOW, CONFIG)
    assert info.value.rule == rule


def test_record_under_another_key_is_refused(alice: Ed25519PrivateKey) -> None:
    rec = record(alice)
    with pytest.raises(MalformedName):
        validate(rec, NOW, CONFIG, expected_name="bob.ovl")


def test_self_certifying_name_needs_no_work_but_the_right_key(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    name = self_certifying_name(PeerId.from_public_key(alice.public_key()))
    mine = record(alice, name=name, pow_nonce=0)
    assert validate(mine, NOW, NamingConfig(pow_bits=40)) == mine
    sub = record(alice, name="www." + name, pow_nonce=0)
    assert validate(sub, NOW, CONFIG) == sub
    theirs = record(mallory, name=name, pow_nonce=nonce_for(name, mallory))
    with pytest.raises(WrongOwner):
        validate(theirs, NOW, CONFIG)
    with pytest.raises(WrongOwner):
        validate(record(mallory, name="www." + name, pow_nonce=0), NOW, CONFIG)


def test_self_certifying_name_cannot_be_transferred(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey
) -> None:
    name = self_certifying_name(PeerId.from_public_key(alice.public_key()))
    transfer = make_transfer(
        alice, name, bob.public_key(), sequence=5, expires=int(NOW + 60), pow_nonce=0
    )
    with pytest.raises(MalformedRecord):
        validate(transfer, NOW, CONFIG)


_SOME_PEER = PeerId.from_public_key(Ed25519PrivateKey.from_seed(bytes(32)).public_key()).to_bytes()


@pytest.mark.parametrize(
    "targets",
    [
        {"ips": (b"\x01\x02\x03",)},
        {"peers": (PeerTarget(b"\x12\x03abc"),)},
        {"peers": (PeerTarget(b"\x00\x04\x08\x01\x12\x00"),)},
        {"peers": (PeerTarget(_SOME_PEER, (b"\x04\x7f\x00",)),)},  # truncated /ip4
        {"peers": (PeerTarget(_SOME_PEER, (b"",)),)},
        {"txt": ("x" * 256,)},
        {"services": (Service("", 80),)},
        {"services": (Service("http\n", 80),)},
        {"services": (Service("http", 80, "Not_A_Host"),)},
        {"services": (Service("http", 80, "WWW.alice.ovl"),)},
    ],
)
def test_malformed_targets(alice: Ed25519PrivateKey, targets: dict[str, object]) -> None:
    rec = record(alice, **targets)
    with pytest.raises(MalformedRecord):
        validate(rec, NOW, CONFIG)


def test_owner_key_must_parse(alice: Ed25519PrivateKey) -> None:
    rec = dataclasses.replace(record(alice), owner=b"\x08\x01\x12\x01x")
    with pytest.raises(MalformedRecord, match="owner key"):
        validate(rec, NOW, CONFIG)


def test_kind_specific_fields(alice: Ed25519PrivateKey, bob: Ed25519PrivateKey) -> None:
    nonce = nonce_for("alice.ovl", alice)
    release = make_release(alice, "alice.ovl", sequence=9, expires=int(NOW + 60), pow_nonce=nonce)
    assert validate(release, NOW, CONFIG).kind is RecordKind.RELEASE
    with_targets = sign_record(dataclasses.replace(release, txt=("x",)), alice)
    with pytest.raises(MalformedRecord):
        validate(with_targets, NOW, CONFIG)
    transfer = make_transfer(
        alice, "alice.ovl", bob.public_key(), sequence=9, expires=int(NOW + 60), pow_nonce=nonce
    )
    assert validate(transfer, NOW, CONFIG).new_owner == owner_of(bob)
    to_self = sign_record(dataclasses.replace(transfer, new_owner=owner_of(alice)), alice)
    with pytest.raises(MalformedRecord):
        validate(to_self, NOW, CONFIG)
    no_target = sign_record(dataclasses.replace(transfer, new_owner=b""), alice)
    with pytest.raises(MalformedRecord):
        validate(no_target, NOW, CONFIG)
    stray = sign_record(dataclasses.replace(record(alice), new_owner=owner_of(bob)), alice)
    with pytest.raises(MalformedRecord):
        validate(stray, NOW, CONFIG)


def test_transfer_proof_replaces_the_new_owners_work(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    transfer = make_transfer(
        alice,
        "alice.ovl",
        bob.public_key(),
        sequence=10,
        expires=int(NOW + 60),
        pow_nonce=nonce_for("alice.ovl", alice),
    )
    proof = transfer.to_bytes()
    bobs = record(bob, sequence=1, pow_nonce=0, transfer_proof=proof)
    assert validate(bobs, NOW, NamingConfig(pow_bits=CONFIG.pow_bits)) == bobs
    # The proof is not transferable to a third key.
    with pytest.raises(WrongOwner):
        validate(record(mallory, pow_nonce=0, transfer_proof=proof), NOW, CONFIG)
    # Nor to another name.
    with pytest.raises(WrongOwner):
        validate(record(bob, name="other.ovl", pow_nonce=0, transfer_proof=proof), NOW, CONFIG)
    # A forged proof is a forgery.
    forged = dataclasses.replace(transfer, signature=bytes(64)).to_bytes()
    with pytest.raises(ForgedSignature):
        validate(record(bob, pow_nonce=0, transfer_proof=forged), NOW, CONFIG)
    # A proof that is not a TRANSFER does not count.
    not_transfer = record(alice).to_bytes()
    with pytest.raises(MalformedRecord):
        validate(record(bob, pow_nonce=0, transfer_proof=not_transfer), NOW, CONFIG)


def test_in_memory_records_obey_the_size_cap(alice: Ed25519PrivateKey) -> None:
    rec = record(alice, txt=tuple("y" * 250 for _ in range(50)))
    with pytest.raises(TooLarge):
        validate(rec, NOW, CONFIG)


def test_validate_takes_its_time_from_the_caller(alice: Ed25519PrivateKey) -> None:
    rec: NameRecord = record(alice, expires=1000)
    assert validate(rec, 999, CONFIG) == rec
    with pytest.raises(Expired):
        validate(rec, 1000, CONFIG)


_SIGNED = record(
    Ed25519PrivateKey.from_seed(bytes(32)),
    ips=(bytes(4),),
    services=(Service("http", 80, "www.alice.ovl"),),
    txt=("t",),
).to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_validating_mutated_records_raises_only_typed_errors(data: st.DataObject) -> None:
    mutated = bytearray(_SIGNED)
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    try:
        rec = validate(bytes(mutated), NOW, CONFIG)
    except RecordRejected:
        return
    assert rec.to_bytes() == _SIGNED
