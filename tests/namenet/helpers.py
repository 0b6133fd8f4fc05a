"""Networks of real hosts, kad services and name services on loopback QUIC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from overlay.host import Host, HostConfig
from overlay.identity import Ed25519PrivateKey, PrivateKey
from overlay.kad.lookup import LookupConfig
from overlay.kad.records import default_registry
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from overlay.naming import NamingConfig
from overlay.naming.kad_client import KadNameClient, register_name_namespace
from overlay.naming.resolver import ResolverConfig
from overlay.naming.service import NameService, NameServiceConfig
from overlay.transport import TransportConfig

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
POW_BITS = 4
NAMING = NamingConfig(pow_bits=POW_BITS)

FAST_TRANSPORT = TransportConfig(handshake_timeout=2.0, idle_timeout=20.0, keepalive_interval=5.0)
FAST_HOST = HostConfig(transport=FAST_TRANSPORT, dial_timeout=2.0, negotiate_timeout=3.0)
FAST_KAD = KadServiceConfig(
    request_timeout=3.0, lookup_timeout=20.0, lookup=LookupConfig(peer_timeout=1.0),
    refresh_on_bootstrap=False)
FAST_NAMES = NameServiceConfig(
    naming=NAMING, resolver=ResolverConfig(quorum=2, timeout=15.0), retry_interval=0.2,
    max_retry_interval=1.0, flush_delay=0.0)


def full_addr(host: Host) -> str:
    return f"{host.listen_addrs()[0]}/p2p/{host.peer_id}"


@dataclass
class NameNode:
    key: PrivateKey
    host: Host
    kad: KadService
    names: NameService
    stack: AsyncExitStack = field(repr=False)

    @property
    def addr(self) -> str:
        return full_addr(self.host)

    async def stop(self) -> None:
        await self.stack.aclose()


async def start_name_node(
    *,
    key: PrivateKey | None = None,
    directory: Path | None = None,
    bootstrap: tuple[str, ...] = (),
    config: NameServiceConfig = FAST_NAMES,
    kad_config: KadServiceConfig = FAST_KAD,
    listen: str = LOOPBACK,
) -> NameNode:
    key = key or Ed25519PrivateKey.generate()
    stack = AsyncExitStack()
    try:
        host = await stack.enter_async_context(Host(key, FAST_HOST))
        await host.listen([listen])
        registry = default_registry()
        register_name_namespace(registry, config.naming)
        kad = await stack.enter_async_context(KadService(host, kad_config, registry=registry))
        if bootstrap:
            await kad.bootstrap(list(bootstrap))
        names = await stack.enter_async_context(NameService(
            key, KadNameClient(kad), directory, config,
            self_addrs=lambda: tuple(a.to_bytes() for a in host.listen_addrs())))
    except BaseException:
        await stack.aclose()
        raise
    return NameNode(key, host, kad, names, stack)


@asynccontextmanager
async def name_network(count: int, config: NameServiceConfig = FAST_NAMES,
                       kad_config: KadServiceConfig = FAST_KAD,
                       ) -> AsyncIterator[list[NameNode]]:
    """Node 0 introduces; every other node bootstraps through it.  Every
    node still running at the end is stopped, newest first."""
    nodes: list[NameNode] = []
    try:
        nodes.append(await start_name_node(config=config, kad_config=kad_config))
        for _ in range(count - 1):
            nodes.append(await start_name_node(bootstrap=(nodes[0].addr,), config=config,
                                               kad_config=kad_config))
        yield nodes
    finally:
        for node in reversed(nodes):
            await node.stop()
