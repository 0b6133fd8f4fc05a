"""DCUtR codec: round trips, the 4 KiB limit, typed errors for malformed
messages, and hypothesis-driven garbage that must end in a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from overlay.errors import DecodeError
from overlay.nat.dcutr_messages import (
    MAX_ADDR_LEN,
    MAX_ADDRS,
    MAX_MESSAGE_SIZE,
    DcutrDecodeError,
    DcutrMessageTooLarge,
    HolePunch,
    MessageType,
    decode,
    encode,
)
from overlay.wire.pb import dcutr_pb2

ADDR = Multiaddr("/ip4/203.0.113.7/udp/4001/quic-v1").to_bytes()


def _raw(type_: int | None, addrs: list[bytes]) -> bytes:
    pb = dcutr_pb2.HolePunch()
    if type_ is not None:
        pb.type = type_
    pb.ObsAddrs.extend(addrs)
    return pb.SerializeToString()


@pytest.mark.parametrize("message", [
    HolePunch(MessageType.CONNECT, (ADDR,)),
    HolePunch(MessageType.CONNECT),
    HolePunch(MessageType.SYNC),
    HolePunch(MessageType.CONNECT, tuple(bytes([4, i, 0, 0, 1]) for i in range(MAX_ADDRS))),
])
def test_round_trip(message: HolePunch) -> None:
    assert decode(encode(message)) == message


def test_the_spec_wire_values() -> None:
    # type=1 varint 100, ObsAddrs=2 bytes: what go-libp2p and rust-libp2p send.
    assert encode(HolePunch(MessageType.CONNECT, (b"\x01",))) == b"\x08\x64\x12\x01\x01"
    assert encode(HolePunch(MessageType.SYNC)) == b"\x08\xac\x02"


def test_over_4_kib_is_refused_before_parsing() -> None:
    with pytest.raises(DcutrMessageTooLarge) as info:
        decode(b"\x00" * (MAX_MESSAGE_SIZE + 1))
    assert info.value.limit == MAX_MESSAGE_SIZE


@pytest.mark.parametrize(("raw", "why"), [
    (_raw(None, [ADDR]), "without its type"),
    (_raw(200, []), "unknown DCUtR message type 200"),
    (_raw(100, [ADDR] * (MAX_ADDRS + 1)), "addresses"),
    (_raw(100, [b"\x04" * (MAX_ADDR_LEN + 1)]), "over"),
    (b"\x0a\xff", "malformed"),
])
def test_malformed_messages_get_a_typed_error(raw: bytes, why: str) -> None:
    with pytest.raises(DcutrDecodeError, match=why):
        decode(raw)


def test_thousands_of_empty_addresses_fit_in_4_kib_but_are_refused() -> None:
    raw = _raw(100, [b""] * 2000)
    assert len(raw) <= MAX_MESSAGE_SIZE
    with pytest.raises(DcutrDecodeError, match="2000 addresses"):
        decode(raw)


def test_a_sync_with_addresses_is_read_without_them() -> None:
    assert decode(_raw(300, [ADDR])) == HolePunch(MessageType.SYNC)


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(ValueError):
        encode(HolePunch(MessageType.CONNECT, (ADDR,) * (MAX_ADDRS + 1)))
    with pytest.raises(ValueError):
        encode(HolePunch(MessageType.SYNC, (ADDR,)))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_MESSAGE_SIZE + 8))
def test_garbage_decodes_or_fails_typed(data: bytes) -> None:
    try:
        message = decode(data)
    except DecodeError:
        return
    assert message.type in (MessageType.CONNECT, MessageType.SYNC)
    assert len(message.addrs) <= MAX_ADDRS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=40), st.sampled_from([100, 300, 0, 7]))
def test_structured_garbage_decodes_or_fails_typed(addrs: list[bytes], kind: int) -> None:
    raw = _raw(kind, addrs)
    try:
        message = decode(raw)
    except DecodeError:
        assert kind not in (100, 300) or len(addrs) > MAX_ADDRS or len(raw) > MAX_MESSAGE_SIZE
        return
    assert message.addrs == (tuple(addrs) if kind == 100 else ())
