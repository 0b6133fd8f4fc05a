"""The yamux header codec: round trips, every malformed header, fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.errors import DecodeError, MessageTooLarge, RemoteProtocolError
from overlay.mux.yamux_frames import (
    HEADER_SIZE,
    MAX_DATA_LENGTH,
    Flag,
    FrameError,
    FrameTooLarge,
    FrameType,
    Header,
    UnknownFrameType,
    UnknownVersion,
    decode_header,
    encode_header,
)

u32 = st.integers(0, 0xFFFFFFFF)


def test_header_layout_is_big_endian_and_twelve_bytes() -> None:
    raw = encode_header(FrameType.WINDOW_UPDATE, Flag.SYN | Flag.ACK, 0x01020304, 0x0A0B0C0D)
    assert raw == bytes([0, 1, 0, 3, 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D])
    assert len(raw) == HEADER_SIZE


def test_spec_constants() -> None:
    assert [t.value for t in FrameType] == [0, 1, 2, 3]
    assert (Flag.SYN, Flag.ACK, Flag.FIN, Flag.RST) == (1, 2, 4, 8)


@given(st.sampled_from(list(FrameType)), st.integers(0, 15), u32, u32)
def test_round_trip(frame_type: FrameType, flags: int, stream_id: int, length: int) -> None:
    if frame_type is FrameType.DATA:
        length %= MAX_DATA_LENGTH + 1
    raw = encode_header(frame_type, Flag(flags), stream_id, length)
    assert decode_header(raw) == Header(frame_type, Flag(flags), stream_id, length)


def test_unknown_version() -> None:
    raw = b"\x01" + encode_header(FrameType.DATA, Flag.NONE, 1, 0)[1:]
    with pytest.raises(UnknownVersion) as info:
        decode_header(raw)
    assert info.value.version == 1
    assert isinstance(info.value, RemoteProtocolError)


def test_unknown_type() -> None:
    raw = struct.pack(">BBHII", 0, 4, 0, 1, 0)
    with pytest.raises(UnknownFrameType) as info:
        decode_header(raw)
    assert info.value.frame_type == 4


def test_data_length_above_the_limit() -> None:
    raw = encode_header(FrameType.DATA, Flag.NONE, 1, 1001)
    assert decode_header(raw, max_data_length=1001).length == 1001
    with pytest.raises(FrameTooLarge) as info:
        decode_header(raw, max_data_length=1000)
    assert isinstance(info.value, MessageTooLarge)
    assert (info.value.size, info.value.limit) == (1001, 1000)
    with pytest.raises(FrameTooLarge):
        decode_header(encode_header(FrameType.DATA, Flag.NONE, 1, MAX_DATA_LENGTH + 1))


def test_length_of_other_types_is_not_a_payload() -> None:
    # A window delta, a ping value or a go-away code may use all 32 bits.
    header = decode_header(encode_header(FrameType.PING, Flag.SYN, 0, 0xFFFFFFFF))
    assert header.payload_length == 0
    assert decode_header(encode_header(FrameType.DATA, Flag.NONE, 3, 7)).payload_length == 7


def test_unknown_flag_bits_are_ignored() -> None:
    raw = struct.pack(">BBHII", 0, 0, 0xFFF4, 1, 0)
    assert decode_header(raw).flags == Flag.FIN


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        encode_header(FrameType.DATA, Flag.NONE, 1 << 32, 0)
    with pytest.raises(ValueError):
        encode_header(FrameType.DATA, Flag.NONE, 1, -1)


def test_short_input_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        decode_header(b"\x00" * 11)


@given(st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE), st.integers(0, MAX_DATA_LENGTH))
def test_fuzz_decode_raises_only_frame_errors(raw: bytes, limit: int) -> None:
    try:
        header = decode_header(raw, limit)
    except FrameError as exc:
        assert isinstance(exc, DecodeError)
        return
    assert header.payload_length <= limit
    assert encode_header(header.type, header.flags, header.stream_id, header.length)[:2] == raw[:2]
