"""A loopback TCP connection as a ``ByteStream``, for tests of the muxer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from overlay.errors import StreamClosed, StreamReset


class TcpByteStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._eof_sent = False

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._reader.read(max_bytes)
        except ConnectionResetError as exc:
            raise StreamReset(str(exc)) from exc

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise StreamClosed("early EOF") from exc

    def write(self, data: bytes) -> None:
        if self._eof_sent:
            raise StreamClosed("write after write_eof")
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        if not self._eof_sent and not self._writer.is_closing():
            self._eof_sent = True
            self._writer.write_eof()

    def reset(self) -> None:
        self._writer.transport.abort()

    async def close(self) -> None:
        self.write_eof()

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[TcpByteStream, TcpByteStream]]:
    """Two ends of one TCP connection on 127.0.0.1 (an ephemeral port)."""
    accepted: asyncio.Queue[TcpByteStream] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(TcpByteStream(reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = TcpByteStream(reader, writer)
    remote = await accepted.get()
    try:
        yield client, remote
    finally:
        await client.aclose()
        await remote.aclose()
        server.close()
        await server.wait_closed()
