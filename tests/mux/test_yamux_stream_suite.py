"""yamux streams pass the shared ByteStream suite, over memory and over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from overlay.mux import YamuxSession
from overlay.wire.memory import memory_stream_pair
from overlay.wire.stream import ByteStream
from tests.transport.stream_suite import CHECKS

from .tcp import tcp_pair

Factory = Callable[[], Awaitable[tuple[ByteStream, ByteStream]]]


@pytest.fixture(params=["memory", "tcp"])
async def factory(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    async with AsyncExitStack() as stack:
        if request.param == "memory":
            left, right = memory_stream_pair()
        else:
            left, right = await stack.enter_async_context(tcp_pair())
        client = await stack.enter_async_context(YamuxSession(left, is_client=True))
        server = await stack.enter_async_context(YamuxSession(right, is_client=False))

        async def make() -> tuple[ByteStream, ByteStream]:
            a = await client.open_stream()
            a.write(b"\x00")
            return a, await server.accept_stream()

        yield make


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_byte_stream_contract(
    factory: Factory, check: Callable[[Factory], Awaitable[None]]
) -> None:
    async with asyncio.timeout(10):
        await check(factory)
