"""Byte pumps between a TCP connection (asyncio streams) and a
``ByteStream`` (a libp2p stream, or another TCP connection wrapped in
``TcpStream``), with half-close, backpressure and byte counters.

Each direction reads one chunk, writes it and waits for ``drain()`` before
reading the next, so a slow reader on one side stops reads on the other:
a TCP client that never reads leaves the QUIC stream's receive window
closed and the sender waiting, and nothing piles up in memory.  EOF
crosses each way on its own; a reset or a failed socket aborts both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from overlay.errors import StreamClosed, StreamReset, TransportError
from overlay.wire.stream import ByteStream

__all__ = ["CHUNK", "Counters", "TcpStream", "pump", "release"]

log = logging.getLogger(__name__)

CHUNK = 65536


@dataclass(slots=True)
class Counters:
    """Bytes moved, shared by every pump of one exposure, forward or proxy."""

    up: int = 0
    """TCP side → stream."""
    down: int = 0
    """Stream → TCP side."""
    connections: int = 0
    """Connections pumped so far (finished or running)."""
    active: int = 0
    failed: int = 0
    """Connections that ended in a reset or socket error."""


class TcpStream:
    """A ``ByteStream`` over an asyncio TCP connection (the direct path of
    the proxy, the exposer's local port).  ``drain()`` is the socket's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._reader.read(max_bytes)
        except ConnectionError as exc:
            raise StreamReset(f"TCP connection failed: {exc}") from exc

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise StreamClosed("TCP connection ended early") from exc
        except ConnectionError as exc:
            raise StreamReset(f"TCP connection failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise StreamClosed("TCP connection closed")
        self._writer.write(data)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise StreamReset(f"TCP connection failed: {exc}") from exc

    def write_eof(self) -> None:
        if self._writer.is_closing():
            return
        try:
            if self._writer.can_write_eof():
                self._writer.write_eof()
        except OSError as exc:
            raise StreamReset(f"TCP connection failed: {exc}") from exc

    def reset(self) -> None:
        self._writer.transport.abort()

    async def close(self) -> None:
        self.write_eof()

    async def aclose(self) -> None:
        """Release the socket (after the pump)."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class _Aborted(Exception):
    """One side failed: tear both down instead of half-closing."""


_STREAM_ERRORS = (StreamClosed, StreamReset, TransportError)


async def _tcp_to_stream(reader: asyncio.StreamReader, stream: ByteStream,
                         counters: Counters) -> None:
    while True:
        try:
            data = await reader.read(CHUNK)
        except ConnectionError as exc:
            raise _Aborted(f"TCP side failed: {exc}") from exc
        try:
            if not data:
                stream.write_eof()
                return
            stream.write(data)
            await stream.drain()
        except _STREAM_ERRORS as exc:
            raise _Aborted(f"stream failed: {exc}") from exc
        counters.up += len(data)


async def _stream_to_tcp(stream: ByteStream, writer: asyncio.StreamWriter,
                         counters: Counters) -> None:
    while True:
        try:
            data = await stream.read(CHUNK)
        except _STREAM_ERRORS as exc:
            raise _Aborted(f"stream failed: {exc}") from exc
        try:
            if not data:
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _Aborted(f"TCP side failed: {exc}") from exc
        counters.down += len(data)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               stream: ByteStream, counters: Counters) -> bool:
    """Pump until both directions reached EOF (True) or one side failed
    (False: the stream is reset and the socket aborted).  The caller
    closes the writer."""
    counters.connections += 1
    counters.active += 1
    failure: BaseException | None = None
    try:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_tcp_to_stream(reader, stream, counters))
                group.create_task(_stream_to_tcp(stream, writer, counters))
        except* _Aborted as failures:
            failure = failures.exceptions[0]
    finally:
        counters.active -= 1
    if failure is not None:
        log.debug("pump aborted: %s", failure)
        counters.failed += 1
        stream.reset()
        writer.transport.abort()
        return False
    return True


async def release(stream: ByteStream) -> None:
    """Free what a stream holds once pumped: a ``TcpStream``'s socket (a
    libp2p stream is its connection's business)."""
    if isinstance(stream, TcpStream):
        await stream.aclose()
