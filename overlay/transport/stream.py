"""A bidirectional QUIC stream as an ``overlay.wire.ByteStream``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from overlay.errors import ConnectionClosed, LocalProtocolError, StreamClosed, StreamReset
from overlay.wire.chunks import ChunkBuffer, read_exactly

if TYPE_CHECKING:
    from overlay.transport.connection import QuicConn
    from overlay.wire.stream import ByteStream

__all__ = ["QuicStream"]

# QUIC application error code used when we abort a stream; libp2p
# implementations do not interpret it.
RESET_ERROR_CODE = 0


class QuicStream:
    """One bidirectional stream of a ``QuicConn``.

    Received data is buffered here until read; the bytes the peer may send
    beyond what was read are bounded by the stream receive window, because
    the window only grows as ``read`` consumes data.
    """

    def __init__(self, conn: QuicConn, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self._received = ChunkBuffer()
        self._consumed = 0  # bytes read or discarded: the consumed offset
        self._eof = False  # the peer's FIN arrived
        self._recv_finished = False  # FIN or RESET_STREAM arrived: no more events
        self._recv_reset = False  # the peer reset its side, or we reset
        self._local_reset = False
        self._send_closed = False  # write_eof was called
        self._send_reset = False  # we reset, or the peer sent STOP_SENDING
        self._error: ConnectionClosed | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    def __repr__(self) -> str:
        return f"<QuicStream {self.stream_id} of {self.conn!r}>"

    # --- receiving ----------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return self._received.buffered

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise LocalProtocolError("max_bytes must be positive")
        while not (
            self._received or self._eof or self._recv_reset or self._error is not None
        ):
            self._readable.clear()
            await self._readable.wait()
        if self._recv_reset:
            raise StreamReset(f"stream {self.stream_id} was reset")
        if self._received:
            return self._take(max_bytes)
        if self._eof:
            return b""
        assert self._error is not None
        raise self._error

    async def readexactly(self, n: int) -> bytes:
        return await read_exactly(self.read, n, f"stream {self.stream_id}")

    def _take(self, max_bytes: int) -> bytes:
        data = self._received.take(max_bytes)
        n = len(data)
        self._consumed += n
        self.conn._consumed(self, n)
        return data

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if self._local_reset:
            # We asked the peer to stop; whatever still arrives is discarded
            # but must be credited so the connection window does not shrink.
            self._consumed += len(data)
            self.conn._consumed(self, len(data))
        else:
            self._received.append(data)
        if end_stream:
            self._eof = True
            self._recv_finished = True
        self._readable.set()

    def _on_reset(self, final_size: int) -> None:
        discard = max(0, final_size - self._consumed)
        self._received.clear()
        self._consumed += discard
        self.conn._consumed(self, discard)
        self._recv_reset = True
        self._recv_finished = True
        self._readable.set()

    # --- sending ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._check_writable()
        if data:
            self.conn._send(self, bytes(data), end_stream=False)

    async def drain(self) -> None:
        while True:
            self._check_writable(allow_closed=True)
            if self.conn._send_buffered(self) <= self.conn.config.send_buffer_limit:
                return
            self._writable.clear()
            self.conn._wait_drain(self)
            await self._writable.wait()

    def write_eof(self) -> None:
        if self._send_closed or self._send_reset or self._error is not None:
            return
        self._send_closed = True
        self.conn._send(self, b"", end_stream=True)

    def reset(self) -> None:
        """Abort both directions: RESET_STREAM for ours, STOP_SENDING for theirs."""
        if self._local_reset or self._error is not None:
            return
        self._local_reset = True
        self._recv_reset = True
        discard = self._received.clear()
        self._consumed += discard
        self.conn._consumed(self, discard)
        self._send_reset = True
        self.conn._reset(self, stop_receive=not self._recv_finished)
        self._readable.set()
        self._writable.set()

    async def close(self) -> None:
        """Half-close (``write_eof``); QUIC delivers what is buffered.

        It deliberately does not wait for the send buffer to drain: a
        peer that writes before it reads would otherwise deadlock with us.
        """
        self.write_eof()

    def _check_writable(self, allow_closed: bool = False) -> None:
        if self._error is not None:
            raise self._error
        if self._send_reset:
            raise StreamReset(f"stream {self.stream_id} was reset")
        if self._send_closed and not allow_closed:
            raise StreamClosed(f"write after write_eof on stream {self.stream_id}")

    def _on_stop_sending(self) -> None:
        self._send_reset = True
        self._writable.set()

    def _on_writable(self) -> None:
        self._writable.set()

    # --- connection ---------------------------------------------------------

    def _on_connection_closed(self, error: ConnectionClosed) -> None:
        if self._error is None:
            self._error = error
        self._readable.set()
        self._writable.set()

    @property
    def _finished(self) -> bool:
        """Both directions are done from the connection's point of view."""
        return self._recv_finished and (self._send_closed or self._send_reset)


if TYPE_CHECKING:

    def _implements_byte_stream(stream: QuicStream) -> ByteStream:
        return stream
