"""Records and provider announcements over the network for ``KadService``:
storing and fetching values, announcing and finding providers, and the
republish and reprovide jobs the maintenance timer starts.

Split out of ``overlay.kad.service``; the service keeps its public methods
and delegates here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from overlay.kad.keyspace import Contact
from overlay.kad.lookup import LookupKind, LookupResult
from overlay.kad.messages import KadMessage, MessageType, PeerInfo
from overlay.kad.net_fanout import fan_out
from overlay.kad.net_health import Spawn
from overlay.kad.providers import ProviderStore, check_provider_key
from overlay.kad.records import NamespaceRegistry, Record, immutable_key
from overlay.kad.republish import ReplicateRecord, Republisher, RepublishRecord, Reprovide
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import NoPeersKnown, QuorumFailed, ValueNotFound
from overlay.kad.store import RecordStore

__all__ = ["KadValues"]

Lookup = Callable[..., Awaitable[LookupResult]]
"""The service's ``_lookup``."""
Request = Callable[..., Awaitable[KadMessage]]
"""The service's ``request`` (or its RPC's ``send_only``)."""


class KadValues:
    """The value and provider operations of one kad service."""

    def __init__(
        self,
        config: KadServiceConfig,
        registry: NamespaceRegistry,
        records: RecordStore,
        providers: ProviderStore,
        republisher: Republisher,
        *,
        lookup: Lookup,
        request: Request,
        send_only: Callable[..., Awaitable[Any]],
        local_info: Callable[[], PeerInfo],
        wall: Callable[[], float],
        wake: asyncio.Event,
        background: asyncio.Semaphore,
        spawn: Spawn,
        require_running: Callable[[], None],
    ) -> None:
        self.config = config
        self.registry = registry
        self.records = records
        self.providers = providers
        self.republisher = republisher
        self._lookup = lookup
        self._request = request
        self._send_only = send_only
        self._local_info = local_info
        self._wall = wall
        self._wake = wake
        self._background = background
        self._spawn = spawn
        self._require_running = require_running

    # -- values ------------------------------------------------------------------

    async def put_value(self, key: bytes, value: bytes) -> int:
        record = Record(key, value)
        self.records.put(record, None, self._wall())
        self.republisher.published(key, self._wall())
        self._wake.set()
        return await self.replicate(record)

    async def closest_to_record(self, key: bytes) -> tuple[Contact, ...]:
        """The k closest servers to a record key.  A GET_VALUE lookup run to
        the end finds them as a FIND_NODE would, and unlike FIND_NODE it is
        accepted for keys that are not peer IDs by every implementation
        (py-libp2p resets FIND_NODE streams whose key is no multihash)."""
        return (await self._lookup(LookupKind.GET_VALUE, key, quorum=0)).closest

    async def put_immutable(self, value: bytes) -> bytes:
        key = immutable_key(value)
        await self.put_value(key, value)
        return key

    async def replicate(
        self, record: Record, peers: Sequence[Contact] | None = None, *, required: int | None = None
    ) -> int:
        if peers is None:
            peers = await self.closest_to_record(record.key)
        message = KadMessage(MessageType.PUT_VALUE, record.key, record=Record(record.key, record.value))
        acks = await fan_out(partial(self._request, message=message), peers, "PUT_VALUE")
        needed = self.config.min_put_acks if required is None else required
        if acks < needed:
            raise QuorumFailed(needed, acks)
        return acks

    async def get_value(self, key: bytes, quorum: int | None = None) -> Record:
        self._require_running()
        self.registry.validator_for(key)  # an unknown namespace fails here, typed
        stored = self.records.get(key, self._wall())
        local = stored.record if stored is not None else None
        try:
            result = await self._lookup(
                LookupKind.GET_VALUE, key, quorum=quorum, local_record=local
            )
        except NoPeersKnown:
            if local is None:
                raise
            return local
        if result.record is None:
            raise ValueNotFound(key)
        fix = list(result.outdated_peers)
        if result.cache_peer is not None:
            fix.append(result.cache_peer)
        if fix:
            self._spawn(partial(self._correct, result.record, fix), "kad record correction")
        return result.record

    async def _correct(self, record: Record, peers: Sequence[Contact]) -> None:
        async with self._background:
            await self.replicate(record, peers, required=0)

    # -- providers -----------------------------------------------------------------

    async def provide(self, key: bytes) -> int:
        check_provider_key(key)
        info = self._local_info()
        self.providers.add(key, info, self._wall(), own=True)
        self.republisher.provided(key, self._wall())
        self._wake.set()
        closest = (await self._lookup(LookupKind.FIND_NODE, key)).closest
        message = KadMessage(MessageType.ADD_PROVIDER, key, provider_peers=(info,))
        told = await fan_out(partial(self._send_only, message=message), closest, "ADD_PROVIDER")
        if told < self.config.min_put_acks:
            raise QuorumFailed(self.config.min_put_acks, told)
        return told

    async def find_providers(self, key: bytes, limit: int | None = None) -> list[PeerInfo]:
        check_provider_key(key)
        local = self.providers.get(key, self._wall())
        result = await self._lookup(LookupKind.GET_PROVIDERS, key, max_providers=limit)
        found = {info.peer_id: info for info in local}
        for info in result.providers:
            found.setdefault(info.peer_id, info)
        return list(found.values())

    # -- maintenance ---------------------------------------------------------------

    def expire(self, wall: float) -> None:
        self.records.expire(wall)
        self.providers.expire(wall)

    def start_due(self, wall: float) -> None:
        """Start the republish and reprovide jobs that are due."""
        for action in self.republisher.on_timer(wall):
            if isinstance(action, RepublishRecord | ReplicateRecord):
                stored = self.records.get(action.key, wall)
                if stored is None:
                    self.republisher.unpublish(action.key)
                    self.republisher.dropped(action.key)
                    continue
                fresh = isinstance(action, ReplicateRecord)
                self._spawn(partial(self._republish, stored.record, only_new=fresh), "kad republish")
            elif isinstance(action, Reprovide):
                self._spawn(partial(self._reprovide, action.key), "kad reprovide")

    async def _republish(self, record: Record, *, only_new: bool) -> None:
        async with self._background:
            closest = await self.closest_to_record(record.key)
            if only_new:
                fresh = self.republisher.new_replicas(record.key, (c.peer_id for c in closest))
                closest = tuple(c for c in closest if c.peer_id in fresh)
            if closest:
                await self.replicate(record, closest, required=0)

    async def _reprovide(self, key: bytes) -> None:
        async with self._background:
            await self.provide(key)
