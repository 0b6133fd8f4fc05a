"""The naming side of the Kademlia service: the ``/ovl-name/`` namespace
registration and an adapter that gives the resolver every responder's
answer.

``KadService.get_value`` stops at a quorum and reports only the best
record; name resolution needs to see who said what (the majority owner
among the closest responders, and whom to correct).  ``KadNameClient``
therefore drives its own GET_VALUE lookup with the service's request
machinery, and reports every peer it learns of or asks and each answer as
it arrives.  The lookup runs until it converges or its deadline, whichever
comes first; each request times out after the service's measured
``request_timeout_for`` the peer, so a dead peer fails instead of holding
the lookup open.

Publishing stores the record here and PUTs it to the closest peers,
within a deadline: those a lookup just found (registration resolves the
name first and passes its responders on), else those of a fresh lookup.
"""

from __future__ import annotations

import asyncio
import logging
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
from overlay.kad.rtt import RttEstimator
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.store import RecordStore
from overlay.naming.config import NamingConfig
from overlay.naming.dht_namespace import NAMESPACE, NameNamespace
from overlay.naming.errors import RecordRejected
from overlay.naming.net_errors import PublishFailed, ResolveFailed
from overlay.naming.tracker import Answer

__all__ = ["KadLike", "KadNameClient", "NAMESPACE_ID", "register_name_namespace"]

log = logging.getLogger(__name__)

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

    async def request(self, contact: Contact, message: KadMessage) -> KadMessage: ...

    def request_timeout_for(self, contact: Contact) -> float: ...

    def closer_contacts(self, answer: KadMessage) -> list[Contact]: ...

    @property
    def rtt(self) -> RttEstimator: ...


class KadNameClient:
    """``DhtClient`` for the resolver and publisher, over a kad service."""

    def __init__(self, kad: KadLike, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.kad = kad
        self._wall = wall_clock

    async def get_value_answers(self, key: bytes, on_answer: Callable[[Answer], None], *,
                                timeout: float) -> None:
        kad = self.kad
        target = kad_key(key)
        stored = kad.records.get(key, self._wall())
        if stored is not None:
            # This node may itself be one of the closest storage nodes.  (Not
            # holding the record is no answer: the resolver would then store
            # every name it resolves here, close to the key or not.)
            on_answer(Answer(kad.peer_id.to_bytes(), kad.local_key ^ target,
                             stored.record.value))
        seeds = kad.table.closest(target, kad.config.lookup.k)
        if not seeds:
            if stored is None:
                raise ResolveFailed("the DHT routing table is empty (no bootstrap peer reachable?)")
            return
        for contact in seeds:
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, pending=True))
        lookup = self._lookup(key, seeds)
        request = KadMessage(MessageType.GET_VALUE, key)

        async def query(contact: Contact) -> KadMessage:
            return await kad.request(contact, request)

        def answered(contact: Contact, message: KadMessage) -> Sequence[Contact]:
            value = message.record.value if message.record is not None else None
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, value))
            # Not us, nor a peer that recently failed us: it would only
            # stay silent in the window until its timeout.
            closer = kad.closer_contacts(message)
            for peer in closer:
                on_answer(Answer(peer.peer_id.to_bytes(), peer.key ^ target, pending=True))
            return closer

        def failed(contact: Contact, exc: BaseException) -> None:
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, failed=True))

        await drive_lookup(lookup, query, answered, failed, time.monotonic, timeout)

    def _lookup(self, key: bytes, seeds: Sequence[Contact]) -> Lookup:
        kad = self.kad
        return Lookup(
            LookupKind.GET_VALUE,
            key,
            seeds,
            replace(kad.config.lookup, quorum=0),  # run to the end: the tracker decides
            local_key=kad.local_key,
            registry=kad.registry,
            validation_time=self._wall(),
            timeout_for=kad.request_timeout_for,
        )

    async def _closest(self, key: bytes, timeout: float) -> list[bytes]:
        """Peers that answered a GET_VALUE lookup for ``key``, closest first."""
        answers: dict[bytes, Answer] = {}

        def keep(answer: Answer) -> None:
            if not answer.pending and not answer.failed:
                answers[answer.peer] = answer

        await self.get_value_answers(key, keep, timeout=timeout)
        ranked = sorted(answers.values(), key=lambda a: a.distance)
        return [a.peer for a in ranked[: self.kad.config.lookup.k]]

    def round_trip(self) -> float | None:
        warm = self.kad.rtt.warm
        return warm.srtt if warm.samples else None

    async def wait_ready(self) -> None:
        if self.kad.config.bootstrap:
            await self.kad.bootstrapped.wait()

    async def put_value(self, key: bytes, value: bytes, *, timeout: float,
                        peers: Sequence[bytes] | None = None) -> int:
        """The lookup (without ``peers``) and the PUTs get ``timeout`` each."""
        try:
            self.kad.records.put(Record(key, value), None, self._wall())
        except InvalidRecord as exc:
            # Our own store refused it: it holds another owner's record.
            raise PublishFailed(f"this node's record store refuses the record: {exc}") from exc
        if peers is None:
            try:
                peers = await self._closest(key, timeout)
            except ResolveFailed as exc:
                raise PublishFailed(str(exc)) from exc
        me = self.kad.peer_id.to_bytes()
        targets = [p for p in peers if p != me]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._put_within(peer, key, value, timeout))
                     for peer in targets]
        return sum(1 for task in tasks if task.result())

    async def _put_within(self, peer: bytes, key: bytes, value: bytes, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return await self.store_at(peer, key, value)
        except TimeoutError:
            log.debug("PUT_VALUE to %s did not finish in time", PeerId.from_bytes(peer))
            return False

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
