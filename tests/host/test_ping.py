from __future__ import annotations

import asyncio

import pytest

from overlay.errors import RemoteProtocolError
from overlay.host import PingMismatch
from overlay.host.ping import ping_roundtrip, serve_ping
from overlay.wire.memory import memory_stream_pair


async def test_repeated_rounds_on_one_stream() -> None:
    a, b = memory_stream_pair()
    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as tg:
            server = tg.create_task(serve_ping(b, idle_timeout=5))
            for i in range(5):
                await ping_roundtrip(a, bytes([i]) * 32)
            await a.close()
        assert server.done()
        assert await a.read() == b""  # the server closed its side too


async def test_wrong_echo() -> None:
    a, b = memory_stream_pair()
    b.write(b"\x01" * 32)
    async with asyncio.timeout(5):
        with pytest.raises(PingMismatch):
            await ping_roundtrip(a, b"\x02" * 32)


async def test_truncated_payload_is_a_protocol_error() -> None:
    a, b = memory_stream_pair()
    a.write(b"\x00" * 20)
    a.write_eof()
    async with asyncio.timeout(5):
        with pytest.raises(RemoteProtocolError):
            await serve_ping(b, idle_timeout=5)


async def test_idle_ping_stream_times_out() -> None:
    a, b = memory_stream_pair()
    async with asyncio.timeout(5):
        with pytest.raises(TimeoutError):
            await serve_ping(b, idle_timeout=0.05)


async def test_payload_size_checked() -> None:
    a, _ = memory_stream_pair()
    with pytest.raises(ValueError):
        await ping_roundtrip(a, b"short")
