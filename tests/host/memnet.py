"""An in-memory transport satisfying ``overlay.host.transport_types``.

It lets host logic (limits, merging, handlers) be tested without sockets;
the QUIC tests in test_host_quic.py cover the real transport.
"""

from __future__ import annotations

import asyncio
import itertools

from multiaddr import Multiaddr

from overlay.errors import ConnectionClosed, DialError, PeerIdMismatch
from overlay.identity import PeerId, PrivateKey
from overlay.wire.memory import MemoryStream, memory_stream_pair


class MemoryConn:
    def __init__(
        self,
        local_peer: PeerId,
        remote_peer: PeerId,
        local_address: tuple[str, int],
        remote_address: tuple[str, int],
        is_initiator: bool,
    ) -> None:
        self.local_peer = local_peer
        self.remote_peer = remote_peer
        self.local_address = local_address
        self.remote_address = remote_address
        self.is_initiator = is_initiator
        self.peer: MemoryConn | None = None
        self._incoming: asyncio.Queue[MemoryStream | None] = asyncio.Queue()
        self._streams: list[MemoryStream] = []
        self._closed = asyncio.Event()
        self.streams_opened = 0

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def smoothed_rtt(self) -> float | None:
        return None

    @property
    def remote_multiaddr(self) -> Multiaddr:
        host, port = self.remote_address
        return Multiaddr(f"/ip4/{host}/udp/{port}/quic-v1")

    @property
    def path(self) -> str:
        return "direct"

    @property
    def limit(self) -> None:
        return None

    @property
    def close_reason(self) -> ConnectionClosed | None:
        return ConnectionClosed("connection closed") if self.is_closed else None

    async def open_stream(self) -> MemoryStream:
        if self.is_closed or self.peer is None:
            raise ConnectionClosed("connection closed")
        ours, theirs = memory_stream_pair()
        self._streams.append(ours)
        self.peer._streams.append(theirs)
        self.peer._incoming.put_nowait(theirs)
        self.streams_opened += 1
        return ours

    async def accept_stream(self) -> MemoryStream:
        stream = await self._incoming.get()
        if stream is None:
            raise ConnectionClosed("connection closed")
        return stream

    def close(self, code: int = 0, reason: str = "") -> None:
        for conn in (self, self.peer):
            if conn is None or conn.is_closed:
                continue
            conn._closed.set()
            conn._incoming.put_nowait(None)
            for stream in conn._streams:
                stream.reset()

    async def wait_closed(self) -> None:
        await self._closed.wait()


class MemoryNetwork:
    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, int], MemoryEndpoint] = {}
        self._ports = itertools.count(10000)
        self.dials = 0

    def factory(self, key: PrivateKey):  # type: ignore[no-untyped-def]
        async def create(host: str, port: int) -> MemoryEndpoint:
            if port == 0:
                port = next(self._ports)
            if (host, port) in self.endpoints:
                raise OSError("address in use")
            endpoint = MemoryEndpoint(self, PeerId.from_public_key(key.public_key()), (host, port))
            self.endpoints[(host, port)] = endpoint
            return endpoint

        return create


class MemoryEndpoint:
    def __init__(self, net: MemoryNetwork, peer: PeerId, address: tuple[str, int]) -> None:
        self.net = net
        self.peer = peer
        self.local_address = address
        self._incoming: asyncio.Queue[MemoryConn | None] = asyncio.Queue()
        self.dial_gate: asyncio.Event | None = None
        self.dial_started = asyncio.Event()

    async def dial(self, address: tuple[str, int], expected_peer: PeerId | None) -> MemoryConn:
        self.net.dials += 1
        self.dial_started.set()
        if self.dial_gate is not None:
            await self.dial_gate.wait()
        target = self._lookup(address)
        if target is None:
            raise DialError(f"nothing listens on {address}")
        if expected_peer is not None and expected_peer != target.peer:
            raise PeerIdMismatch(str(expected_peer), str(target.peer))
        ours = MemoryConn(self.peer, target.peer, self.local_address, target.local_address, True)
        theirs = MemoryConn(target.peer, self.peer, target.local_address, self.local_address, False)
        ours.peer, theirs.peer = theirs, ours
        target._incoming.put_nowait(theirs)
        return ours

    def _lookup(self, address: tuple[str, int]) -> MemoryEndpoint | None:
        host, port = address
        for (ehost, eport), endpoint in self.net.endpoints.items():
            if eport == port and (ehost == host or ehost in ("0.0.0.0", "::")):
                return endpoint
        return None

    async def accept(self) -> MemoryConn:
        conn = await self._incoming.get()
        if conn is None:
            raise ConnectionClosed("endpoint closed")
        return conn

    async def aclose(self) -> None:
        self.net.endpoints.pop(self.local_address, None)
        self._incoming.put_nowait(None)

    def abort_for_test(self) -> None:
        self.net.endpoints.pop(self.local_address, None)
        self._incoming.put_nowait(None)
