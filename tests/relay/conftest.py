"""Three hosts over real QUIC on loopback: a relay R and two clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


@dataclass
class Node:
    host: Host
    client: RelayClient


@dataclass
class RelayNet:
    relay: Host
    server: RelayServer
    make_node: Callable[[], Awaitable[Node]]
    stack: AsyncExitStack

    def relay_addr(self) -> str:
        return f"{self.relay.listen_addrs()[0]}/p2p/{self.relay.peer_id}"


@pytest.fixture
def limits() -> RelayLimits:
    return RelayLimits()


@pytest.fixture
async def net(limits: RelayLimits) -> AsyncIterator[RelayNet]:
    async with AsyncExitStack() as stack:
        key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(key))
        await relay.listen([LOOPBACK])
        server = await stack.enter_async_context(RelayServer(relay, key, limits))

        async def make_node() -> Node:
            host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
            await host.listen([LOOPBACK])
            client = await stack.enter_async_context(RelayClient(host))
            await host.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}")
            return Node(host, client)

        yield RelayNet(relay, server, make_node, stack)
