"""The naming side of the Kademlia service: the ``/ovl-name/`` namespace
registration and an adapter that gives the resolver every responder's
answer.

``KadService.get_value`` stops at a quorum and reports only the best
record; name resolution needs to see who said what (the majority owner
among the closest responders, and whom to correct).  ``KadNameClient``
therefore runs the service's public ``lookup`` with its hooks, to the end
(quorum 0), and reports every peer it learns of or asks and each answer
as it arrives.  The lookup runs until it converges or its deadline,
whichever comes first; each request times out after the service's
measured timeout for the peer, so a dead peer fails instead of holding
the lookup open.

Publishing stores the record here and PUTs it to the closest peers,
within a deadline: those a lookup just found (registration resolves the
name first and passes its responders on), else those of a fresh lookup.
Only the public surface of the service is used (``KadLike``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.kad.errors import InvalidRecord
from overlay.kad.keyspace import Contact, kad_key, peer_key
from overlay.kad.lookup import LookupKind, LookupResult
from overlay.kad.messages import KadMessage
from overlay.kad.net_public_lookup import OnAnswer, OnFailure, OnPeers
from overlay.kad.records import NamespaceRegistry, Record
from overlay.kad.service_errors import NoPeersKnown
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
    """The public slice of ``overlay.kad.service.KadService`` used here."""

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def registry(self) -> NamespaceRegistry:
        """Where the daemon registers the name namespace."""
        ...

    async def lookup(
        self,
        kind: LookupKind,
        key: bytes,
        *,
        quorum: int | None = None,
        timeout: float | None = None,
        on_peers: OnPeers | None = None,
        on_answer: OnAnswer | None = None,
        on_failure: OnFailure | None = None,
    ) -> LookupResult: ...

    async def store_at(self, peer: PeerId, record: Record) -> None: ...

    def local_record(self, key: bytes) -> Record | None: ...

    def store_local(self, record: Record) -> None: ...

    async def wait_bootstrapped(self) -> None: ...

    def round_trip(self) -> float | None: ...


class KadNameClient:
    """``DhtClient`` for the resolver and publisher, over a kad service."""

    def __init__(self, kad: KadLike) -> None:
        self.kad = kad

    async def get_value_answers(self, key: bytes, on_answer: Callable[[Answer], None], *,
                                timeout: float) -> None:
        kad = self.kad
        target = kad_key(key)
        stored = kad.local_record(key)
        if stored is not None:
            # This node may itself be one of the closest storage nodes.  (Not
            # holding the record is no answer: the resolver would then store
            # every name it resolves here, close to the key or not.)
            on_answer(Answer(kad.peer_id.to_bytes(), peer_key(kad.peer_id) ^ target,
                             stored.value))

        def named(contacts: Sequence[Contact]) -> None:
            # The seeds, then the closer peers of each answer the lookup
            # takes (not us, nor a peer that recently failed us: it would
            # only stay silent in the window until its timeout).
            for peer in contacts:
                on_answer(Answer(peer.peer_id.to_bytes(), peer.key ^ target, pending=True))

        def answered(contact: Contact, message: KadMessage) -> None:
            value = message.record.value if message.record is not None else None
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, value))

        def failed(contact: Contact, exc: BaseException) -> None:
            on_answer(Answer(contact.peer_id.to_bytes(), contact.key ^ target, failed=True))

        try:
            # Run to the end (quorum 0): the tracker decides.
            await kad.lookup(LookupKind.GET_VALUE, key, quorum=0, timeout=timeout,
                             on_peers=named, on_answer=answered, on_failure=failed)
        except NoPeersKnown:
            if stored is None:
                raise ResolveFailed(
                    "the DHT routing table is empty (no bootstrap peer reachable?)") from None

    async def _closest(self, key: bytes, timeout: float) -> list[bytes]:
        """Peers that answered a GET_VALUE lookup for ``key``, closest first."""
        try:
            result = await self.kad.lookup(LookupKind.GET_VALUE, key, quorum=0, timeout=timeout)
        except NoPeersKnown:
            return []
        return [contact.peer_id.to_bytes() for contact in result.closest]

    def round_trip(self) -> float | None:
        return self.kad.round_trip()

    async def wait_ready(self) -> None:
        await self.kad.wait_bootstrapped()

    async def put_value(self, key: bytes, value: bytes, *, timeout: float,
                        peers: Sequence[bytes] | None = None) -> int:
        """The lookup (without ``peers``) and the PUTs get ``timeout`` each."""
        try:
            self.kad.store_local(Record(key, value))
        except InvalidRecord as exc:
            # Our own store refused it: it holds another owner's record.
            raise PublishFailed(f"this node's record store refuses the record: {exc}") from exc
        if peers is None:
            try:
                peers = await self._closest(key, timeout)
            except OverlayError as exc:
                raise PublishFailed(f"cannot find the closest peers: {exc}") from exc
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
                self.kad.store_local(Record(key, value))
            except (InvalidRecord, OverlayError):
                return False
            return True
        try:
            await self.kad.store_at(PeerId.from_bytes(peer), Record(key, value))
        except (OverlayError, TimeoutError, OSError):
            return False
        return True
