from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from overlay.host import Host, HostConfig, HostListener, IdentifyInfo
from overlay.identity import Ed25519PrivateKey, PeerId

from tests.host.memnet import MemoryNetwork


class Recorder:
    """Collects host notifications and lets tests wait for them."""

    def __init__(self) -> None:
        self.connected: list[PeerId] = []
        self.disconnected: list[PeerId] = []
        self.identified: list[tuple[PeerId, IdentifyInfo]] = []
        self._changed = asyncio.Event()
        self.listener = HostListener(
            connected=lambda p, c: self._add(self.connected, p),
            disconnected=lambda p: self._add(self.disconnected, p),
            identified=lambda p, i: self._add(self.identified, (p, i)),
        )

    def _add(self, target: list, item: object) -> None:  # type: ignore[type-arg]
        target.append(item)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def identified_by(self, peer: PeerId) -> list[IdentifyInfo]:
        return [info for p, info in self.identified if p == peer]


@pytest.fixture
async def memory_hosts() -> AsyncIterator[Callable[..., object]]:
    """``await make(config=None)`` → (host, recorder) started and listening."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:

        async def make(config: HostConfig | None = None, listen: bool = True) -> tuple[Host, Recorder]:
            key = Ed25519PrivateKey.generate()
            host = Host(key, config, endpoint_factory=net.factory(key))
            recorder = Recorder()
            host.add_listener(recorder.listener)
            await stack.enter_async_context(host)
            if listen:
                await host.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
            return host, recorder

        make.net = net  # type: ignore[attr-defined]
        yield make


@pytest.fixture
async def quic_hosts() -> AsyncIterator[Callable[..., object]]:
    """Like ``memory_hosts`` but over real QUIC sockets on loopback."""
    async with AsyncExitStack() as stack:

        async def make(
            config: HostConfig | None = None,
            listen: tuple[str, ...] = ("/ip4/127.0.0.1/udp/0/quic-v1",),
        ) -> tuple[Host, Recorder]:
            host = Host(Ed25519PrivateKey.generate(), config)
            recorder = Recorder()
            host.add_listener(recorder.listener)
            await stack.enter_async_context(host)
            if listen:
                await host.listen(list(listen))
            return host, recorder

        yield make
