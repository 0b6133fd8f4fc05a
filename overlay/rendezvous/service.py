"""The rendezvous point (thin asyncio): serves ``/rendezvous/1.0.0`` on a
host, feeding each request to the pure ``Registry`` with the stream's
authenticated peer, its source address and the wall clock.

A stream may carry several requests in turn.  Whatever a peer sends, the
worst outcome is its own stream: an oversized or malformed message raises
a ``RemoteProtocolError`` and the host resets that stream; the daemon and
other peers' streams carry on.  Expiry is lazy (each request drops what
has expired first), so an idle point runs no timer.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from overlay.identity import PeerId
from overlay.rendezvous.errors import RendezvousDecodeError
from overlay.rendezvous.messages import (
    MAX_REQUEST_SIZE,
    PROTOCOL_ID,
    Discover,
    Register,
    RendezvousMessage,
    Unregister,
    decode_message,
    encode_message,
)
from overlay.rendezvous.registry import Registry, RegistryConfig
from overlay.wire.varint import frame, read_frame

__all__ = ["ServerConfig", "ServerHost", "ServerStream", "RendezvousServer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    """The registry's TTL bounds and limits."""
    request_timeout: float = 10.0
    """Seconds a stream may take to deliver its next request."""
    max_streams_per_peer: int = 4
    """Concurrent rendezvous streams one peer may hold open."""
    max_requests_per_stream: int = 64
    """Requests served on one stream before it is closed."""

    def __post_init__(self) -> None:
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.max_streams_per_peer < 1 or self.max_requests_per_stream < 1:
            raise ValueError("stream limits must be at least 1")


class ServerStream(Protocol):
    """A negotiated inbound stream: bytes plus who sent them and from where."""

    @property
    def remote_peer(self) -> PeerId: ...

    async def read(self, max_bytes: int = 65536) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    def reset(self) -> None: ...
    async def close(self) -> None: ...


class ServerHost(Protocol):
    def set_stream_handler(self, protocol: str, handler: Callable[..., object]) -> None: ...
    def remove_stream_handler(self, protocol: str) -> None: ...


def _source_ip(stream: object) -> str | None:
    conn = getattr(stream, "conn", None)
    try:
        return str(conn.remote_address[0]) if conn is not None else None
    except (AttributeError, IndexError, TypeError):
        return None


class RendezvousServer:
    """``async with RendezvousServer(host, config) as server:`` serves the
    protocol on ``host`` until the block ends.  ``secret`` keys the cookie
    MACs (fresh random bytes by default); ``clock`` is the wall clock."""

    def __init__(self, host: ServerHost, config: ServerConfig | None = None, *,
                 secret: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.config = config or ServerConfig()
        self.registry = Registry(self.config.registry,
                                 secret=secret if secret is not None else secrets.token_bytes(32))
        self._clock = clock
        self._streams: Counter[PeerId] = Counter()
        self.served = 0
        self.dropped_streams = 0
        """Streams reset for a protocol violation, an over-limit or a timeout."""
        self.activity = asyncio.Event()
        """Set after every request served and every stream dropped, so
        callers wait for state changes instead of polling."""

    async def __aenter__(self) -> RendezvousServer:
        self.host.set_stream_handler(PROTOCOL_ID, self.handle_stream)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.host.remove_stream_handler(PROTOCOL_ID)

    def answer(self, peer: PeerId, source_ip: str | None,
               request: RendezvousMessage) -> RendezvousMessage | None:
        """The reply to one request (None for UNREGISTER, which has none)."""
        now = self._clock()
        if isinstance(request, Register):
            return self.registry.register(peer, source_ip, request, now)
        if isinstance(request, Unregister):
            self.registry.unregister(peer, request.ns, now)
            return None
        if isinstance(request, Discover):
            return self.registry.discover(request, now)
        raise RendezvousDecodeError(f"a {type(request).__name__} is not a request")

    async def handle_stream(self, stream: ServerStream) -> None:
        peer = stream.remote_peer
        if self._streams[peer] >= self.config.max_streams_per_peer:
            self.dropped_streams += 1
            self.activity.set()
            stream.reset()
            return
        self._streams[peer] += 1
        source = _source_ip(stream)
        completed = False
        try:
            for _ in range(self.config.max_requests_per_stream):
                async with asyncio.timeout(self.config.request_timeout):
                    data = await read_frame(stream, MAX_REQUEST_SIZE)
                if data is None:
                    break
                reply = self.answer(peer, source, decode_message(data, MAX_REQUEST_SIZE))
                self.served += 1
                self.activity.set()
                if reply is not None:
                    stream.write(frame(encode_message(reply)))
                    await stream.drain()
            await stream.close()
            completed = True
        finally:
            if not completed:
                self.dropped_streams += 1
                self.activity.set()
            self._streams[peer] -= 1
            if self._streams[peer] <= 0:
                del self._streams[peer]
