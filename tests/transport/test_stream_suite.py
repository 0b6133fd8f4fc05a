"""QUIC streams and the in-memory test stream pass the same ByteStream suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from overlay.wire.memory import memory_stream_pair
from overlay.wire.stream import ByteStream

from .conftest import Pair, make_pair
from .stream_suite import CHECKS


@pytest.fixture(params=["memory", "quic"])
async def factory(request: pytest.FixtureRequest) -> AsyncIterator[
    Callable[[], Awaitable[tuple[ByteStream, ByteStream]]]
]:
    if request.param == "memory":
        async def memory() -> tuple[ByteStream, ByteStream]:
            a, b = memory_stream_pair()
            a.write(b"\x00")
            return a, b

        yield memory
        return
    pair: Pair = await make_pair()

    async def quic() -> tuple[ByteStream, ByteStream]:
        a = await pair.conn_a.open_stream()
        a.write(b"\x00")  # makes the stream visible to the listener
        await a.drain()
        return a, await pair.conn_b.accept_stream()

    try:
        yield quic
    finally:
        await pair.a.aclose()
        await pair.b.aclose()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_byte_stream_contract(
    factory: Callable[[], Awaitable[tuple[ByteStream, ByteStream]]],
    check: Callable[[Callable[[], Awaitable[tuple[ByteStream, ByteStream]]]], Awaitable[None]],
) -> None:
    async with asyncio.timeout(10):
        await check(factory)
