"""multistream-select 1.0 message framing (pure).

A message is ``uvarint(len) ‖ utf-8 text ‖ "\\n"`` where ``len`` counts the
newline.  The reader is incremental and tells its driver how many bytes it
may read next (``want()``) so a driver never consumes bytes that follow the
last negotiation message: on a pipelined stream those belong to the
application protocol.
"""

from __future__ import annotations

from overlay.errors import DecodeError, LocalProtocolError, MessageTooLarge
from overlay.wire.varint import decode_uvarint, encode_uvarint

__all__ = [
    "MULTISTREAM_PROTOCOL",
    "NA",
    "LS",
    "MAX_MESSAGE_SIZE",
    "encode_message",
    "MessageReader",
]

MULTISTREAM_PROTOCOL = "/multistream/1.0.0"
NA = "na"
LS = "ls"
# Protocol IDs are short; go and rust cap messages near this size too, and a
# small cap keeps a hostile dialer from making us buffer much per stream.
MAX_MESSAGE_SIZE = 1024


def encode_message(text: str, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """Frame ``text``; raise ``LocalProtocolError`` if it cannot be sent."""
    if "\n" in text:
        raise LocalProtocolError("multistream message must not contain a newline")
    body = text.encode("utf-8") + b"\n"
    if len(body) > limit:
        raise LocalProtocolError(f"multistream message of {len(body)} bytes exceeds {limit}")
    return encode_uvarint(len(body)) + body


class MessageReader:
    """Incremental decoder of multistream messages with a size limit."""

    __slots__ = ("_buffer", "_limit", "_prefix_max")

    def __init__(self, limit: int = MAX_MESSAGE_SIZE) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._buffer = bytearray()
        self._limit = limit
        # Once this many prefix bytes all carry the continuation bit, the
        # length is already beyond the limit whatever follows.
        self._prefix_max = len(encode_uvarint(limit))

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def want(self) -> int:
        """Bytes the driver may read without reading past the next message."""
        header = self._parse_header()
        if header is None:
            return 1
        length, start = header
        return max(1, start + length - len(self._buffer))

    def next_message(self) -> str | None:
        """Return the next complete message's text, or None if incomplete.

        Raises ``MessageTooLarge`` or ``DecodeError`` on malformed input.
        """
        header = self._parse_header()
        if header is None:
            return None
        length, start = header
        end = start + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[start:end])
        del self._buffer[:end]
        if not body.endswith(b"\n"):
            raise DecodeError("multistream message does not end with a newline")
        try:
            text = body[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("multistream message is not valid UTF-8") from exc
        if "\n" in text:
            raise DecodeError("multistream message contains an inner newline")
        return text

    def _parse_header(self) -> tuple[int, int] | None:
        buf = self._buffer
        prefix_len = 0
        while prefix_len < len(buf) and buf[prefix_len] & 0x80:
            prefix_len += 1
            if prefix_len >= self._prefix_max:
                raise MessageTooLarge(1 << (7 * prefix_len), self._limit)
        if prefix_len >= len(buf):
            return None
        length, start = decode_uvarint(buf)
        if length > self._limit:
            raise MessageTooLarge(length, self._limit)
        if length == 0:
            raise DecodeError("empty multistream message")
        return length, start
