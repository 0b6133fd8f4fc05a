"""libp2p ping (``/ipfs/ping/1.0.0``): 32 bytes echoed, repeated on one stream."""

from __future__ import annotations

import asyncio
import hmac

from overlay.errors import RemoteProtocolError, StreamClosed
from overlay.wire.stream import ByteStream

__all__ = ["PING_PROTOCOL", "PING_SIZE", "PingMismatch", "serve_ping", "ping_roundtrip"]

PING_PROTOCOL = "/ipfs/ping/1.0.0"
PING_SIZE = 32


class PingMismatch(RemoteProtocolError):
    """The echo differed from the payload we sent."""


async def serve_ping(stream: ByteStream, idle_timeout: float) -> None:
    """Echo 32-byte payloads until the dialer closes or goes quiet.

    An honest dialer may keep a ping stream open for the whole connection,
    so the bound is time between rounds rather than a round count.
    """
    while True:
        async with asyncio.timeout(idle_timeout):
            first = await stream.read(PING_SIZE)
            if not first:
                await stream.close()
                return
            try:
                rest = await stream.readexactly(PING_SIZE - len(first)) if len(first) < PING_SIZE else b""
            except StreamClosed as exc:
                raise RemoteProtocolError("ping stream ended inside a payload") from exc
        stream.write(first + rest)
        await stream.drain()


async def ping_roundtrip(stream: ByteStream, payload: bytes) -> None:
    """Send ``payload`` and wait for the identical echo."""
    if len(payload) != PING_SIZE:
        raise ValueError(f"ping payload must be {PING_SIZE} bytes")
    stream.write(payload)
    await stream.drain()
    try:
        echo = await stream.readexactly(PING_SIZE)
    except StreamClosed as exc:
        raise RemoteProtocolError("ping stream ended before the echo") from exc
    if not hmac.compare_digest(echo, payload):
        raise PingMismatch("ping echo differs from the payload")
