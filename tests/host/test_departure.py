"""A host that shuts down says so; a host that crashes says nothing."""

from __future__ import annotations

import asyncio

from overlay.errors import ConnectionClosed
from overlay.host import Host, HostListener
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.transport.errors import ClosedWithCode

_LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


def _dial_addr(host: Host) -> str:
    return f"{host.listen_addrs()[0]}/p2p/{host.peer_id}"


class _Closures:
    def __init__(self) -> None:
        self.seen: dict[PeerId, ConnectionClosed | None] = {}
        self.changed = asyncio.Event()
        self.listener = HostListener(closed=self._closed)

    def _closed(self, peer: PeerId, reason: ConnectionClosed | None) -> None:
        self.seen[peer] = reason
        self.changed.set()

    async def wait_for(self, peer: PeerId) -> ConnectionClosed | None:
        while peer not in self.seen:
            self.changed.clear()
            await self.changed.wait()
        return self.seen[peer]


async def test_shutdown_reaches_the_peer_as_going_away() -> None:
    closures = _Closures()
    async with asyncio.timeout(10), Host(Ed25519PrivateKey.generate()) as b:
        b.add_listener(closures.listener)
        await b.listen([_LOOPBACK])
        async with Host(Ed25519PrivateKey.generate()) as c:
            await c.listen([_LOOPBACK])
            await c.connect(_dial_addr(b))
            assert await c.ping(b.peer_id) > 0
        reason = await closures.wait_for(c.peer_id)
        assert isinstance(reason, ClosedWithCode) and reason.going_away


async def test_a_crash_sends_no_close() -> None:
    closures = _Closures()
    async with asyncio.timeout(10), Host(Ed25519PrivateKey.generate()) as b:
        b.add_listener(closures.listener)
        await b.listen([_LOOPBACK])
        async with Host(Ed25519PrivateKey.generate()) as c:
            await c.listen([_LOOPBACK])
            await c.connect(_dial_addr(b))
            assert await c.ping(b.peer_id) > 0
            c.abort_for_test()
        # b still believes in the connection: only silence can tell it.
        assert c.peer_id in b.peers()
        assert c.peer_id not in closures.seen
