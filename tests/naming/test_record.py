from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import LocalProtocolError, MessageTooLarge
from overlay.identity import Ed25519PrivateKey
from overlay.naming import (
    MAX_RECORD_BYTES,
    RECORD_DOMAIN,
    MalformedRecord,
    NameRecord,
    RecordKind,
    RecordRejected,
    Service,
    TooLarge,
    UnsupportedVersion,
    decode_record,
    sign_record,
)
from overlay.naming import record as record_module
from overlay.wire.pb import name_record_pb2
from tests.naming.helpers import owner_of, record


def _full(alice: Ed25519PrivateKey) -> NameRecord:
    return record(
        alice,
        sequence=2**64 - 1,
        ips=(bytes([127, 0, 0, 1]), bytes(16)),
        services=(Service("http", 8080, "www.alice.ovl", 10, 5), Service("/chat/1.0.0", 0)),
        txt=("hello", "", "wörld"),
        kind=RecordKind.UPDATE,
    )


def test_encoding_is_the_protobuf_encoding(alice: Ed25519PrivateKey) -> None:
    rec = _full(alice)
    data = rec.to_bytes()
    message = name_record_pb2.NameRecord()
    message.ParseFromString(data)
    assert message.SerializeToString() == data
    assert message.name == "alice.ovl"
    assert message.sequence == 2**64 - 1
    assert list(message.txt) == ["hello", "", "wörld"]
    assert message.services[0].target == "www.alice.ovl"
    assert decode_record(data) == rec


def test_signature_covers_the_domain_separated_unsigned_record(alice: Ed25519PrivateKey) -> None:
    rec = _full(alice)
    signed = rec.signing_bytes()
    assert signed.startswith(RECORD_DOMAIN)
    unsigned = name_record_pb2.NameRecord()
    unsigned.ParseFromString(signed[len(RECORD_DOMAIN):])
    assert unsigned.signature == b""
    assert alice.public_key().verify(signed, rec.signature)
    # Changing any field changes what is signed.
    assert dataclasses.replace(rec, ttl=rec.ttl + 1).signing_bytes() != signed


def test_only_the_owner_can_sign(alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey) -> None:
    rec = record(alice)
    with pytest.raises(LocalProtocolError):
        sign_record(rec, mallory)


def test_oversized_record_is_refused_before_parsing(
    alice: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = record(alice, txt=tuple("x" * 200 for _ in range(60))).to_bytes()
    assert len(big) > MAX_RECORD_BYTES

    class Exploding:
        def __init__(self) -> None:
            raise AssertionError("the parser ran on an oversized record")

    monkeypatch.setattr(record_module.name_record_pb2, "NameRecord", Exploding)
    with pytest.raises(TooLarge) as info:
        decode_record(big)
    assert isinstance(info.value, MessageTooLarge)
    assert info.value.size == len(big) and info.value.limit == MAX_RECORD_BYTES


def test_a_record_at_the_cap_is_parsed(alice: Ed25519PrivateKey) -> None:
    data = record(alice).to_bytes()
    assert decode_record(data, max_size=len(data)).name == "alice.ovl"
    with pytest.raises(TooLarge):
        decode_record(data, max_size=len(data) - 1)


def test_non_canonical_encodings_are_refused(alice: Ed25519PrivateKey) -> None:
    data = record(alice).to_bytes()
    # An unknown field (number 20, varint) appended.
    with pytest.raises(MalformedRecord, match="canonical"):
        decode_record(data + bytes([0xA0, 0x01, 0x01]))
    # A field written twice (protobuf keeps the last one).
    with pytest.raises(MalformedRecord, match="canonical"):
        decode_record(data + bytes([7 << 3, 5]))
    # A non-minimal varint for the version (1 as 0x81 0x00).
    assert data[:2] == bytes([0x08, 0x01])
    with pytest.raises(MalformedRecord, match="canonical"):
        decode_record(bytes([0x08, 0x81, 0x00]) + data[2:])


def test_unknown_version_and_kind(alice: Ed25519PrivateKey) -> None:
    rec = record(alice)
    with pytest.raises(UnsupportedVersion) as info:
        decode_record(dataclasses.replace(rec, version=2).to_bytes())
    assert info.value.version == 2
    message = name_record_pb2.NameRecord()
    message.ParseFromString(rec.to_bytes())
    message.kind = 9  # type: ignore[assignment]
    with pytest.raises(MalformedRecord):
        decode_record(message.SerializeToString())


def test_garbage_is_malformed() -> None:
    with pytest.raises(MalformedRecord):
        decode_record(b"\xff\xff\xff")
    with pytest.raises(UnsupportedVersion):
        decode_record(b"")


def test_field_ranges_are_checked_locally(alice: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError):
        NameRecord(name="a.ovl", owner=owner_of(alice), sequence=-1, expires=1, ttl=1)
    with pytest.raises(ValueError):
        NameRecord(name="a.ovl", owner=b"", sequence=0, expires=1, ttl=2**32)
    with pytest.raises(ValueError):
        NameRecord(
            name="a.ovl", owner=b"", sequence=0, expires=1, ttl=1, services=(Service("x", 70000),)
        )


def test_replace_does_not_reuse_a_stale_encoding(alice: Ed25519PrivateKey) -> None:
    rec = record(alice)
    first = rec.to_bytes()
    changed = dataclasses.replace(rec, ttl=rec.ttl + 1)
    assert changed.to_bytes() != first
    assert decode_record(changed.to_bytes()).ttl == rec.ttl + 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoding_arbitrary_bytes_raises_only_typed_errors(data: bytes) -> None:
    try:
        rec = decode_record(data)
    except RecordRejected:
        return
    assert rec.to_bytes() == data


_SAMPLE = record(Ed25519PrivateKey.from_seed(bytes(32))).to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_records_decode_or_fail_typed(data: st.DataObject) -> None:
    base = bytearray(_SAMPLE)
    index = data.draw(st.integers(0, len(base) - 1))
    base[index] = data.draw(st.integers(0, 255))
    try:
        rec = decode_record(bytes(base))
    except RecordRejected:
        return
    assert rec.to_bytes() == bytes(base)
