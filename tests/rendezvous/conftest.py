"""Rendezvous over real QUIC on loopback: one point and its clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.rendezvous import (
    RegistryConfig,
    RendezvousClient,
    RendezvousServer,
    ServerConfig,
)

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Peer:
    host: Host
    key: Ed25519PrivateKey
    client: RendezvousClient


@dataclass
class RendezvousNet:
    point: Host
    server: RendezvousServer
    clock: FakeClock
    make_peer: Callable[[], "asyncio.Future[Peer]"] = field(repr=False)

    def dial_addr(self) -> str:
        return f"{self.point.listen_addrs()[0]}/p2p/{self.point.peer_id}"

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (bounded) until ``predicate`` holds after some server activity."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.server.activity.clear()
                await self.server.activity.wait()

    @property
    def point_id(self) -> PeerId:
        return self.point.peer_id


@pytest.fixture
async def rdv() -> AsyncIterator[RendezvousNet]:
    clock = FakeClock()
    async with AsyncExitStack() as stack:
        point = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        await point.listen([LOOPBACK])
        config = ServerConfig(registry=RegistryConfig(min_ttl=10, max_per_peer=5))
        server = await stack.enter_async_context(
            RendezvousServer(point, config, secret=b"k" * 32, clock=clock))

        async def make_peer() -> Peer:
            key = Ed25519PrivateKey.generate()
            host = await stack.enter_async_context(Host(key))
            await host.listen([LOOPBACK])
            await host.connect(f"{point.listen_addrs()[0]}/p2p/{point.peer_id}")
            return Peer(host, key, RendezvousClient(host, key, host.listen_addrs, timeout=10))

        yield RendezvousNet(point, server, clock, make_peer)  # type: ignore[arg-type]
