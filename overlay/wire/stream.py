"""The byte-stream interface every protocol driver is written against.

QUIC streams implement it; tests use the in-memory pair in
``overlay.wire.memory``.  Defined as a Protocol so consumers never import
the transport.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ByteStream", "GatedStream"]


class ByteStream(Protocol):
    async def read(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes`` (at least one), or ``b""`` at EOF."""
        ...

    async def readexactly(self, n: int) -> bytes:
        """Return exactly ``n`` bytes; raise ``StreamClosed`` on early EOF."""
        ...

    def write(self, data: bytes) -> None:
        """Queue ``data``; call ``drain()`` to wait for buffer space."""
        ...

    async def drain(self) -> None:
        """Wait until the send buffer is below its bound."""
        ...

    def write_eof(self) -> None:
        """Half-close: no more writes, the remote reads EOF."""
        ...

    def reset(self) -> None:
        """Abort both directions."""
        ...

    async def close(self) -> None:
        """Half-close (same as ``write_eof``); reading stays possible until EOF.

        It does not wait for the peer to take the buffered data: two peers
        that both write before reading would deadlock.  The transport still
        delivers everything queued before the EOF."""
        ...


class GatedStream:
    """A ``ByteStream`` over another that runs ``_before_read`` before
    every read (a pending check on the peer's first answer) and passes
    everything else through; writes never wait for the gate, so pipelined
    data flows at once."""

    __slots__ = ("_stream",)

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream

    async def _before_read(self) -> None:
        """Override: consume and check what must come first; cheap once done."""

    async def read(self, max_bytes: int = 65536) -> bytes:
        await self._before_read()
        return await self._stream.read(max_bytes)

    async def readexactly(self, n: int) -> bytes:
        await self._before_read()
        return await self._stream.readexactly(n)

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    async def drain(self) -> None:
        await self._stream.drain()

    def write_eof(self) -> None:
        self._stream.write_eof()

    def reset(self) -> None:
        self._stream.reset()

    async def close(self) -> None:
        await self._stream.close()
