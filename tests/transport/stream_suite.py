"""A conformance suite for ``overlay.wire.ByteStream`` implementations.

Each check takes a factory for a connected pair of streams, so the QUIC
stream and the in-memory test stream are held to the same contract
(as trio's ``check_two_way_stream`` does for its streams).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest

from overlay.errors import StreamClosed, StreamReset
from overlay.wire.stream import ByteStream

PairFactory = Callable[[], Awaitable[tuple[ByteStream, ByteStream]]]
"""Returns (a, b): data written on a is read on b and vice versa.  For
QUIC, the first write on ``a`` is what makes ``b`` appear, so ``b`` is
produced lazily by the factory after ``a`` wrote its first byte."""


async def read_all(stream: ByteStream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


async def check_round_trip_and_eof(make_pair: PairFactory) -> None:
    a, b = await make_pair()
    a.write(b"hello")
    await a.close()
    assert await b.readexactly(6) == b"\x00hello"  # the factory's opening byte
    assert await b.read() == b""
    assert await b.read() == b""  # EOF is sticky
    b.write(b"world")
    b.write_eof()
    assert await read_all(a) == b"world"


async def check_read_respects_max_bytes(make_pair: PairFactory) -> None:
    a, b = await make_pair()
    a.write(b"abcdefgh")
    a.write_eof()
    await b.readexactly(1)
    got = []
    while chunk := await b.read(3):
        assert 1 <= len(chunk) <= 3
        got.append(chunk)
    assert b"".join(got) == b"abcdefgh"


async def check_readexactly_early_eof(make_pair: PairFactory) -> None:
    a, b = await make_pair()
    a.write(b"abc")
    a.write_eof()
    await b.readexactly(1)
    with pytest.raises(StreamClosed):
        await b.readexactly(10)


async def check_write_after_eof(make_pair: PairFactory) -> None:
    a, _ = await make_pair()
    a.write_eof()
    with pytest.raises(StreamClosed):
        a.write(b"late")
    await a.close()  # idempotent


async def check_reset(make_pair: PairFactory) -> None:
    a, b = await make_pair()
    await b.readexactly(1)
    pending = asyncio.ensure_future(b.read())
    a.reset()
    with pytest.raises(StreamReset):
        await pending
    with pytest.raises(StreamReset):
        b.write(b"x")
    with pytest.raises(StreamReset):
        await a.read()
    with pytest.raises(StreamReset):
        a.write(b"x")


async def check_concurrent_bulk_with_drain(make_pair: PairFactory) -> None:
    a, b = await make_pair()
    up, down = os.urandom(1 << 20), os.urandom(1 << 20)

    async def send(stream: ByteStream, data: bytes) -> None:
        for i in range(0, len(data), 50_000):
            stream.write(data[i : i + 50_000])
            await stream.drain()
        await stream.close()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send(a, up))
        tg.create_task(send(b, down))
        got_up = tg.create_task(read_all(b))
        got_down = tg.create_task(read_all(a))
    assert got_up.result() == b"\x00" + up
    assert got_down.result() == down


CHECKS = [
    check_round_trip_and_eof,
    check_read_respects_max_bytes,
    check_readexactly_early_eof,
    check_write_after_eof,
    check_reset,
    check_concurrent_bulk_with_drain,
]
