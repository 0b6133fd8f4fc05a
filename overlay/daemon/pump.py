"""Byte pump between an API socket connection and a libp2p stream.

Each direction runs until EOF and then half-closes the other side, so a
client can send a request, shut down its write side and still read the
whole answer.  A reset on either side aborts both.
"""

from __future__ import annotations

import asyncio
import logging

from overlay.errors import StreamClosed, StreamReset, TransportError
from overlay.wire.stream import ByteStream

__all__ = ["pump_stream", "PUMP_CHUNK"]

log = logging.getLogger(__name__)

PUMP_CHUNK = 65536
"""Bytes moved per read; both sides apply their own backpressure via drain()."""


class _Aborted(Exception):
    """One side failed; the other must be torn down instead of half-closed."""


async def _socket_to_stream(reader: asyncio.StreamReader, stream: ByteStream) -> int:
    moved = 0
    while True:
        try:
            data = await reader.read(PUMP_CHUNK)
        except ConnectionError as exc:
            raise _Aborted(f"API socket failed: {exc}") from exc
        if not data:
            try:
                stream.write_eof()
            except (StreamClosed, StreamReset, TransportError) as exc:
                raise _Aborted(f"libp2p stream failed: {exc}") from exc
            return moved
        try:
            stream.write(data)
            await stream.drain()
        except (StreamClosed, StreamReset, TransportError) as exc:
            raise _Aborted(f"libp2p stream failed: {exc}") from exc
        moved += len(data)


async def _stream_to_socket(stream: ByteStream, writer: asyncio.StreamWriter) -> int:
    moved = 0
    while True:
        try:
            data = await stream.read(PUMP_CHUNK)
        except (StreamReset, TransportError) as exc:
            raise _Aborted(f"libp2p stream failed: {exc}") from exc
        try:
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return moved
            writer.write(data)
            await writer.drain()
        except ConnectionError as exc:
            raise _Aborted(f"API socket failed: {exc}") from exc
        moved += len(data)


async def pump_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: ByteStream
) -> tuple[int, int]:
    """Pump until both directions reached EOF or one side failed.

    Returns the bytes moved (socket → stream, stream → socket).  On failure
    the stream is reset and the socket aborted; the caller still closes the
    writer.  Never raises for peer or client misbehaviour.
    """
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            up = group.create_task(_socket_to_stream(reader, stream))
            down = group.create_task(_stream_to_socket(stream, writer))
    except* _Aborted as failures:
        failure = failures.exceptions[0]
    if failure is not None:
        log.debug("pump aborted: %s", failure)
        stream.reset()
        writer.transport.abort()
        return (0, 0)
    return up.result(), down.result()
