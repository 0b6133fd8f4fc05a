from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import (
    DecodeError,
    InvalidSignature,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
)
from overlay.identity import Ed25519PrivateKey, PeerId, private_key_from_protobuf
from overlay.identity.envelope import open_envelope, seal, signing_input
from overlay.wire.pb import envelope_pb2

from . import vectors

ALL_PRIVATE = [
    vectors.ED25519_PRIVATE,
    vectors.SECP256K1_PRIVATE,
    vectors.ECDSA_PRIVATE,
    vectors.RSA_PRIVATE,
]


def test_signing_input_is_length_prefixed_domain_type_payload() -> None:
    assert signing_input("ab", b"\x03\x01", b"xyz") == b"\x02ab\x02\x03\x01\x03xyz"
    long_payload = bytes(200)
    assert signing_input("d", b"t", long_payload) == b"\x01d\x01t\xc8\x01" + long_payload


@pytest.mark.parametrize("private_bytes", ALL_PRIVATE)
def test_seal_and_open_with_every_key_type(private_bytes: bytes) -> None:
    key = private_key_from_protobuf(private_bytes)
    data = seal(key, "test-domain", b"\x12\x34", b"payload")
    opened = open_envelope(data, "test-domain")
    assert opened.public_key == key.public_key()
    assert opened.payload_type == b"\x12\x34"
    assert opened.payload == b"payload"
    assert opened.peer_id == PeerId.from_public_key(key.public_key())
    signed = signing_input("test-domain", b"\x12\x34", b"payload")
    assert key.public_key().verify(signed, opened.signature)


def test_envelope_fields_use_the_rfc_tags() -> None:
    key = Ed25519PrivateKey.generate()
    data = seal(key, "d", b"\x01", b"p")
    # public_key=1 (0x0a), payload_type=2 (0x12), payload=3 (0x1a), signature=5 (0x2a)
    assert data[0] == 0x0A and data[1] == 36
    assert data[2:38] == key.public_key().to_protobuf()
    assert data[38:44] == b"\x12\x01\x01\x1a\x01p"
    assert data[44:46] == b"\x2a\x40"


def test_wrong_domain_fails_verification() -> None:
    data = seal(Ed25519PrivateKey.generate(), "domain-a", b"\x01", b"p")
    with pytest.raises(InvalidSignature, match="domain-b"):
        open_envelope(data, "domain-b")


@pytest.mark.parametrize("field", ["payload", "payload_type", "public_key", "signature"])
def test_tampering_with_any_field_is_detected(field: str) -> None:
    data = seal(Ed25519PrivateKey.generate(), "d", b"\x01", b"payload")
    message = envelope_pb2.Envelope()
    message.ParseFromString(data)
    if field == "public_key":
        message.public_key = Ed25519PrivateKey.generate().public_key().to_protobuf()
    else:
        value = bytearray(getattr(message, field))
        value[-1] ^= 1
        setattr(message, field, bytes(value))
    with pytest.raises(InvalidSignature):
        open_envelope(message.SerializeToString(), "d")


def test_oversized_envelope_is_rejected_before_parsing() -> None:
    data = seal(Ed25519PrivateKey.generate(), "d", b"\x01", bytes(1000))
    assert open_envelope(data, "d", max_size=len(data)).payload == bytes(1000)
    with pytest.raises(MessageTooLarge):
        open_envelope(data, "d", max_size=len(data) - 1)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff",
        b"\x12\x01\x01\x1a\x01p",  # no key
        b"\x0a\x03abc\x12\x01\x01",  # key is garbage
    ],
)
def test_malformed_envelopes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        open_envelope(data, "d")


def test_envelope_without_payload_type_is_rejected() -> None:
    key = Ed25519PrivateKey.generate()
    message = envelope_pb2.Envelope(
        public_key=key.public_key().to_protobuf(),
        payload=b"p",
        signature=key.sign(signing_input("d", b"", b"p")),
    )
    with pytest.raises(DecodeError, match="payload type"):
        open_envelope(message.SerializeToString(), "d")


def test_sealing_needs_domain_and_payload_type() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(LocalProtocolError):
        seal(key, "", b"\x01", b"p")
    with pytest.raises(LocalProtocolError):
        seal(key, "d", b"", b"p")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_remote_protocol_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        open_envelope(data, "d")
