"""An in-memory, bounded ``ByteStream`` pair for tests of protocol drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from overlay.errors import StreamClosed, StreamReset

__all__ = ["MemoryStream", "memory_stream_pair"]


class _Pipe:
    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.reset = False
        self.limit = limit
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        # Single-threaded: nothing can run between the check and clear().
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


class MemoryStream:
    """One end of an in-memory duplex stream with a bounded buffer."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe) -> None:
        self._in = inbound
        self._out = outbound

    async def read(self, max_bytes: int = 65536) -> bytes:
        pipe = self._in
        await pipe.wait_for(lambda: bool(pipe.buffer) or pipe.eof or pipe.reset)
        if pipe.reset:
            raise StreamReset("stream reset")
        data = bytes(pipe.buffer[:max_bytes])
        del pipe.buffer[:max_bytes]
        pipe.changed.set()
        return data

    async def readexactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = await self.read(n - len(out))
            if not chunk:
                raise StreamClosed(f"EOF after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def write(self, data: bytes) -> None:
        if self._out.reset:
            raise StreamReset("stream reset")
        if self._out.eof:
            raise StreamClosed("write after write_eof")
        self._out.buffer += data
        self._out.changed.set()

    async def drain(self) -> None:
        pipe = self._out
        await pipe.wait_for(lambda: len(pipe.buffer) <= pipe.limit or pipe.reset)
        if pipe.reset:
            raise StreamReset("stream reset")

    def write_eof(self) -> None:
        self._out.eof = True
        self._out.changed.set()

    def reset(self) -> None:
        for pipe in (self._in, self._out):
            pipe.reset = True
            pipe.changed.set()

    async def close(self) -> None:
        self.write_eof()


def memory_stream_pair(limit: int = 1 << 16) -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends; each direction buffers at most ``limit`` bytes
    before ``drain()`` blocks."""
    a_to_b = _Pipe(limit)
    b_to_a = _Pipe(limit)
    return MemoryStream(b_to_a, a_to_b), MemoryStream(a_to_b, b_to_a)
