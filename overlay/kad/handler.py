"""A DHT server's answer to one request, computed from its routing table
and stores.  The network service and the simulator both call this.

``handle_request`` returns the response message, or ``None`` where the
protocol has none (ADD_PROVIDER).  A request that must be refused raises a
typed error (an ``InvalidRecord`` subclass for a bad PUT, ``InvalidProviderKey``,
``StorageQuotaExceeded``); the driver resets the stream.

Stores count what a remote leaves here per peer and per source (the IP
prefix of the connection the request came on, from ``peer_source``); a
provider's stored addresses are those it was observed on, not the ones
it claims (a claim could aim every asker at a victim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from overlay.errors import InvalidPeerId
from overlay.identity import PeerId
from overlay.kad.errors import InvalidKadMessage
from overlay.kad.keyspace import kad_key
from overlay.kad.messages import KadMessage, MessageType, PeerInfo
from overlay.kad.providers import ProviderStore, check_provider_key
from overlay.kad.routing import RoutingTable
from overlay.kad.store import RecordStore

__all__ = ["ServerConfig", "KadServer", "PeerSource", "handle_request", "provider_addrs"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a server answers."""

    k: int = 20
    """Closer peers returned per answer."""
    max_addrs_per_peer: int = 8
    """Addresses sent per peer, which keeps k peers well under 16 KiB."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 40:
            raise ValueError("k must be within 1..40 (peers reject longer lists)")
        if self.max_addrs_per_peer < 0:
            raise ValueError("max_addrs_per_peer must not be negative")


@dataclass(frozen=True, slots=True)
class KadServer:
    """What a server answers from; the components stay mutable."""

    local: PeerInfo
    table: RoutingTable
    records: RecordStore
    providers: ProviderStore
    config: ServerConfig = ServerConfig()
    connected_peer: Callable[[PeerId], PeerInfo | None] | None = None
    """The driver's view of a peer it is connected to (with the addresses
    it knows), or ``None``.  FIND_NODE hands such a peer out even when it
    is not in the table, which makes client-mode peers findable."""
    peer_source: Callable[[PeerId], PeerSource] | None = None
    """The source scope of a requester and the addresses it was observed on
    (its connections' remote multiaddrs); None (the simulator) trusts the
    claimed addresses and counts no source."""


PeerSource = tuple[str | None, tuple[bytes, ...]]
"""(source key, observed binary multiaddrs) of a requester."""


def _closer(server: KadServer, target: bytes, sender: PeerId) -> tuple[PeerInfo, ...]:
    contacts = server.table.closest(kad_key(target), server.config.k, exclude=sender)
    limit = server.config.max_addrs_per_peer
    return tuple(PeerInfo(c.peer_id, c.addrs[:limit]) for c in contacts)


def _connected_target(server: KadServer, key: bytes, sender: PeerId) -> PeerInfo | None:
    if server.connected_peer is None:
        return None
    try:
        target = PeerId(bytes(key))
    except InvalidPeerId:
        return None  # a FIND_NODE for a plain key, not a peer
    if target == sender or target == server.local.peer_id:
        return None
    info = server.connected_peer(target)
    if info is None or info.peer_id != target or not info.addrs:
        return None
    return replace(info, addrs=info.addrs[: server.config.max_addrs_per_peer])


def handle_request(
    server: KadServer, request: KadMessage, sender: PeerId, now: float
) -> KadMessage | None:
    """Answer ``request`` from ``sender``; ``now`` is wall-clock time (record
    validity and expiry are absolute)."""
    kind = request.type
    if kind is MessageType.FIND_NODE:
        if request.key == server.local.peer_id.multihash:
            return KadMessage(kind, request.key, closer_peers=(server.local,))
        # Like go-libp2p, answer with the k closest even when the target
        # itself is among them: the asker wants the neighbourhood too.
        closer = _closer(server, request.key, sender)
        target = _connected_target(server, request.key, sender)
        if target is not None:
            rest = tuple(p for p in closer if p.peer_id != target.peer_id)
            closer = (target, *rest)[: server.config.k]
        return KadMessage(kind, request.key, closer_peers=closer)

    if kind is MessageType.GET_VALUE:
        stored = server.records.get(request.key, now)
        record = stored.record if stored is not None else None
        return KadMessage(
            kind, request.key, record=record, closer_peers=_closer(server, request.key, sender)
        )

    if kind is MessageType.PUT_VALUE:
        record = request.record
        if record is None or record.key != request.key:
            raise InvalidKadMessage("PUT_VALUE record is missing or its key differs")
        source = server.peer_source(sender)[0] if server.peer_source is not None else None
        server.records.put(record, sender, now, source)
        # The echo tells the putter it was stored (js-libp2p relies on it).
        return KadMessage(kind, request.key, record=record)

    if kind is MessageType.GET_PROVIDERS:
        check_provider_key(request.key)
        return KadMessage(
            kind,
            request.key,
            closer_peers=_closer(server, request.key, sender),
            provider_peers=tuple(server.providers.get(request.key, now)),
        )

    # ADD_PROVIDER: only an entry for the sender itself is accepted.
    check_provider_key(request.key)
    for info in request.provider_peers:
        if info.peer_id == sender:
            if server.peer_source is None:
                server.providers.add(request.key, info, now)
                continue
            source, observed = server.peer_source(sender)
            addrs = provider_addrs(info.addrs, observed, server.config.max_addrs_per_peer)
            server.providers.add(request.key, replace(info, addrs=addrs), now, source=source)
            break
    return None


def provider_addrs(claimed: tuple[bytes, ...], observed: tuple[bytes, ...],
                   limit: int) -> tuple[bytes, ...]:
    """The claimed addresses the provider was also seen on, else what it
    was seen on: never an address only its own word vouches for."""
    seen = set(observed)
    confirmed = tuple(a for a in claimed if a in seen)
    return (confirmed or observed)[:limit]
