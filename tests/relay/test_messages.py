"""The hop/stop codec: round trips, limits, typed errors under fuzzing;
vouchers: forgery, another relay, another peer, another expiry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import RemoteProtocolError
from overlay.identity import Ed25519PrivateKey, PeerId, seal
from overlay.relay.errors import InvalidVoucher, RelayDecodeError, RelayMessageTooLarge
from overlay.relay.messages import (
    MAX_MESSAGE_SIZE,
    HopMessage,
    HopType,
    Limit,
    Peer,
    Reservation,
    Status,
    StopMessage,
    StopType,
    decode_hop,
    decode_stop,
    encode_hop,
    encode_stop,
)
from overlay.relay.voucher import (
    VOUCHER_DOMAIN,
    VOUCHER_PAYLOAD_TYPE,
    Voucher,
    open_voucher,
    seal_voucher,
)
from overlay.wire.pb import circuit_pb2

KEY = Ed25519PrivateKey.generate()
RELAY = PeerId.from_public_key(KEY.public_key())
PEER = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def test_hop_round_trip() -> None:
    msg = HopMessage(HopType.STATUS, Peer(PEER, (b"\x04\x7f\x00\x00\x01",)),
                     Reservation(1_800_000_000, (b"\x04\x0a\x00\x00\x01",), b"v"),
                     Limit(120, 131072), Status.OK)
    assert decode_hop(encode_hop(msg)) == msg
    assert decode_hop(encode_hop(HopMessage(HopType.RESERVE))) == HopMessage(HopType.RESERVE)


def test_stop_round_trip() -> None:
    msg = StopMessage(StopType.CONNECT, Peer(PEER), Limit(None, 10))
    assert decode_stop(encode_stop(msg)) == msg


def test_unknown_type_missing_type_bad_peer() -> None:
    with pytest.raises(RelayDecodeError):
        decode_hop(circuit_pb2.HopMessage(type=7).SerializeToString())
    with pytest.raises(RelayDecodeError):
        decode_hop(b"")
    with pytest.raises(RelayDecodeError):
        decode_hop(circuit_pb2.HopMessage(type=1, peer=circuit_pb2.Peer(id=b"xx"))
                   .SerializeToString())
    with pytest.raises(RelayDecodeError):
        decode_stop(circuit_pb2.StopMessage(type=0, peer=circuit_pb2.Peer())
                    .SerializeToString())
    with pytest.raises(RelayDecodeError):
        decode_hop(circuit_pb2.HopMessage(type=2, reservation=circuit_pb2.Reservation(
            voucher=b"v")).SerializeToString())


def test_size_limit_before_parsing() -> None:
    with pytest.raises(RelayMessageTooLarge):
        decode_hop(b"\x00" * (MAX_MESSAGE_SIZE + 1))
    with pytest.raises(RelayMessageTooLarge):
        decode_stop(b"\x00" * (MAX_MESSAGE_SIZE + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_decoders_raise_only_typed_errors(data: bytes) -> None:
    for decode in (decode_hop, decode_stop):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2), st.one_of(st.none(), st.integers(1, 2**32 - 1)),
       st.one_of(st.none(), st.integers(1, 2**64 - 1)), st.lists(st.binary(max_size=40),
                                                               max_size=5))
def test_fuzz_hop_round_trip(kind: int, duration: int | None, data: int | None,
                             addrs: list[bytes]) -> None:
    msg = HopMessage(HopType(kind), Peer(PEER, tuple(addrs)), None, Limit(duration, data), 100)
    assert decode_hop(encode_hop(msg)) == msg


def test_voucher_round_trip() -> None:
    env = seal_voucher(KEY, Voucher(RELAY, PEER, 1234))
    assert open_voucher(env, relay=RELAY, peer=PEER, expiration=1234) == Voucher(
        RELAY, PEER, 1234)


def test_voucher_for_another_peer_or_relay_or_expiry() -> None:
    env = seal_voucher(KEY, Voucher(RELAY, PEER, 1234))
    with pytest.raises(InvalidVoucher, match="for peer"):
        open_voucher(env, relay=RELAY, peer=RELAY)
    with pytest.raises(InvalidVoucher, match="signed by"):
        open_voucher(env, relay=PEER, peer=PEER)
    with pytest.raises(InvalidVoucher, match="expires"):
        open_voucher(env, relay=RELAY, peer=PEER, expiration=99)


def test_forged_voucher() -> None:
    # Signed by someone else, naming the relay.
    forger = Ed25519PrivateKey.generate()
    forged = seal_voucher(forger, Voucher(RELAY, PEER, 1234))
    with pytest.raises(InvalidVoucher, match="signed by"):
        open_voucher(forged, relay=RELAY, peer=PEER)
    # A tampered payload breaks the signature.
    env = bytearray(seal_voucher(KEY, Voucher(RELAY, PEER, 1234)))
    env[-70] ^= 1
    with pytest.raises(InvalidVoucher):
        open_voucher(bytes(env), relay=RELAY, peer=PEER)
    # The right key, the wrong domain (a peer record signature replayed).
    payload = circuit_pb2.ReservationVoucher(relay=RELAY.to_bytes(), peer=PEER.to_bytes(),
                                             expiration=1).SerializeToString()
    other = seal(KEY, "libp2p-peer-record", VOUCHER_PAYLOAD_TYPE, payload)
    with pytest.raises(InvalidVoucher):
        open_voucher(other, relay=RELAY, peer=PEER)
    wrong_type = seal(KEY, VOUCHER_DOMAIN, b"\x03\x01", payload)
    with pytest.raises(InvalidVoucher, match="payload type"):
        open_voucher(wrong_type, relay=RELAY, peer=PEER)
    with pytest.raises(InvalidVoucher, match="malformed"):
        open_voucher(seal(KEY, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, b"\xff\xff"),
                     relay=RELAY, peer=PEER)
