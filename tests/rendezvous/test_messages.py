"""The rendezvous codec: round trips, the spec's field numbers on the wire,
limits before parsing, and any bytes give a message or a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import RemoteProtocolError
from overlay.rendezvous import (
    Discover,
    DiscoverResponse,
    InvalidNamespace,
    Register,
    RegisterResponse,
    RendezvousDecodeError,
    RendezvousMessageTooLarge,
    Status,
    Unregister,
    check_namespace,
    decode_message,
    encode_message,
)
from overlay.rendezvous.messages import MAX_REQUEST_SIZE, status_name
from overlay.wire.pb import rendezvous_pb2

from tests.rendezvous.helpers import record

MESSAGES = [
    Register("app", b"\x01\x02", 7200),
    Register("app", b"rec", None),
    RegisterResponse(Status.OK, "", 7200),
    RegisterResponse(Status.E_INVALID_TTL, "too long", 0),
    Unregister("app"),
    Unregister("app", b"peer-id-bytes"),
    Discover("app", 10, b"cookie"),
    Discover("", None, b""),
    DiscoverResponse((Register("app", b"r1", 50), Register("b", b"r2", 9)), b"c", Status.OK, ""),
    DiscoverResponse((), b"", Status.E_INVALID_COOKIE, "unknown cookie"),
    Register("ünïcode ns", b"x", 1),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


def test_field_numbers_are_the_specs() -> None:
    # Message{type=1, register=2 {ns=1, signedPeerRecord=2, ttl=3}}
    wire = encode_message(Register("n", b"R", 5))
    assert wire == bytes([0x08, 0x00, 0x12, 0x08, 0x0A, 0x01]) + b"n" + bytes(
        [0x12, 0x01]) + b"R" + bytes([0x18, 0x05])
    # Discover is field 5 with {ns=1, limit=2, cookie=3}; type DISCOVER=3.
    wire = encode_message(Discover("n", 7, b"C"))
    assert wire == bytes([0x08, 0x03, 0x2A, 0x08, 0x0A, 0x01]) + b"n" + bytes(
        [0x10, 0x07, 0x1A, 0x01]) + b"C"
    # Unregister is field 4, type 2; RegisterResponse field 3 {status=1, statusText=2, ttl=3}.
    assert encode_message(Unregister("n")) == bytes([0x08, 0x02, 0x22, 0x03, 0x0A, 0x01]) + b"n"
    # ... and the deprecated id (2), which older servers still require.
    assert encode_message(Unregister("n", b"I")) == bytes(
        [0x08, 0x02, 0x22, 0x06, 0x0A, 0x01]) + b"n" + bytes([0x12, 0x01]) + b"I"
    assert encode_message(RegisterResponse(102, "t", 0)) == bytes(
        [0x08, 0x01, 0x1A, 0x07, 0x08, 0x66, 0x12, 0x01]) + b"t" + bytes([0x18, 0x00])
    # DiscoverResponse is field 6 {registrations=1, cookie=2, status=3, statusText=4}.
    pb = rendezvous_pb2.Message()
    pb.ParseFromString(encode_message(DiscoverResponse((Register("n", b"r", 3),), b"k")))
    assert pb.type == 4 and pb.discoverResponse.cookie == b"k"
    assert pb.discoverResponse.registrations[0].ttl == 3


def test_proto3_peers_omit_defaults() -> None:
    """go's proto3 sends no ttl for 0 and no body for an OK response."""
    assert decode_message(bytes([0x08, 0x01])) == RegisterResponse(0, "", 0)
    with pytest.raises(RendezvousDecodeError, match="without its body"):
        decode_message(b"")
    assert decode_message(bytes([0x08, 0x03])) == Discover("", None, b"")
    zero_ttl = rendezvous_pb2.Message(type=0)
    zero_ttl.register.ns = b"a"
    zero_ttl.register.ttl = 0
    assert decode_message(zero_ttl.SerializeToString()) == Register("a", b"", None)


def test_unknown_status_is_kept_not_read_as_ok() -> None:
    reply = decode_message(bytes([0x08, 0x01, 0x1A, 0x02, 0x08, 0x68]))  # 104: a PoW draft code
    assert isinstance(reply, RegisterResponse) and reply.status == 104
    assert status_name(104) == "status 104" and status_name(101) == "E_INVALID_SIGNED_PEER_RECORD"


def test_size_limit_is_checked_before_parsing() -> None:
    big = encode_message(Register("a", b"x" * MAX_REQUEST_SIZE))
    with pytest.raises(RendezvousMessageTooLarge) as info:
        decode_message(big, MAX_REQUEST_SIZE)
    assert info.value.limit == MAX_REQUEST_SIZE
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("data, why", [
    (b"\xff\xff", "malformed"),
    (bytes([0x08, 0x09]), "unknown rendezvous message type 9"),
    (bytes([0x08, 0x02]), "without its body"),
    (bytes([0x08, 0x00, 0x12, 0x03, 0x0A, 0x01, 0xFF]), "not UTF-8"),
])
def test_malformed_messages_raise_typed_errors(data: bytes, why: str) -> None:
    with pytest.raises(RendezvousDecodeError, match=why):
        decode_message(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_any_bytes(data: bytes) -> None:
    try:
        message = decode_message(data)
    except RendezvousDecodeError:
        return
    # Whatever decodes re-encodes to something that decodes the same.
    assert decode_message(encode_message(message)) == message


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([encode_message(m) for m in MESSAGES] + [encode_message(
    Register("app", record(1), 7200))]), st.data())
def test_fuzz_mutated_valid_messages(base: bytes, data: st.DataObject) -> None:
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    try:
        decode_message(bytes(buf))
    except RendezvousDecodeError:
        pass


@pytest.mark.parametrize("ns", ["", "a" * 256, "tab\there", "nul\x00", "\ud800"])
def test_bad_namespaces(ns: str) -> None:
    with pytest.raises(InvalidNamespace):
        check_namespace(ns)


def test_good_namespaces() -> None:
    assert check_namespace("a" * 255) == "a" * 255
    assert check_namespace("my-app/relays é") == "my-app/relays é"
    assert check_namespace("", allow_empty=True) == ""
    with pytest.raises(InvalidNamespace, match="at most 255 bytes, not 256"):
        check_namespace("é" * 128)
