import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.errors import DecodeError, MessageTooLarge, StreamClosed, StreamReset
from overlay.wire import decode_uvarint, encode_uvarint, frame, read_frame
from overlay.wire.memory import memory_stream_pair


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_uvarint_roundtrip(value: int) -> None:
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded) == (value, len(encoded))


def test_uvarint_known_encodings() -> None:
    # Values from the multiformats unsigned-varint spec.
    assert encode_uvarint(1) == b"\x01"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(255) == b"\xff\x01"
    assert encode_uvarint(300) == b"\xac\x02"
    assert encode_uvarint(16384) == b"\x80\x80\x01"


def test_uvarint_rejects_non_minimal_truncated_and_overlong() -> None:
    with pytest.raises(DecodeError, match="non-minimal"):
        decode_uvarint(b"\x81\x00")
    with pytest.raises(DecodeError, match="truncated"):
        decode_uvarint(b"\x80")
    with pytest.raises(DecodeError, match="longer"):
        decode_uvarint(b"\xff" * 10)
    with pytest.raises(ValueError):
        encode_uvarint(-1)


@given(st.binary(max_size=32))
def test_uvarint_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        value, end = decode_uvarint(data)
    except DecodeError:
        return
    assert 0 < end <= len(data)
    assert encode_uvarint(value) == data[:end]


async def test_read_frame_roundtrip_and_clean_eof() -> None:
    a, b = memory_stream_pair()
    a.write(frame(b"hello") + frame(b""))
    a.write_eof()
    async with asyncio.timeout(5):
        assert await read_frame(b, 16) == b"hello"
        assert await read_frame(b, 16) == b""
        assert await read_frame(b, 16) is None


async def test_read_frame_checks_limit_before_reading_body() -> None:
    a, b = memory_stream_pair()
    # Only the length prefix is sent: a decoder that waited for the body
    # would hang, so the timeout proves the limit is checked first.
    a.write(encode_uvarint(1 << 20))
    async with asyncio.timeout(5):
        with pytest.raises(MessageTooLarge) as info:
            await read_frame(b, 1024)
    assert info.value.size == 1 << 20 and info.value.limit == 1024


async def test_read_frame_truncated_body_is_decode_error() -> None:
    a, b = memory_stream_pair()
    a.write(encode_uvarint(10) + b"abc")
    a.write_eof()
    async with asyncio.timeout(5):
        with pytest.raises(DecodeError, match="inside a 10-byte frame"):
            await read_frame(b, 1024)


async def test_memory_stream_backpressure_and_reset() -> None:
    a, b = memory_stream_pair(limit=8)
    a.write(b"0123456789abcdef")
    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as tg:
            drained = tg.create_task(a.drain())
            for _ in range(5):
                await asyncio.sleep(0)  # let drain() run and block
            assert not drained.done()
            assert await b.readexactly(10) == b"0123456789"
        assert drained.done()
        a.reset()
        with pytest.raises(StreamReset):
            await b.read()
        with pytest.raises(StreamReset):
            a.write(b"x")


async def test_memory_stream_write_after_eof_and_short_read() -> None:
    a, b = memory_stream_pair()
    a.write(b"ab")
    await a.close()
    with pytest.raises(StreamClosed):
        a.write(b"c")
    async with asyncio.timeout(5):
        with pytest.raises(StreamClosed):
            await b.readexactly(3)
