"""The 2-byte big-endian length framing of every libp2p Noise message."""

from __future__ import annotations

from typing import Final

from overlay.errors import LocalProtocolError, MessageTooLarge

__all__ = ["MAX_MESSAGE", "LENGTH_PREFIX", "encode_frame", "FrameReader"]

MAX_MESSAGE: Final = 65535
"""A Noise message (handshake or transport, tag included) is at most this."""
LENGTH_PREFIX: Final = 2


def encode_frame(message: bytes) -> bytes:
    if len(message) > MAX_MESSAGE:
        raise LocalProtocolError(f"Noise message of {len(message)} bytes exceeds {MAX_MESSAGE}")
    return len(message).to_bytes(2, "big") + message


class FrameReader:
    """Splits a byte stream into Noise messages.

    ``want()`` says how many bytes complete the current frame; a driver that
    reads no more than that never holds more than one frame, and never takes
    bytes that belong to whatever follows.  A driver may also read ahead
    (the transport phase does): frames are then cut from the buffer through
    an offset, so several buffered frames cost no re-copying of the rest.
    """

    __slots__ = ("_buffer", "_start", "_limit")

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        if not 0 <= limit <= MAX_MESSAGE:
            raise LocalProtocolError(f"frame limit {limit} outside 0..{MAX_MESSAGE}")
        self._buffer = bytearray()
        self._start = 0  # bytes of _buffer already handed out
        self._limit = limit

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def _length(self) -> int | None:
        buffer, start = self._buffer, self._start
        if len(buffer) - start < LENGTH_PREFIX:
            return None
        length = buffer[start] << 8 | buffer[start + 1]
        # Checked before the body is waited for, let alone read.
        if length > self._limit:
            raise MessageTooLarge(length, self._limit)
        return length

    def want(self) -> int:
        """Bytes still missing from the current frame (at least 1)."""
        length = self._length()
        if length is None:
            return LENGTH_PREFIX - self.buffered
        return max(1, LENGTH_PREFIX + length - self.buffered)

    def next_frame(self) -> bytes | None:
        """The next complete message body, or None until more bytes arrive."""
        length = self._length()
        if length is None or self.buffered < LENGTH_PREFIX + length:
            return None
        start = self._start + LENGTH_PREFIX
        end = start + length
        with memoryview(self._buffer) as view:
            body = bytes(view[start:end])
        if end == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        else:
            self._start = end
        return body
