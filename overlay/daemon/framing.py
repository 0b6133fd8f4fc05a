"""Reading and writing API messages on an asyncio Unix-socket stream."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from overlay.daemon.errors import ApiProtocolError
from overlay.daemon.protocol import MAX_MESSAGE_SIZE, decode_message, encode_message
from overlay.errors import MessageTooLarge
from overlay.wire.varint import MAX_UVARINT_BYTES

__all__ = ["read_message", "write_message"]


async def _read_length(reader: asyncio.StreamReader) -> int | None:
    value = 0
    for i in range(MAX_UVARINT_BYTES):
        byte = await reader.read(1)
        if not byte:
            if i == 0:
                return None
            raise ApiProtocolError("connection ended inside a length prefix")
        value |= (byte[0] & 0x7F) << (7 * i)
        if not byte[0] & 0x80:
            if byte[0] == 0 and i > 0:
                raise ApiProtocolError("non-minimal length prefix")
            return value
    raise ApiProtocolError(f"length prefix longer than {MAX_UVARINT_BYTES} bytes")


async def read_message(
    reader: asyncio.StreamReader, limit: int = MAX_MESSAGE_SIZE
) -> dict[str, Any] | None:
    """Read one framed JSON object; ``None`` on a clean EOF between messages.

    Raises ``MessageTooLarge`` before reading an oversized body and
    ``ApiProtocolError`` for truncated frames or non-JSON bodies.
    """
    length = await _read_length(reader)
    if length is None:
        return None
    if length > limit:
        raise MessageTooLarge(length, limit)
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ApiProtocolError(
            f"connection ended after {len(exc.partial)} of {length} message bytes"
        ) from exc
    return decode_message(payload)


async def write_message(
    writer: asyncio.StreamWriter, message: Mapping[str, Any], limit: int = MAX_MESSAGE_SIZE
) -> None:
    writer.write(encode_message(message, limit))
    await writer.drain()
