"""Networks of real hosts with kad services on loopback QUIC, in one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

from overlay.host import Host, HostConfig
from overlay.identity import Ed25519PrivateKey
from overlay.kad.lookup import LookupConfig
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from overlay.transport import TransportConfig

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"

# Short timers: on loopback an answer takes milliseconds, and a stopped
# node must cost a lookup about a second, not the default ten.
FAST_TRANSPORT = TransportConfig(handshake_timeout=3.0, idle_timeout=30.0, keepalive_interval=5.0)
FAST_HOST = HostConfig(transport=FAST_TRANSPORT, dial_timeout=3.0, negotiate_timeout=5.0)
FAST_KAD = KadServiceConfig(
    request_timeout=5.0,
    lookup_timeout=30.0,
    lookup=LookupConfig(peer_timeout=2.0),
)


def full_addr(host: Host) -> str:
    return f"{host.listen_addrs()[0]}/p2p/{host.peer_id}"


@dataclass
class Node:
    host: Host
    kad: KadService
    stack: AsyncExitStack

    async def stop(self) -> None:
        await self.stack.aclose()


async def start_node(
    config: KadServiceConfig = FAST_KAD,
    host_config: HostConfig = FAST_HOST,
    wall_clock: Callable[[], float] = time.time,
    clock: Callable[[], float] = time.monotonic,
) -> Node:
    stack = AsyncExitStack()
    try:
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), host_config))
        await host.listen([LOOPBACK])
        kad = await stack.enter_async_context(
            KadService(host, config, wall_clock=wall_clock, clock=clock)
        )
    except BaseException:
        await stack.aclose()
        raise
    return Node(host, kad, stack)


@asynccontextmanager
async def kad_nodes(
    count: int,
    config: KadServiceConfig = FAST_KAD,
    configure: Callable[[int, KadServiceConfig], KadServiceConfig] | None = None,
    host_config: HostConfig = FAST_HOST,
) -> AsyncIterator[list[Node]]:
    """``count`` nodes; node ``i`` gets ``configure(i, config)``.  Every
    node still running at the end is stopped, newest first."""
    nodes: list[Node] = []
    try:
        for index in range(count):
            node_config = configure(index, config) if configure else config
            nodes.append(await start_node(node_config, host_config))
        yield nodes
    finally:
        for node in reversed(nodes):
            await node.stop()


def with_bootstrap(config: KadServiceConfig, *addrs: str) -> KadServiceConfig:
    return replace(config, bootstrap=tuple(addrs))


async def wait_until(predicate: Callable[[], bool], event: asyncio.Event, timeout: float) -> None:
    """Wait for ``predicate`` to hold, re-checking whenever ``event`` fires."""
    async with asyncio.timeout(timeout):
        while not predicate():
            event.clear()
            await event.wait()
