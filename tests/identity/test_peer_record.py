from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from overlay.errors import DecodeError, InvalidSignature, LocalProtocolError, RemoteProtocolError
from overlay.identity import Ed25519PrivateKey, PeerId, private_key_from_protobuf
from overlay.identity.envelope import open_envelope, seal
from overlay.identity.errors import PeerRecordMismatch
from overlay.identity.peer_record import (
    PEER_RECORD_DOMAIN,
    PEER_RECORD_PAYLOAD_TYPE,
    PeerRecord,
    open_peer_record,
    seal_peer_record,
)

from . import vectors

# Signed peer records written by go-libp2p and js-libp2p, from the interop
# fixtures of rust-libp2p (core/tests/fixtures).  Both carry one address,
# /ip4/127.0.0.1/tcp/4001.
GO_SIGNED_PEER_RECORD = bytes.fromhex(
    "0a240801122018c05fd16a961c23116c0426344b3fd57928d70dc08ff18e4543ceeca970"
    "7820120203011a340a2600240801122018c05fd16a961c23116c0426344b3fd57928d70d"
    "c08ff18e4543ceeca97078201a0a0a08047f000001060fa12a40a1419f42fe5c2f0c91c7"
    "2189726961e1ccc965fbfd4009f56052bde431c8f1d8f1666287023dfbd815ea68c68a24"
    "cc43dfceddd1753229b24a74933448719602"
)
JS_SIGNED_PEER_RECORD = bytes.fromhex(
    "0a2408011220dcd90ada403185b14ce55a5ffd439bf44e754ecaa875557942bd6d30aae3"
    "d778120203011a3b0a26002408011220dcd90ada403185b14ce55a5ffd439bf44e754eca"
    "a875557942bd6d30aae3d77810f0e6c486a8331a0a0a08047f000001060fa12a404f03fb"
    "f7c6ae1ad5b0cd9175ab1ac041c52df7a6f3a087a6c7f44c077fded713d07a08cb72fb47"
    "8d24bd26848f5627888f65e689b6d34ec430329204e7465303"
)


@pytest.mark.parametrize("envelope", [GO_SIGNED_PEER_RECORD, JS_SIGNED_PEER_RECORD])
def test_records_signed_by_go_and_js_libp2p_open(envelope: bytes) -> None:
    record = open_peer_record(envelope)
    signer = open_envelope(envelope, PEER_RECORD_DOMAIN).public_key
    assert record.peer_id == PeerId.from_public_key(signer)
    assert [str(Multiaddr(a)) for a in record.addrs] == ["/ip4/127.0.0.1/tcp/4001"]


def test_js_record_has_a_sequence_number_and_go_record_has_zero() -> None:
    assert open_peer_record(JS_SIGNED_PEER_RECORD).seq > 0
    assert open_peer_record(GO_SIGNED_PEER_RECORD).seq == 0


def test_our_sealed_record_is_byte_identical_in_layout_to_go() -> None:
    # Re-encode go's record through our types: the payload must match.
    record = open_peer_record(GO_SIGNED_PEER_RECORD)
    go_payload = open_envelope(GO_SIGNED_PEER_RECORD, PEER_RECORD_DOMAIN).payload
    assert record.to_protobuf() == go_payload


@pytest.mark.parametrize(
    "private_bytes", [vectors.ED25519_PRIVATE, vectors.SECP256K1_PRIVATE, vectors.RSA_PRIVATE]
)
def test_seal_and_open_round_trip(private_bytes: bytes) -> None:
    key = private_key_from_protobuf(private_bytes)
    addrs = (
        Multiaddr("/ip4/192.0.2.1/udp/4001/quic-v1").to_bytes(),
        Multiaddr("/ip6/2001:db8::1/udp/4001/quic-v1").to_bytes(),
    )
    record = PeerRecord(PeerId.from_public_key(key.public_key()), 1_700_000_000_000, addrs)
    envelope = seal_peer_record(key, record)
    assert open_peer_record(envelope) == record
    opened = open_envelope(envelope, PEER_RECORD_DOMAIN)
    assert opened.payload_type == PEER_RECORD_PAYLOAD_TYPE == b"\x03\x01"


def test_record_for_another_peer_is_rejected() -> None:
    signer = Ed25519PrivateKey.generate()
    other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    forged = seal(
        signer, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, PeerRecord(other, 1).to_protobuf()
    )
    with pytest.raises(PeerRecordMismatch, match=str(other)):
        open_peer_record(forged)
    with pytest.raises(LocalProtocolError):
        seal_peer_record(signer, PeerRecord(other, 1))


def test_wrong_payload_type_or_domain_is_rejected() -> None:
    key = Ed25519PrivateKey.generate()
    payload = PeerRecord(PeerId.from_public_key(key.public_key()), 1).to_protobuf()
    with pytest.raises(DecodeError, match="not a peer record"):
        open_peer_record(seal(key, PEER_RECORD_DOMAIN, b"\x03\x02", payload))
    with pytest.raises(InvalidSignature):
        open_peer_record(seal(key, "libp2p-other", PEER_RECORD_PAYLOAD_TYPE, payload))


def test_malformed_payload_is_a_decode_error() -> None:
    key = Ed25519PrivateKey.generate()
    for payload in (b"\xff\xff", b"\x0a\x03abc"):
        with pytest.raises(DecodeError):
            open_peer_record(seal(key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, payload))


def test_record_validation() -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(LocalProtocolError):
        PeerRecord(peer, -1)
    with pytest.raises(LocalProtocolError):
        PeerRecord(peer, 1 << 64)
    with pytest.raises(LocalProtocolError):
        PeerRecord(peer, 1, tuple(b"\x04" for _ in range(65)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_payload_raises_only_decode_errors(payload: bytes) -> None:
    key = private_key_from_protobuf(vectors.ED25519_PRIVATE)
    envelope = seal(key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, payload)
    try:
        record = open_peer_record(envelope)
    except RemoteProtocolError:
        return
    assert record.peer_id.matches_public_key(key.public_key())
