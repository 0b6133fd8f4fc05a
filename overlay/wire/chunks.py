"""The receive side shared by stream implementations: a queue of received
chunks read through an offset, and ``readexactly`` on top of ``read``."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from overlay.errors import LocalProtocolError, StreamClosed

__all__ = ["ChunkBuffer", "read_exactly"]


class ChunkBuffer:
    """Received bytes not yet read.  The head chunk is consumed through an
    offset, never re-sliced: small reads of a large chunk would otherwise
    copy its remainder every time (quadratic work a peer could provoke)."""

    __slots__ = ("_chunks", "_head_offset", "buffered")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0
        self.buffered = 0
        """Bytes held."""

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self.buffered += len(data)

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` from the front (empty when nothing is held)."""
        chunks = self._chunks
        parts: list[bytes] = []
        want = max_bytes
        while chunks and want:
            head = chunks[0]
            start = self._head_offset
            available = len(head) - start
            if available <= want:
                parts.append(head if start == 0 else head[start:])
                chunks.popleft()
                self._head_offset = 0
                want -= available
            else:
                parts.append(head[start : start + want])
                self._head_offset = start + want
                want = 0
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.buffered -= len(data)
        return data

    def clear(self) -> int:
        """Drop everything held; returns how many bytes were dropped."""
        dropped = self.buffered
        self._chunks.clear()
        self._head_offset = 0
        self.buffered = 0
        return dropped


async def read_exactly(read: Callable[[int], Awaitable[bytes]], n: int, what: str) -> bytes:
    """Exactly ``n`` bytes through ``read``; ``StreamClosed`` (naming
    ``what``) on an early EOF."""
    if n < 0:
        raise LocalProtocolError("n must not be negative")
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = await read(n - got)
        if not chunk:
            raise StreamClosed(f"EOF after {got} of {n} bytes on {what}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
