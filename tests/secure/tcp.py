"""A loopback TCP connection as a ``ByteStream`` whose ``reset`` sends a
real RST (SO_LINGER 0), for the secure-channel and interop tests."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from overlay.errors import StreamClosed, StreamReset


class TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._eof_sent = False
        self._reset = False

    @classmethod
    async def connect(cls, host: str, port: int) -> TcpStream:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def read(self, max_bytes: int = 65536) -> bytes:
        if self._reset:
            raise StreamReset("stream reset")
        try:
            return await self._reader.read(max_bytes)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise StreamReset(str(exc)) from exc

    async def readexactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = await self.read(n - len(out))
            if not chunk:
                raise StreamClosed(f"EOF after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def write(self, data: bytes) -> None:
        if self._reset or self._writer.is_closing():
            raise StreamReset("stream reset")
        if self._eof_sent:
            raise StreamClosed("write after write_eof")
        self._writer.write(data)

    async def drain(self) -> None:
        if self._reset:
            raise StreamReset("stream reset")
        try:
            await self._writer.drain()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise StreamReset(str(exc)) from exc

    def write_eof(self) -> None:
        if not self._eof_sent and not self._writer.is_closing():
            self._eof_sent = True
            self._writer.write_eof()

    def reset(self) -> None:
        if self._reset:
            return
        self._reset = True
        sock = self._writer.get_extra_info("socket")
        if sock is not None and not self._writer.is_closing():
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        # Wake a pending read in this process too.
        self._reader.set_exception(StreamReset("stream reset"))

    async def close(self) -> None:
        self.write_eof()

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[TcpStream, TcpStream]]:
    """Two ends of one TCP connection on 127.0.0.1 (an ephemeral port)."""
    accepted: asyncio.Queue[TcpStream] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(TcpStream(reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await TcpStream.connect("127.0.0.1", port)
    remote = await accepted.get()
    try:
        yield client, remote
    finally:
        await client.aclose()
        await remote.aclose()
        server.close()
        await server.wait_closed()
