from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import InvalidPeerId
from overlay.identity import (
    Ed25519PrivateKey,
    PeerId,
    public_key_from_protobuf,
)

from . import vectors

# Examples printed in libp2p/specs peer-ids/peer-ids.md.
SPEC_SHA256_B58 = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
SPEC_SHA256_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
SPEC_ED25519_B58 = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


@pytest.mark.parametrize("pub", [vectors.ED25519_PUBLIC, vectors.SECP256K1_PUBLIC])
def test_small_keys_use_the_identity_multihash(pub: bytes) -> None:
    peer = PeerId.from_public_key(public_key_from_protobuf(pub))
    assert peer.multihash == b"\x00" + bytes([len(pub)]) + pub
    assert peer.extract_public_key() == public_key_from_protobuf(pub)


@pytest.mark.parametrize("pub", [vectors.ECDSA_PUBLIC, vectors.RSA_PUBLIC])
def test_large_keys_use_sha256(pub: bytes) -> None:
    peer = PeerId.from_public_key(public_key_from_protobuf(pub))
    assert peer.multihash == b"\x12\x20" + hashlib.sha256(pub).digest()
    assert peer.extract_public_key() is None
    assert peer.to_base58().startswith("Qm")


def test_ed25519_peer_ids_print_as_12d3koow() -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    assert peer.to_base58().startswith("12D3KooW")
    assert str(peer) == peer.to_base58()
    assert PeerId.from_string(str(peer)) == peer
    assert repr(peer) == f"PeerId({str(peer)!r})"


def test_spec_example_cid_and_base58_are_the_same_peer() -> None:
    assert PeerId.from_string(SPEC_SHA256_CID) == PeerId.from_string(SPEC_SHA256_B58)
    assert PeerId.from_string(SPEC_SHA256_B58).to_cid() == SPEC_SHA256_CID


def test_spec_example_ed25519_id_holds_its_key() -> None:
    peer = PeerId.from_string(SPEC_ED25519_B58)
    key = peer.extract_public_key()
    assert key is not None
    assert peer.matches_public_key(key)
    assert PeerId.from_string(peer.to_cid()) == peer
    assert PeerId.from_string(peer.to_cid("base36")) == peer
    assert peer.to_cid().startswith("bafzaa")
    assert peer.to_cid("base36").startswith("k51")


def test_base36_matches_an_independent_multibase_encoder() -> None:
    multibase = pytest.importorskip("multibase")
    peer = PeerId.from_string(SPEC_ED25519_B58)
    cid = b"\x01\x72" + peer.multihash
    assert peer.to_cid("base36") == multibase.encode("base36", cid).decode()
    assert peer.to_cid("base32") == multibase.encode("base32", cid).decode()


def test_uppercase_multibase_forms_parse() -> None:
    peer = PeerId.from_string(SPEC_ED25519_B58)
    cid = b"\x01\x72" + peer.multihash
    assert PeerId.from_string("f" + cid.hex()) == peer
    assert PeerId.from_string("F" + cid.hex().upper()) == peer
    with pytest.raises(InvalidPeerId, match="base16"):
        PeerId.from_string("f" + cid.hex()[:-2] + " 0")
    assert PeerId.from_string("B" + peer.to_cid()[1:].upper()) == peer
    assert PeerId.from_string("K" + peer.to_cid("base36")[1:].upper()) == peer


def test_matches_public_key_rejects_other_keys() -> None:
    a = Ed25519PrivateKey.generate().public_key()
    b = Ed25519PrivateKey.generate().public_key()
    assert PeerId.from_public_key(a).matches_public_key(a)
    assert not PeerId.from_public_key(a).matches_public_key(b)
    rsa = public_key_from_protobuf(vectors.RSA_PUBLIC)
    assert PeerId.from_public_key(rsa).matches_public_key(rsa)
    assert not PeerId.from_public_key(rsa).matches_public_key(a)


def test_from_bytes_round_trip_and_hashability() -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    same = PeerId.from_bytes(peer.to_bytes())
    assert same == peer and hash(same) == hash(peer)
    assert len({peer, same}) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x12\x20" + bytes(31), "declares"),
        (b"\x12\x10" + bytes(16), "32 bytes"),
        (b"\x13\x20" + bytes(32), "unsupported multihash code"),
        (b"\x00\x05hello", "valid public key"),
        (b"\x00\x2b" + bytes(3), "exceeds"),
        (b"\x12\x20" + bytes(33), "declares"),
    ],
)
def test_invalid_binary_peer_ids(data: bytes, message: str) -> None:
    with pytest.raises(InvalidPeerId, match=message):
        PeerId.from_bytes(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("hello", "expected base58btc"),
        ("Qm0OIl", "invalid base58btc character"),
        ("111", "declares"),
        ("b!!!", "invalid base32"),
        ("bafy" + "a" * 20, "CID"),
        ("k-bad", "invalid base36"),
        ("Q" + "m" * 200, "too long"),
    ],
)
def test_invalid_text_peer_ids(text: str, message: str) -> None:
    with pytest.raises(InvalidPeerId, match=message):
        PeerId.from_string(text)


def test_cid_with_another_codec_is_rejected() -> None:
    import base64

    peer = PeerId.from_string(SPEC_SHA256_B58)
    dag_pb = b"\x01\x70" + peer.multihash
    text = "b" + base64.b32encode(dag_pb).decode().lower().rstrip("=")
    with pytest.raises(InvalidPeerId, match="not libp2p-key"):
        PeerId.from_string(text)


def test_invalid_peer_id_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        PeerId.from_string("nope")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_garbage_text_raises_only_invalid_peer_id(text: str) -> None:
    try:
        peer = PeerId.from_string(text)
    except InvalidPeerId:
        return
    assert PeerId.from_string(peer.to_base58()) == peer


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_bytes_raise_only_invalid_peer_id(data: bytes) -> None:
    try:
        peer = PeerId.from_bytes(data)
    except InvalidPeerId:
        return
    assert peer.to_bytes() == data
