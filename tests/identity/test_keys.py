from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import InvalidKeyError
from overlay.identity import (
    EcdsaPublicKey,
    Ed25519PrivateKey,
    KeyType,
    PrivateKey,
    PublicKey,
    EcdsaPrivateKey,
    RsaPrivateKey,
    RsaPublicKey,
    Secp256k1PrivateKey,
    Secp256k1PublicKey,
    private_key_from_protobuf,
    public_key_from_protobuf,
)
from overlay.identity.keys import MAX_PUBLIC_KEY_PROTOBUF
from overlay.wire.varint import encode_uvarint

from . import go_fixtures, vectors

PAIRS = {
    KeyType.ECDSA: (vectors.ECDSA_PRIVATE, vectors.ECDSA_PUBLIC),
    KeyType.ED25519: (vectors.ED25519_PRIVATE, vectors.ED25519_PUBLIC),
    KeyType.SECP256K1: (vectors.SECP256K1_PRIVATE, vectors.SECP256K1_PUBLIC),
    KeyType.RSA: (vectors.RSA_PRIVATE, vectors.RSA_PUBLIC),
}


@pytest.mark.parametrize("key_type", list(PAIRS))
def test_spec_vector_private_key_derives_its_public_key(key_type: KeyType) -> None:
    priv_bytes, pub_bytes = PAIRS[key_type]
    private = private_key_from_protobuf(priv_bytes)
    public = public_key_from_protobuf(pub_bytes)
    assert private.key_type is key_type
    assert public.key_type is key_type
    assert private.public_key() == public
    assert hash(private.public_key()) == hash(public)
    assert public.to_protobuf() == pub_bytes
    assert private.to_protobuf() == priv_bytes


@pytest.mark.parametrize("key_type", list(PAIRS))
def test_sign_and_verify_for_every_key_type(key_type: KeyType) -> None:
    private = private_key_from_protobuf(PAIRS[key_type][0])
    public = public_key_from_protobuf(PAIRS[key_type][1])
    signature = private.sign(b"hello overlay")
    assert public.verify(b"hello overlay", signature)
    assert not public.verify(b"hello overlaY", signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not public.verify(b"hello overlay", tampered)
    # Malformed signatures are a verification failure, not an exception.
    for garbage in (b"", b"\x30", b"\x00" * 7, b"\xff" * 600):
        assert not public.verify(b"hello overlay", garbage)


def test_signature_from_another_key_type_does_not_verify() -> None:
    ed = private_key_from_protobuf(vectors.ED25519_PRIVATE)
    for key_type in (KeyType.ECDSA, KeyType.SECP256K1, KeyType.RSA):
        other = public_key_from_protobuf(PAIRS[key_type][1])
        assert not other.verify(b"m", ed.sign(b"m"))


def test_generated_ed25519_key_round_trips() -> None:
    key = Ed25519PrivateKey.generate()
    encoded = key.to_protobuf()
    assert encoded[:4] == b"\x08\x01\x12\x40"
    assert len(encoded) == 68
    loaded = private_key_from_protobuf(encoded)
    assert loaded.public_key() == key.public_key()
    assert key.public_key().verify(b"x", loaded.sign(b"x"))
    assert key.public_key().to_protobuf()[:4] == b"\x08\x01\x12\x20"


def test_two_generated_keys_differ() -> None:
    assert Ed25519PrivateKey.generate().public_key() != Ed25519PrivateKey.generate().public_key()


def test_ed25519_private_key_accepts_seed_and_legacy_forms() -> None:
    key = private_key_from_protobuf(vectors.ED25519_PRIVATE)
    data = key.to_protobuf()[4:]
    seed, public = data[:32], data[32:]
    assert Ed25519PrivateKey.from_raw(seed).public_key() == key.public_key()
    assert Ed25519PrivateKey.from_raw(seed + public + public).public_key() == key.public_key()
    with pytest.raises(InvalidKeyError):
        Ed25519PrivateKey.from_raw(seed + public + bytes(32))
    with pytest.raises(InvalidKeyError):
        Ed25519PrivateKey.from_raw(seed + bytes(32))
    with pytest.raises(InvalidKeyError):
        Ed25519PrivateKey.from_raw(seed[:31])


def test_private_key_repr_hides_secret() -> None:
    key = private_key_from_protobuf(vectors.ED25519_PRIVATE)
    seed_hex = key.to_protobuf()[4:36].hex()
    assert seed_hex not in repr(key)
    assert key.public_key().raw.hex() in repr(key)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x08\x01",  # no Data
        b"\x12\x20" + bytes(32),  # no Type
        b"\x08\x07\x12\x20" + bytes(32),  # unknown key type
        b"\x08\x01\x12\x1f" + bytes(31),  # short Ed25519 key
        b"\x08\x01\x12\x20" + bytes(31),  # truncated
        b"\x08\x02\x12\x21\x05" + bytes(32),  # bad secp256k1 prefix
        b"\x08\x03\x12\x03abc",  # ECDSA not DER
        b"\x08\x00\x12\x03abc",  # RSA not DER
        b"\xff\xff\xff",
    ],
)
def test_malformed_public_keys_raise_invalid_key(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        public_key_from_protobuf(data)


def test_non_canonical_public_key_encodings_are_rejected() -> None:
    key = vectors.ED25519_PUBLIC[4:]
    reordered = b"\x12\x20" + key + b"\x08\x01"
    padded_varint = b"\x08\x81\x00\x12\x20" + key
    extra_field = vectors.ED25519_PUBLIC + b"\x18\x01"
    duplicated = b"\x08\x01" + vectors.ED25519_PUBLIC
    for data in (reordered, padded_varint, extra_field, duplicated):
        with pytest.raises(InvalidKeyError):
            public_key_from_protobuf(data)


def test_oversized_key_protobuf_is_rejected_before_parsing() -> None:
    data = b"\x08\x00\x12\x80\x40" + bytes(MAX_PUBLIC_KEY_PROTOBUF)
    with pytest.raises(InvalidKeyError, match="exceeds"):
        public_key_from_protobuf(data)


def test_rsa_keys_below_2048_bits_are_rejected() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    spki = weak.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidKeyError, match="1024 bits"):
        RsaPublicKey(spki)
    pkcs1 = weak.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidKeyError):
        private_key_from_protobuf(b"\x08\x00\x12" + encode_uvarint(len(pkcs1)) + pkcs1)


def test_ecdsa_data_holding_an_ed25519_spki_is_rejected() -> None:
    spki = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    data = b"\x08\x03\x12" + bytes([len(spki)]) + spki
    with pytest.raises(InvalidKeyError, match="ECDSA key data holds"):
        public_key_from_protobuf(data)


def test_rsa_data_holding_an_ec_key_is_rejected() -> None:
    spki = public_key_from_protobuf(vectors.ECDSA_PUBLIC).raw
    with pytest.raises(InvalidKeyError, match="non-RSA"):
        RsaPublicKey(spki)


def test_non_canonical_key_data_that_would_change_the_peer_id_is_rejected() -> None:
    ecdsa_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    compressed_point = ecdsa_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    compressed_spki = (
        bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + compressed_point
    )
    # The DER is valid (cryptography loads it), but go-libp2p would hash
    # its uncompressed re-encoding instead.
    assert serialization.load_der_public_key(compressed_spki) == ecdsa_key
    with pytest.raises(InvalidKeyError, match="canonical"):
        EcdsaPublicKey(compressed_spki)
    secp = ec.generate_private_key(ec.SECP256K1()).public_key()
    uncompressed = secp.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    with pytest.raises(InvalidKeyError, match="33-byte"):
        Secp256k1PublicKey(uncompressed)


def test_keys_compare_by_type_and_bytes() -> None:
    a = public_key_from_protobuf(vectors.ED25519_PUBLIC)
    b = public_key_from_protobuf(bytes(vectors.ED25519_PUBLIC))
    c = public_key_from_protobuf(vectors.SECP256K1_PUBLIC)
    assert a == b and len({a, b, c}) == 2
    assert a != c
    assert a != object()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_public_key_raises_only_invalid_key(data: bytes) -> None:
    try:
        key = public_key_from_protobuf(data)
    except InvalidKeyError:
        return
    assert isinstance(key, PublicKey)
    assert key.to_protobuf() == data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 1, 2, 3]), st.binary(max_size=120))
def test_garbage_key_data_raises_only_invalid_key(key_type: int, data: bytes) -> None:
    message = b"\x08" + bytes([key_type]) + b"\x12" + bytes([len(data)]) + data
    try:
        public_key_from_protobuf(message)
    except InvalidKeyError:
        pass
    try:
        key = private_key_from_protobuf(message)
    except InvalidKeyError:
        return
    assert isinstance(key, PrivateKey)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_signature_never_raises(signature: bytes) -> None:
    for _, pub in PAIRS.values():
        assert public_key_from_protobuf(pub).verify(b"data", signature) is False


@pytest.mark.parametrize(
    "make",
    [
        Ed25519PrivateKey.generate,
        Secp256k1PrivateKey.generate,
        EcdsaPrivateKey.generate,
        lambda: EcdsaPrivateKey.generate(ec.SECP384R1()),
        RsaPrivateKey.generate,
    ],
    ids=["ed25519", "secp256k1", "ecdsa-p256", "ecdsa-p384", "rsa-2048"],
)
def test_generated_keys_of_every_type_sign_verify_and_round_trip(
    make: Callable[[], PrivateKey],
) -> None:
    key = make()
    loaded = private_key_from_protobuf(key.to_protobuf())
    assert loaded.key_type is key.key_type
    assert loaded.public_key() == key.public_key()
    public = public_key_from_protobuf(key.public_key().to_protobuf())
    signature = loaded.sign(b"across types")
    assert public.verify(b"across types", signature)
    assert not public.verify(b"across types!", signature)
    assert key.public_key().to_protobuf()[0:2] == b"\x08" + bytes([int(key.key_type)])


def test_rsa_generation_refuses_sizes_outside_the_accepted_range() -> None:
    with pytest.raises(InvalidKeyError):
        RsaPrivateKey.generate(1024)
    with pytest.raises(InvalidKeyError):
        RsaPrivateKey.generate(16384)


def test_secp256k1_private_key_must_be_a_valid_scalar() -> None:
    with pytest.raises(InvalidKeyError):
        Secp256k1PrivateKey.from_raw(bytes(32))
    with pytest.raises(InvalidKeyError):
        Secp256k1PrivateKey.from_raw(b"\xff" * 32)
    with pytest.raises(InvalidKeyError):
        Secp256k1PrivateKey.from_raw(b"\x01" * 31)


GO_FIXTURES = {
    KeyType.RSA: (
        go_fixtures.GO_RSA_PRIVATE,
        go_fixtures.GO_RSA_PUBLIC,
        go_fixtures.GO_RSA_SIGNATURE,
    ),
    KeyType.SECP256K1: (
        go_fixtures.GO_SECP256K1_PRIVATE,
        go_fixtures.GO_SECP256K1_PUBLIC,
        go_fixtures.GO_SECP256K1_SIGNATURE,
    ),
    KeyType.ECDSA: (
        go_fixtures.GO_ECDSA_PRIVATE,
        go_fixtures.GO_ECDSA_PUBLIC,
        go_fixtures.GO_ECDSA_SIGNATURE,
    ),
}


@pytest.mark.parametrize("key_type", list(GO_FIXTURES))
def test_go_libp2p_fixtures_round_trip_and_verify(key_type: KeyType) -> None:
    priv_bytes, pub_bytes, signature = GO_FIXTURES[key_type]
    public = public_key_from_protobuf(pub_bytes)
    private = private_key_from_protobuf(priv_bytes)
    assert public.key_type is key_type
    assert public.to_protobuf() == pub_bytes
    assert private.to_protobuf() == priv_bytes
    assert private.public_key() == public
    assert public.verify(go_fixtures.MESSAGE, signature)
    assert not public.verify(go_fixtures.MESSAGE + b"?", signature)
    assert public.verify(go_fixtures.MESSAGE, private.sign(go_fixtures.MESSAGE))


def test_rsa_signature_matches_go_byte_for_byte() -> None:
    # PKCS#1 v1.5 is deterministic, so our signature must equal go's.
    private = private_key_from_protobuf(go_fixtures.GO_RSA_PRIVATE)
    assert private.sign(go_fixtures.MESSAGE) == go_fixtures.GO_RSA_SIGNATURE
