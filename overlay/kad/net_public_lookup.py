"""The lookups of ``KadService``, public and internal, with answer hooks.

``KadService.lookup`` is the one way code outside ``overlay.kad`` runs a
lookup: it picks the seeds, sends real requests (with the measured
per-peer timeouts), admits every peer that answered to the routing table,
and tells the caller, through optional hooks, what happens as it happens:

- ``on_peers(contacts)``: peers the lookup may ask.  First the seeds
  (before any request), then, after each ``on_answer``, the closer peers
  that answer named and the lookup takes (not us, nor a peer that
  recently failed us).  A peer may be named again.
- ``on_answer(contact, message)``: ``contact`` answered with ``message``
  (its record, providers and closer peers).
- ``on_failure(contact, error)``: the lookup counts ``contact`` as failed
  (an error answer, or no answer within its timeout and retries).  A peer
  still silent when the lookup ends is in neither hook: the returned
  ``LookupResult`` counts it as ``closest_silent``.

Hooks run on the lookup's own coroutine and must not block.  The lookup
ends when it converges, at ``quorum`` valid records (GET_VALUE), or at its
``timeout``; cancelling the awaiting caller ends it at once, requests in
flight included.

The service's own jobs (values, providers, bootstrap, refresh) run through
``ServiceLookups.run`` with a few more knobs; only the service calls it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace

from overlay.identity import PeerId
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.lookup import Lookup, LookupKind, LookupResult
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.net_lookup import drive_lookup
from overlay.kad.net_rpc import KadStats, LookupStats
from overlay.kad.records import NamespaceRegistry, Record
from overlay.kad.routing import RoutingTable
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import NoPeersKnown

__all__ = ["OnAnswer", "OnFailure", "OnPeers", "ServiceLookups"]

OnPeers = Callable[[Sequence[Contact]], None]
"""Peers the lookup may ask: the seeds, then each answer's closer peers."""
OnAnswer = Callable[[Contact, KadMessage], None]
"""A peer answered the lookup's request."""
OnFailure = Callable[[Contact, BaseException], None]
"""The lookup counts a peer as failed, with the error it last got."""

Request = Callable[..., Awaitable[KadMessage]]
"""The service's ``request(contact, message, *, lazy=...)``."""

_LOOKUP_KINDS = {
    LookupKind.FIND_NODE: MessageType.FIND_NODE,
    LookupKind.GET_VALUE: MessageType.GET_VALUE,
    LookupKind.GET_PROVIDERS: MessageType.GET_PROVIDERS,
}
_VERDICT_GRACE = 0.02
"""Seconds the lookup waits for a silent peer past its request's timeout."""
_BACKSTOP = 0.25
"""Seconds the driver waits past the lookup's deadline before cutting it."""


class ServiceLookups:
    """Runs one kad service's lookups over its routing table and requests."""

    def __init__(
        self,
        config: KadServiceConfig,
        peer_id: PeerId,
        table: RoutingTable,
        registry: NamespaceRegistry,
        stats: KadStats,
        *,
        request: Request,
        timeout_for: Callable[[Contact], float],
        admit: Callable[[PeerId, Sequence[bytes]], None],
        closer: Callable[[KadMessage], list[Contact]],
        require_running: Callable[[], None],
        clock: Callable[[], float],
        wall: Callable[[], float],
        connected: Callable[[PeerId], bool] | None = None,
    ) -> None:
        """``admit(peer, addrs)`` is called for every peer that answered;
        ``closer(answer)`` picks the closer peers of an answer worth asking."""
        self.config = config
        self.peer_id = peer_id
        self.table = table
        self.registry = registry
        self.stats = stats
        self._request = request
        self._timeout_for = timeout_for
        self._admit = admit
        self._closer = closer
        self._require_running = require_running
        self._clock = clock
        self._wall = wall
        self._connected = connected

    def _seeds(self, key: int, extra: Sequence[Contact] = ()) -> list[Contact]:
        seeds = self.table.closest(key, self.config.lookup.k)
        known = {c.peer_id for c in seeds}
        return seeds + [c for c in extra if c.peer_id not in known and c.peer_id != self.peer_id]

    async def run(
        self,
        kind: LookupKind,
        target: bytes,
        *,
        extra_seeds: Sequence[Contact] = (),
        stop_when_found: bool = False,
        quorum: int | None = None,
        max_providers: int | None = None,
        local_record: Record | None = None,
        timeout: float | None = None,
        on_peers: OnPeers | None = None,
        on_answer: OnAnswer | None = None,
        on_failure: OnFailure | None = None,
        outcomes: dict[PeerId, BaseException | None] | None = None,
        confirm: Collection[PeerId] = (),
    ) -> LookupResult:
        """One lookup (see the module docstring for the hooks).
        ``outcomes``, if given, records each asked peer's answer (None) or
        failure; requests to ``confirm`` peers negotiate before sending, so
        a peer without our protocol says so.  ``timeout`` defaults to the
        service's ``lookup_timeout``.  Raises ``NoPeersKnown`` without
        seeds (and without ``local_record``)."""
        self._require_running()
        key = kad_key(target)
        seeds = self._seeds(key, extra_seeds)
        if not seeds and local_record is None:
            raise NoPeersKnown()
        lookup_config = replace(
            self.config.lookup,
            stop_when_found=stop_when_found,
            quorum=self.config.get_quorum if quorum is None else quorum,
            max_providers=(
                self.config.lookup.max_providers if max_providers is None else max_providers
            ),
        )
        limit = self.config.lookup_timeout if timeout is None else timeout
        started = self._clock()
        lookup = Lookup(
            kind,
            target,
            seeds,
            lookup_config,
            local_key=self.table.local_key,
            registry=self.registry,
            validation_time=self._wall(),
            local_record=local_record,
            # A hair past the request's own timeout, so that the request's
            # verdict (a timeout with or without a connection) comes first.
            timeout_for=lambda contact: self._timeout_for(contact) + _VERDICT_GRACE,
            deadline=started + limit,
        )
        request = KadMessage(_LOOKUP_KINDS[kind], target)

        async def query(contact: Contact) -> KadMessage:
            return await self._request(
                contact, request, lazy=False if contact.peer_id in confirm else None
            )

        def answered(contact: Contact, answer: KadMessage) -> list[Contact]:
            self._admit(contact.peer_id, contact.addrs)
            if outcomes is not None:
                outcomes[contact.peer_id] = None
            if on_answer is not None:
                on_answer(contact, answer)
            closer = self._closer(answer)
            if on_peers is not None:
                on_peers(closer)
            return closer

        def failed(contact: Contact, exc: BaseException) -> None:
            # request() already told the routing policy.
            if outcomes is not None:
                outcomes[contact.peer_id] = exc
            if on_failure is not None:
                on_failure(contact, exc)

        if on_peers is not None:
            on_peers(seeds)
        # The lookup ends itself at its deadline (and says so in its
        # result); the driver's own timeout, a little later, is a backstop.
        result = await drive_lookup(lookup, query, answered, failed, self._clock,
                                    limit + _BACKSTOP, self._connected)
        now = self._clock()
        self.table.mark_refreshed(key, now)
        self.stats.lookups.append(
            LookupStats(kind, now - started, result.messages, result.answered, result.failed,
                        result.rounds)
        )
        return result
