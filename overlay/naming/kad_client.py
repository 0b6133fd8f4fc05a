"""The naming side of the Kademlia service: the ``/ovl-name/`` namespace
registration and an adapter that gives the resolver every responder's
answer.

``KadService.get_value`` stops at a quorum and reports only the best
record; name resolution needs to see who said what (the majority owner
among the closest responders, and whom to correct).  ``KadNameClient``
therefore drives its own GET_VALUE lookup, to the end, with the service's
request machinery, and reports each answer as it arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.kad.errors import InvalidRecord
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import Lookup, LookupKind
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.net_lookup import drive_lookup
from overlay.kad.records import NamespaceRegistry, Record
from overlay.kad.routing import RoutingTable
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import QuorumFailed
from overlay.kad.store import RecordStore
from overlay.naming.config import NamingConfig
from overlay.naming.dht_namespace import NAMESPACE, NameNamespace
from overlay.naming.errors import RecordRejected
from overlay.naming.net_errors import PublishFailed, ResolveFailed
from overlay.naming.tracker import Answer

__all__ = ["KadLike", "KadNameClient", "NAMESPACE_ID", "register_name_namespace"]

NAMESPACE_ID = NAMESPACE.strip("/")
"""``ovl-name``: the namespace segment registered with the record store."""


def _wrap(error: RecordRejected) -> Exception:
    return InvalidRecord(str(error))


def register_name_namespace(registry: NamespaceRegistry, config: NamingConfig) -> NameNamespace:
    """Make storage nodes validate name records and pin their owners."""
    namespace = NameNamespace(config, wrap_error=_wrap)
    registry.register(NAMESPACE_ID, namespace)
    return namespace


class KadLike(Protocol):
    """The slice of ``overlay.kad.service.KadService`` used here."""

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def local_key(self) -> int: ...

    @property
    def config(self) -> KadServiceConfig: ...

    @property
    def registry(self) -> NamespaceRegistry: ...

    @property
    def records(self) -> RecordStore: ...

    @property
    def table(self) -> RoutingTable: ...

    @property
    def bootstrapped(self) -> asyncio.Event: ...

    async def put_value(self, key: bytes, value: bytes) -> int: ...

    async def request(self, contact: Contact, message: KadMessage) -> KadMessage: ...


class KadNameClient:
    """``DhtClient`` for the resolver and publisher, over a kad service."""

    def __init__(self, kad: KadLike, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.kad = kad
        self._wall = wall_clock

    async def get_value_answers(self, key: bytes, on_answer: Callable[[Answer], None]) -> None:
        kad = self.kad
        target = kad_key(key)
        stored = kad.records.get(key, self._wall())
        if stored is not None:
            # This node may itself be one of the closest storage nodes.
            on_answer(Answer(kad.peer_id.to_bytes(), kad.local_key ^ target, stored.record.value))
        seeds = kad.table.closest(target, kad.config.lookup.k)
        if not seeds:
            if stored is None:
                raise ResolveFailed("the DHT routing table is empty (no bootstrap peer reachable?)")
            return
        lookup = Lookup(
            LookupKind.GET_VALUE,
            key,
            seeds,
            replace(kad.config.lookup, quorum=0),  # run to the end: the tracker decides
            local_key=kad.local_key,
            registry=kad.registry,
            validation_time=self._wall(),
        )
        request = KadMessage(MessageType.GET_VALUE, key)

        async def query(contact: Contact) -> KadMessage:
            return await kad.request(contact, request)

        def answered(contact: Contact, message: KadMessage) -> Sequence[Contact]:
            value = message.record.value if message.record is not None else None
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, value))
            return [info.contact() for info in message.closer_peers
                    if info.peer_id != kad.peer_id]

        def failed(contact: Contact, exc: BaseException) -> None:
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, failed=True))

        await drive_lookup(lookup, query, answered, failed, time.monotonic,
                           kad.config.lookup_timeout)

    async def wait_ready(self) -> None:
        if self.kad.config.bootstrap:
            await self.kad.bootstrapped.wait()

    async def put_value(self, key: bytes, value: bytes) -> int:
        try:
            return await self.kad.put_value(key, value)
        except QuorumFailed as exc:
            return exc.got
        except InvalidRecord as exc:
            # Our own store refused it: it holds another owner's record.
            raise PublishFailed(f"this node's record store refuses the record: {exc}") from exc

    async def store_at(self, peer: bytes, key: bytes, value: bytes) -> bool:
        if peer == self.kad.peer_id.to_bytes():
            # Our own store answered stale: its policy decides, as a peer's would.
            try:
                self.kad.records.put(Record(key, value), None, self._wall())
            except (InvalidRecord, OverlayError):
                return False
            return True
        contact = Contact.of(PeerId.from_bytes(peer))
        message = KadMessage(MessageType.PUT_VALUE, key, record=Record(key, value))
        try:
            await self.kad.request(contact, message)
        except (OverlayError, TimeoutError, OSError):
            return False
        return True
