"""AutoNAT v2 codec: round trips, limits, and seeded garbage that must end
in a typed error (never anything else)."""

from __future__ import annotations

import random

import pytest

from overlay.errors import DecodeError
from overlay.nat.autonat_errors import AutoNATDecodeError, AutoNATMessageTooLarge
from overlay.nat.autonat_messages import (
    MAX_ADDRS,
    MAX_DATA_CHUNK,
    MAX_MESSAGE_SIZE,
    DialBack,
    DialBackResponse,
    DialDataRequest,
    DialDataResponse,
    DialRequest,
    DialResponse,
    DialStatus,
    Message,
    ResponseStatus,
    decode_dial_back,
    decode_dial_back_response,
    decode_message,
    encode_dial_back,
    encode_dial_back_response,
    encode_message,
)
from overlay.wire.pb import autonat_v2_pb2 as pb

MESSAGES: list[Message] = [
    DialRequest((b"\x04\x01\x02\x03\x04", b"\x04\x7f\x00\x00\x01"), (1 << 64) - 1),
    DialResponse(ResponseStatus.OK, 3, DialStatus.E_DIAL_BACK_ERROR),
    DialResponse(ResponseStatus.E_DIAL_REFUSED),
    DialDataRequest(0, 100_000),
    DialDataResponse(bytes(MAX_DATA_CHUNK)),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


def test_dial_back_round_trip_and_proto3_zero_nonce() -> None:
    assert decode_dial_back(encode_dial_back(DialBack(42))) == DialBack(42)
    assert decode_dial_back(b"") == DialBack(0)  # proto3 leaves a zero nonce out
    assert decode_dial_back_response(encode_dial_back_response(DialBackResponse())) == \
        DialBackResponse(0)


def test_wire_bytes_match_the_spec_field_numbers() -> None:
    # Message.dialRequest = 1 (len-delimited), DialRequest.addrs = 1, nonce = 2 fixed64.
    data = encode_message(DialRequest((b"\x01",), 1))
    assert data == bytes([0x0A, 0x0C, 0x0A, 0x01, 0x01, 0x11]) + (1).to_bytes(8, "little")


def test_limits() -> None:
    with pytest.raises(AutoNATMessageTooLarge):
        decode_message(bytes(MAX_MESSAGE_SIZE + 1))
    many = pb.Message()
    many.dialRequest.addrs.extend([b"\x04\x01\x02\x03\x04"] * (MAX_ADDRS + 1))
    with pytest.raises(AutoNATDecodeError, match="addresses"):
        decode_message(many.SerializeToString())
    big = pb.Message()
    big.dialDataResponse.data = bytes(MAX_DATA_CHUNK + 1)
    with pytest.raises(AutoNATMessageTooLarge):
        decode_message(big.SerializeToString())
    with pytest.raises(ValueError):
        encode_message(DialDataResponse(bytes(MAX_DATA_CHUNK + 1)))


def test_unknown_status_codes_are_refused() -> None:
    msg = pb.Message()
    msg.dialResponse.status = 201
    with pytest.raises(AutoNATDecodeError, match="unknown status"):
        decode_message(msg.SerializeToString())
    msg = pb.Message()
    msg.dialResponse.status = 200
    msg.dialResponse.dialStatus = 7
    with pytest.raises(AutoNATDecodeError):
        decode_message(msg.SerializeToString())
    bad = pb.DialBackResponse()
    bad.status = 1
    with pytest.raises(AutoNATDecodeError):
        decode_dial_back_response(bad.SerializeToString())


def test_empty_and_addressless_messages_are_refused() -> None:
    with pytest.raises(AutoNATDecodeError, match="no content"):
        decode_message(b"")
    msg = pb.Message()
    msg.dialRequest.nonce = 5
    with pytest.raises(AutoNATDecodeError, match="without addresses"):
        decode_message(msg.SerializeToString())


def test_seeded_garbage_only_raises_decode_errors() -> None:
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")  # pytest shows it if anything untyped escapes below
    rng = random.Random(seed)
    valid = [encode_message(m) for m in MESSAGES]
    decoded = 0
    for _ in range(3000):
        if rng.random() < 0.5:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 64)))
        for decode in (decode_message, decode_dial_back, decode_dial_back_response):
            try:
                decode(bytes(data))
                decoded += 1
            except DecodeError:
                pass  # the only failure allowed
    assert decoded > 0, f"seed {seed}: nothing decoded; the fuzz is not reaching the codec"
