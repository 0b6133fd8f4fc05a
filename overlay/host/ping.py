"""libp2p ping (``/ipfs/ping/1.0.0``): 32 bytes echoed, repeated on one stream.

``serve_ping``/``ping_roundtrip`` are the protocol on one stream;
``PingService`` is the service beside kad: it serves the protocol on a host
and pings peers on a stream kept per peer.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from multiaddr import Multiaddr

from overlay.errors import (
    DialError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosed,
    TransportError,
)
from overlay.host.events import HostListener
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection, Path
from overlay.identity import PeerId
from overlay.wire.stream import ByteStream

__all__ = [
    "PING_PROTOCOL",
    "PING_SIZE",
    "PingHost",
    "PingMismatch",
    "PingService",
    "Pong",
    "serve_ping",
    "ping_roundtrip",
]

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


class PingHost(Protocol):
    """The slice of ``overlay.host.Host`` the ping service uses."""

    async def new_stream(self, peer_id: PeerId, protocols: Sequence[str]) -> NegotiatedStream: ...

    def set_stream_handler(
        self, protocol: str, handler: Callable[[NegotiatedStream], Awaitable[None]]
    ) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    def add_listener(self, listener: HostListener) -> None: ...

    def remove_listener(self, listener: HostListener) -> None: ...

    def best_connection(self, peer_id: PeerId) -> Connection | None: ...


@dataclass(frozen=True, slots=True)
class Pong:
    """One answered ping and the connection it went over."""

    rtt: float
    """Round trip in seconds."""
    path: Path
    """``"direct"`` or ``"relayed"``."""
    remote_multiaddr: Multiaddr


class PingService:
    """``async with PingService(host, ...) as ping:`` serves ``/ipfs/ping/1.0.0``
    on ``host`` and answers ``await ping.ping(peer)``.

    Our pings reuse one stream per peer (dropped when the peer leaves);
    a peer may hold ``max_inbound_streams`` ping streams to us at once,
    each reset after ``idle_timeout`` seconds of silence.
    """

    def __init__(
        self,
        host: PingHost,
        *,
        timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_inbound_streams: int = 2,
    ) -> None:
        if not (timeout > 0 and idle_timeout > 0) or max_inbound_streams < 1:
            raise ValueError("ping timeouts and stream limit must be positive")
        self._host = host
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._max_inbound = max_inbound_streams
        self._inbound: dict[PeerId, int] = {}
        self._streams: dict[PeerId, NegotiatedStream] = {}
        self._locks: dict[PeerId, asyncio.Lock] = {}
        self._listener = HostListener(disconnected=self._forget)
        self._running = False

    async def __aenter__(self) -> PingService:
        if self._running:
            raise LocalProtocolError("the ping service is already running")
        self._running = True
        self._host.set_stream_handler(PING_PROTOCOL, self._handle)
        self._host.add_listener(self._listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        self._host.remove_stream_handler(PING_PROTOCOL)
        self._host.remove_listener(self._listener)
        for stream in self._streams.values():
            stream.reset()
        self._streams.clear()

    def _forget(self, peer: PeerId) -> None:
        self._streams.pop(peer, None)
        self._locks.pop(peer, None)

    async def ping(self, peer_id: PeerId) -> Pong:
        """One round trip to ``peer_id`` (dialing it if needed)."""
        lock = self._locks.setdefault(peer_id, asyncio.Lock())
        async with lock:
            for _ in range(2):
                stream = self._streams.pop(peer_id, None)
                if stream is not None and stream.conn is not self._host.best_connection(peer_id):
                    # A direct connection came after the relayed one we kept
                    # a stream on (or that one closed): move to the best.
                    stream.reset()
                    stream = None
                fresh = stream is None
                if stream is None:
                    stream = await self._host.new_stream(peer_id, [PING_PROTOCOL])
                payload = os.urandom(PING_SIZE)
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self._timeout):
                        await ping_roundtrip(stream, payload)
                except (TransportError, RemoteProtocolError, TimeoutError):
                    stream.reset()
                    if fresh:
                        raise
                    continue  # the kept stream died; retry once on a new one
                rtt = time.monotonic() - started
                self._streams[peer_id] = stream
                conn = stream.conn
                return Pong(rtt, conn.path, conn.remote_multiaddr)
        raise DialError(f"ping to {peer_id} failed")  # pragma: no cover - loop returns

    async def _handle(self, stream: NegotiatedStream) -> None:
        peer = stream.remote_peer
        active = self._inbound.get(peer, 0)
        if active >= self._max_inbound:
            stream.reset()
            return
        self._inbound[peer] = active + 1
        try:
            await serve_ping(stream, self._idle_timeout)
        finally:
            left = self._inbound[peer] - 1
            if left:
                self._inbound[peer] = left
            else:
                del self._inbound[peer]
