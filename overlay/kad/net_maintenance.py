"""Bootstrap, bucket refresh and the maintenance timer of ``KadService``.

One timer serves the whole service: it sleeps until the earliest of the
behaviour's deadline (bucket checks, refreshes, a due re-bootstrap), the
republisher's next job and ``max_timer_delay`` (or until something wakes
it), then expires records, lets the behaviour (``overlay.kad.behaviour``)
decide what is due and starts the republish jobs.  Whether and when to
bootstrap again is the behaviour's decision; this module runs the lookups.

Split out of ``overlay.kad.service``; the service keeps its public methods
(``bootstrap``, ``refresh_buckets``, ``wake_timer``) and attributes
(``bootstrapped``, ``last_bootstrap``) and delegates here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from overlay.identity import PeerId
from overlay.kad.behaviour import KadBehaviour
from overlay.kad.bootstrap_report import BootstrapReport, bootstrap_contacts, bootstrap_report
from overlay.kad.keyspace import random_peer_id_in_bucket
from overlay.kad.lookup import LookupKind, LookupResult
from overlay.kad.net_health import Spawn
from overlay.kad.net_values import KadValues
from overlay.kad.republish import Republisher
from overlay.kad.routing import RoutingTable
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import NoPeersKnown

__all__ = ["KadMaintenance"]

Lookup = Callable[..., Awaitable[LookupResult]]
"""The service's ``_lookup``."""


class KadMaintenance:
    """The bootstrap state and the maintenance timer of one kad service."""

    def __init__(
        self,
        config: KadServiceConfig,
        peer_id: PeerId,
        behaviour: KadBehaviour,
        republisher: Republisher,
        values: KadValues,
        *,
        lookup: Lookup,
        pump: Callable[[], None],
        rng: random.Random,
        clock: Callable[[], float],
        wall: Callable[[], float],
        wake: asyncio.Event,
        spawn: Spawn,
        closing: Callable[[], bool],
        log: logging.Logger,
    ) -> None:
        """``log`` is the service's logger: bootstrap reports keep its name;
        ``pump`` carries out whatever the behaviour decided."""
        self.config = config
        self.peer_id = peer_id
        self.behaviour = behaviour
        self.table: RoutingTable = behaviour.table
        self.local_key = self.table.local_key
        self.republisher = republisher
        self._values = values
        self._lookup = lookup
        self._pump = pump
        self._rng = rng
        self._clock = clock
        self._wall = wall
        self._wake = wake
        self._spawn = spawn
        self._closing = closing
        self._log = log
        self.bootstrapped = asyncio.Event()
        """Set once a bootstrap has run to the end."""
        self.last_bootstrap: BootstrapReport | None = None
        """What the latest bootstrap reached, and why not (see its ``summary``)."""
        self._refreshing = False
        self._bootstrap_attempts = 0

    # -- bootstrap and refresh -----------------------------------------------------

    async def bootstrap(self, addrs: Sequence[str] | None = None) -> LookupResult:
        contacts = bootstrap_contacts(self.config.bootstrap if addrs is None else addrs, self.peer_id)
        outcomes: dict[PeerId, BaseException | None] = {}
        started = self._clock()
        queried: tuple[PeerId, ...] = ()
        self.behaviour.start_bootstrap()
        try:
            result = await self._lookup(
                LookupKind.FIND_NODE,
                self.peer_id.multihash,
                extra_seeds=contacts,
                outcomes=outcomes,
                confirm={c.peer_id for c in contacts},
            )
            queried = result.queried
        finally:
            self.last_bootstrap = bootstrap_report(
                contacts, outcomes, queried, len(self.table), self.config.protocol_id,
                self._clock() - started,
            )
            # The first attempt speaks up; retries while alone stay quieter.
            self.last_bootstrap.log(self._log, loud=self._bootstrap_attempts == 0)
            self._bootstrap_attempts += 1
            # The behaviour decides when to retry if the table stays empty.
            self.behaviour.on_bootstrap_finished(self._clock())
            self._wake.set()
        if self.config.refresh_on_bootstrap:
            await self.refresh_buckets()
        self.bootstrapped.set()
        return result

    async def bootstrap_in_background(self) -> None:
        """A bootstrap the behaviour asked for (``StartBootstrap``)."""
        try:
            await self.bootstrap()
        except NoPeersKnown:
            pass  # logged by bootstrap()

    async def refresh_buckets(self) -> int:
        if self._refreshing:
            return 0
        self._refreshing = True
        try:
            count = 0
            for index in self.table.refresh_indexes():
                target = random_peer_id_in_bucket(self.local_key, index, self._rng)
                await self._lookup(LookupKind.FIND_NODE, target.multihash)
                count += 1
            return count
        finally:
            self._refreshing = False

    async def refresh_buckets_for(self, targets: Sequence[PeerId]) -> None:
        for target in targets:
            await self._lookup(LookupKind.FIND_NODE, target.multihash)

    # -- the timer -------------------------------------------------------------------

    def wake_timer(self) -> None:
        self._wake.set()

    def next_delay(self) -> float:
        delays = [self.config.max_timer_delay]
        due = self.behaviour.next_deadline()
        if due is not None:
            delays.append(due - self._clock())
        republish_due = self.republisher.next_deadline()
        if republish_due is not None:
            delays.append(republish_due - self._wall())
        return max(0.0, min(delays))

    async def timer_loop(self) -> None:
        while not self._closing():
            self._wake.clear()
            try:
                async with asyncio.timeout(self.next_delay()):
                    await self._wake.wait()
                continue  # woken by a change: recompute the deadline
            except TimeoutError:
                pass
            self.on_timer()

    def on_timer(self) -> None:
        wall = self._wall()
        self._values.expire(wall)
        self.behaviour.on_timer(self._clock())
        self._pump()
        self._values.start_due(wall)
