"""Finding a peer's addresses in kad answers, and dialing one of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, OverlayError, RemoteProtocolError, TransportError
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.kad.messages import KadMessage
from overlay.kad.net_rpc import KadHost, quic_addr
from overlay.kad.service_errors import PeerNotFound
from overlay.multiaddrs import with_p2p

__all__ = ["collect_addrs", "connect_any"]


def collect_addrs(peer: PeerId, found: dict[Multiaddr, None]) -> Callable[[KadMessage], None]:
    """A lookup watcher adding every QUIC address others give for ``peer``."""

    def watch(answer: KadMessage) -> None:
        for info in answer.closer_peers:
            if info.peer_id == peer:
                for raw in info.addrs:
                    addr = quic_addr(raw, peer)
                    if addr is not None:
                        found[addr] = None

    return watch


async def connect_any(host: KadHost, peer: PeerId, addrs: Sequence[Multiaddr]) -> Connection:
    """The first address of ``peer`` that connects; raises the last dial
    error, or ``PeerNotFound`` without addresses."""
    last: OverlayError | None = None
    for addr in addrs:
        try:
            return await host.connect(with_p2p(addr, peer))
        except (TransportError, RemoteProtocolError, InvalidMultiaddr) as exc:
            last = exc
    raise last if last is not None else PeerNotFound(peer)
