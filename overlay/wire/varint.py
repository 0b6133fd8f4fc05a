"""Unsigned LEB128 varints (multiformats unsigned-varint) and length-prefixed
frames.  Every decode takes a limit and raises a typed error."""

from __future__ import annotations

from overlay.errors import DecodeError, MessageTooLarge, StreamClosed
from overlay.wire.stream import ByteStream

__all__ = [
    "MAX_UVARINT_BYTES",
    "encode_uvarint",
    "decode_uvarint",
    "frame",
    "read_uvarint",
    "read_frame",
]

# multiformats caps unsigned varints at 9 bytes (63 bits).
MAX_UVARINT_BYTES = 9


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    if value >= 1 << (7 * MAX_UVARINT_BYTES):
        raise ValueError("uvarint too large")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a varint at ``offset``; return ``(value, offset_after)``.

    Raises ``DecodeError`` if truncated, non-minimal or longer than 9 bytes.
    """
    value = 0
    for i in range(MAX_UVARINT_BYTES):
        if offset + i >= len(data):
            raise DecodeError("truncated uvarint")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise DecodeError("non-minimal uvarint")
            return value, offset + i + 1
    raise DecodeError(f"uvarint longer than {MAX_UVARINT_BYTES} bytes")


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its uvarint length."""
    return encode_uvarint(len(payload)) + payload


async def read_uvarint(stream: ByteStream) -> int | None:
    """Read one varint byte by byte; ``None`` on a clean EOF before it starts."""
    value = 0
    for i in range(MAX_UVARINT_BYTES):
        chunk = await stream.read(1) if i == 0 else await stream.readexactly(1)
        if not chunk:
            return None
        byte = chunk[0]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise DecodeError("non-minimal uvarint")
            return value
    raise DecodeError(f"uvarint longer than {MAX_UVARINT_BYTES} bytes")


async def read_frame(stream: ByteStream, limit: int) -> bytes | None:
    """Read one uvarint-length-prefixed frame of at most ``limit`` bytes.

    Returns ``None`` on a clean EOF between frames.  The limit is checked
    before the body is read, so a hostile length costs nothing.
    """
    length = await read_uvarint(stream)
    if length is None:
        return None
    if length > limit:
        raise MessageTooLarge(length, limit)
    try:
        return await stream.readexactly(length)
    except StreamClosed as exc:
        raise DecodeError(f"stream ended inside a {length}-byte frame") from exc
