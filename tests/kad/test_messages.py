import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import LocalProtocolError, MessageTooLarge, OverlayError
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.addrs import check_multiaddr, ip_groups
from overlay.kad.errors import InvalidKadMessage, InvalidPeerInfo, TooManyPeers, UnsupportedMessageType
from overlay.kad.keyspace import fake_peer_id
from overlay.kad.messages import (
    MAX_MESSAGE_SIZE,
    ConnectionType,
    KadMessage,
    MessageType,
    PeerInfo,
    decode_message,
    encode_message,
)
from overlay.kad.records import Record
from overlay.wire.pb import kad_pb2
from tests.kad.helpers import ip4, ip6

RNG = random.Random(17)
PEERS = [fake_peer_id(RNG) for _ in range(50)]


def raw(**fields: object) -> bytes:
    pb = kad_pb2.Message()
    for name, value in fields.items():
        if name == "closer":
            for peer_id, addrs in value:  # type: ignore[attr-defined]
                entry = pb.closerPeers.add()
                entry.id = peer_id
                entry.addrs.extend(addrs)
        else:
            setattr(pb, name, value)
    return pb.SerializeToString()


def test_round_trip_of_every_field() -> None:
    ed = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    message = KadMessage(
        MessageType.GET_PROVIDERS,
        b"\x12\x20" + bytes(32),
        record=Record(b"/v/k", b"value", "2024-01-01T00:00:00Z"),
        closer_peers=(PeerInfo(PEERS[0], (ip4(1, 2, 3, 4),), ConnectionType.CONNECTED), PeerInfo(ed)),
        provider_peers=(PeerInfo(PEERS[1], (ip6(b"\x20\x01\x0d\xb8"),)),),
    )
    assert decode_message(encode_message(message)) == message


def test_wire_field_numbers_match_the_spec() -> None:
    data = encode_message(KadMessage(MessageType.FIND_NODE, b"k", closer_peers=(PeerInfo(PEERS[0]),)))
    # type=1 varint 4, key=2 "k", closerPeers=8 {id=1}
    assert data[:5] == bytes([0x08, 0x04, 0x12, 0x01, ord("k")])
    assert data[5] == (8 << 3) | 2
    record = encode_message(KadMessage(MessageType.PUT_VALUE, b"k", record=Record(b"k", b"v", "t")))
    assert bytes([(3 << 3) | 2]) in record and bytes([(5 << 3) | 2, 1, ord("t")]) in record


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(MessageTooLarge):
        decode_message(bytes(MAX_MESSAGE_SIZE + 1))
    with pytest.raises(LocalProtocolError):
        encode_message(KadMessage(MessageType.PUT_VALUE, b"k", record=Record(b"k", bytes(MAX_MESSAGE_SIZE))))


def test_ping_and_unknown_types_are_refused() -> None:
    for number in (5, 6, 1000):
        with pytest.raises(UnsupportedMessageType) as caught:
            decode_message(raw(type=number))
        assert caught.value.type_number == number


def test_too_many_closer_peers() -> None:
    data = raw(type=4, closer=[(p.multihash, []) for p in PEERS[:41]])
    with pytest.raises(TooManyPeers):
        decode_message(data)
    assert len(decode_message(raw(type=4, closer=[(p.multihash, []) for p in PEERS[:40]])).closer_peers) == 40


def test_garbage_peer_ids_and_addresses() -> None:
    with pytest.raises(InvalidPeerInfo):
        decode_message(raw(type=4, closer=[(b"\x99\x01garbage", [])]))
    with pytest.raises(InvalidPeerInfo):  # identity multihash without a valid key inside
        decode_message(raw(type=4, closer=[(b"\x00\x03abc", [])]))
    with pytest.raises(InvalidPeerInfo):  # truncated ip4
        decode_message(raw(type=4, closer=[(PEERS[0].multihash, [b"\x04\x01\x02"])]))
    with pytest.raises(InvalidPeerInfo):
        decode_message(raw(type=4, closer=[(PEERS[0].multihash, [ip4(1, 1, 1, 1)] * 33)]))
    # An address of a protocol we do not know is skipped, not fatal.
    unknown = b"\xe0\x8f\x03" + b"xx"
    message = decode_message(raw(type=4, closer=[(PEERS[0].multihash, [unknown, ip4(1, 1, 1, 1)])]))
    assert message.closer_peers[0].addrs == (ip4(1, 1, 1, 1),)


def test_malformed_protobuf_and_oversized_key() -> None:
    with pytest.raises(InvalidKadMessage):
        decode_message(b"\x0a\xff\xff")
    with pytest.raises(InvalidKadMessage):
        decode_message(raw(type=1, key=bytes(1025)))


def test_duplicate_peers_are_merged() -> None:
    data = raw(type=4, closer=[(PEERS[0].multihash, []), (PEERS[0].multihash, [ip4(1, 1, 1, 1)])])
    assert len(decode_message(data).closer_peers) == 1


def test_multiaddr_checks_and_ip_groups() -> None:
    assert check_multiaddr(ip4(8, 8, 8, 8))
    assert check_multiaddr(b"\x36\x0bexample.com\x06\x00\x50")  # /dns4/example.com/tcp/80
    with pytest.raises(InvalidPeerInfo):
        check_multiaddr(b"")
    with pytest.raises(InvalidPeerInfo):
        check_multiaddr(b"\x36\x0bexample")  # dns4 length beyond the end
    assert ip_groups((ip4(8, 8, 4, 4), ip4(8, 8, 4, 5), ip4(10, 0, 0, 1))) == (b"4\x08\x08\x04",)
    assert ip_groups((ip6(b"\x20\x01\x0d\xb9\x00\x07"),)) == (b"6\x20\x01\x0d\xb9\x00\x07",)
    assert ip_groups((ip6(b"\xfe\x80"), ip4(127, 0, 0, 1))) == ()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_only_typed_errors_escape(data: bytes) -> None:
    try:
        message = decode_message(data)
    except OverlayError:
        return
    assert decode_message(encode_message(message)) == message


peer_strategy = st.builds(
    lambda i, addrs: (PEERS[i].multihash, addrs),
    st.integers(0, len(PEERS) - 1),
    st.lists(st.binary(max_size=40), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 8), st.binary(max_size=64), st.lists(peer_strategy, max_size=45))
def test_fuzz_structured_messages(type_number: int, key: bytes, peers: list[tuple[bytes, list[bytes]]]) -> None:
    try:
        message = decode_message(raw(type=type_number, key=key, closer=peers))
    except OverlayError:
        return
    assert message.type == type_number and len(message.closer_peers) <= 40
    for info in message.closer_peers:
        assert all(check_multiaddr(addr) for addr in info.addrs)
