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
import socket
from dataclasses import dataclass

from overlay.errors import StreamClosed, StreamReset, TransportError
from overlay.wire.stream import ByteStream

__all__ = ["CHUNK", "Counters", "TcpStream", "pump", "pump_socket", "release"]

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


# -- a raw socket's pump: the TCP side in transport callbacks --------------------------

UNDRAINED = 262144
"""Bytes the socket pump writes to the stream between two ``drain()``
calls.  Smaller writes need no task at all (a request, an answer); the
stream's buffer stays under its own bound plus this plus one socket read
(256 KiB), so memory stays bounded."""


class _SocketSide(asyncio.Protocol):
    """TCP → stream inside the socket transport's callbacks.

    Bytes go into the stream in the loop turn that read them (no
    StreamReader, no task wake-up per chunk).  Every ``UNDRAINED`` bytes
    reading pauses and a drain task (in the pump's group) resumes it once
    the stream took them; a stream that fails resets both sides."""

    def __init__(self, stream: ByteStream, counters: Counters, group: asyncio.TaskGroup) -> None:
        self._stream = stream
        self._counters = counters
        self._group = group
        self._undrained = 0
        self._draining = False
        self.transport: asyncio.Transport | None = None
        self.failure: str | None = None
        self.read_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Set at the TCP side's EOF (passed on as the stream's) or when the socket is gone."""
        self._write_resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self._stream.write(data)
        except _STREAM_ERRORS as exc:
            self.fail(f"stream failed: {exc}")
            return
        self._counters.up += len(data)
        self._undrained += len(data)
        if self._undrained >= UNDRAINED and not self._draining:
            self._draining = True
            assert self.transport is not None
            self.transport.pause_reading()
            self._group.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self._stream.drain()
        except _STREAM_ERRORS as exc:
            self.fail(f"stream failed: {exc}")
            return
        self._undrained = 0
        self._draining = False
        if self.failure is None and self.transport is not None and not self.read_done.done():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        if self.failure is None:
            try:
                self._stream.write_eof()
            except _STREAM_ERRORS as exc:
                self.fail(f"stream failed: {exc}")
                return False
        if not self.read_done.done():
            self.read_done.set_result(None)
        return True  # half-closed: the answer may still go out

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.fail(f"TCP side failed: {exc}")
        elif not self.read_done.done() and self.failure is None:
            # Gone without an EOF from the client: not a clean close.
            self.fail("TCP connection lost")
        self._wake_writer()

    def fail(self, why: str) -> None:
        """Tear both sides down; the pump returns False."""
        if self.failure is not None:
            return
        self.failure = why
        self._stream.reset()  # a read blocked on the stream raises at once
        if self.transport is not None:
            self.transport.abort()
        if not self.read_done.done():
            self.read_done.set_result(None)
        self._wake_writer()

    # stream → TCP: the socket's send buffer is the backpressure.

    def pause_writing(self) -> None:
        self._write_resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter, self._write_resumed = self._write_resumed, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def writable(self) -> None:
        if self._write_resumed is not None:
            await self._write_resumed


async def pump_socket(sock: socket.socket, stream: ByteStream, counters: Counters,
                      first: bytes = b"") -> bool:
    """``pump`` for a connected non-blocking socket nobody wrapped yet (the
    forward's client, the exposer's local server, the proxy's client once
    its request is read).  The stream → TCP direction runs in this task,
    the other in the socket's callbacks: no task per direction, no
    StreamReader.  ``first`` goes to the socket before anything else (bytes
    from the stream that were read already).  Closes the socket (aborts it
    on failure)."""
    counters.connections += 1
    counters.active += 1
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as group:
            side = _SocketSide(stream, counters, group)
            try:
                transport, _ = await loop.connect_accepted_socket(lambda: side, sock)
            except (OSError, asyncio.CancelledError):
                sock.close()
                raise
            if first:
                transport.write(first)
            try:
                await _stream_to_socket(stream, transport, side, counters)
                if side.failure is None:
                    await side.read_done
            except asyncio.CancelledError:
                # Stream errors end in side.fail inside; only cancellation gets here.
                side.fail("cancelled")
                raise
            finally:
                if side.failure is None:
                    transport.close()
    finally:
        counters.active -= 1
    if side.failure is not None:
        log.debug("pump aborted: %s", side.failure)
        counters.failed += 1
        return False
    return True


async def _stream_to_socket(stream: ByteStream, transport: asyncio.Transport,
                            side: _SocketSide, counters: Counters) -> None:
    while side.failure is None:
        try:
            data = await stream.read(CHUNK)
        except _STREAM_ERRORS as exc:
            side.fail(f"stream failed: {exc}")
            return
        if side.failure is not None:
            return
        if transport.is_closing():
            side.fail("TCP connection closed")
            return
        if not data:
            if transport.can_write_eof():
                transport.write_eof()
            return
        transport.write(data)
        counters.down += len(data)
        await side.writable()
