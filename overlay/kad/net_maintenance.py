"""Bootstrap, re-bootstrap, bucket refresh and the maintenance timer of
``KadService``.

One timer serves the whole service: it sleeps until the earliest of the
routing table's refresh deadline, the republisher's next job and a due
re-bootstrap (or until something wakes it), then expires records, starts
the refreshes and republish jobs that are due, and bootstraps again when
the table is empty.

Split out of ``overlay.kad.service``; the service keeps its public methods
(``bootstrap``, ``refresh_buckets``, ``wake_timer``) and attributes
(``bootstrapped``, ``last_bootstrap``) and delegates here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from overlay.identity import PeerId
from overlay.kad.bootstrap_report import (
    BootstrapReport,
    bootstrap_contacts,
    bootstrap_report,
    bootstrap_retry_delay,
)
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
        table: RoutingTable,
        republisher: Republisher,
        values: KadValues,
        *,
        lookup: Lookup,
        rng: random.Random,
        clock: Callable[[], float],
        wall: Callable[[], float],
        wake: asyncio.Event,
        spawn: Spawn,
        closing: Callable[[], bool],
        log: logging.Logger,
    ) -> None:
        """``log`` is the service's logger: bootstrap reports keep its name."""
        self.config = config
        self.peer_id = peer_id
        self.local_key = table.local_key
        self.table = table
        self.republisher = republisher
        self._values = values
        self._lookup = lookup
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
        self._bootstrapping = False
        self._bootstrap_attempts = 0
        self._bootstrap_failures = 0
        self._rebootstrap_at: float | None = None
        """When the next bootstrap is due while the table stays empty."""

    # -- bootstrap and refresh -----------------------------------------------------

    async def bootstrap(self, addrs: Sequence[str] | None = None) -> LookupResult:
        contacts = bootstrap_contacts(self.config.bootstrap if addrs is None else addrs, self.peer_id)
        outcomes: dict[PeerId, BaseException | None] = {}
        started = self._clock()
        queried: tuple[PeerId, ...] = ()
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
            self._schedule_rebootstrap()
        if self.config.refresh_on_bootstrap:
            await self.refresh_buckets()
        self.bootstrapped.set()
        return result

    def _schedule_rebootstrap(self) -> None:
        # A bootstrap peer that was busy or still starting must not leave
        # us alone for the whole maintenance period: retry soon, backing off.
        if len(self.table) or not self.config.bootstrap:
            self._bootstrap_failures = 0
            self._rebootstrap_at = None
            return
        self._bootstrap_failures += 1
        delay = bootstrap_retry_delay(self._bootstrap_failures, self.config.max_timer_delay, self._rng)
        self._rebootstrap_at = self._clock() + delay
        self._wake.set()

    async def bootstrap_in_background(self) -> None:
        if self._bootstrapping:
            return
        self._bootstrapping = True
        try:
            await self.bootstrap()
        except NoPeersKnown:
            pass  # logged by bootstrap()
        finally:
            self._bootstrapping = False

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
        table_due = self.table.next_deadline()
        if table_due is not None:
            delays.append(table_due - self._clock())
        republish_due = self.republisher.next_deadline()
        if republish_due is not None:
            delays.append(republish_due - self._wall())
        if self._rebootstrap_at is not None and not len(self.table):
            delays.append(self._rebootstrap_at - self._clock())
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
        due = self._rebootstrap_at is None or self._clock() >= self._rebootstrap_at
        if not len(self.table) and self.config.bootstrap and due:
            # Everyone we knew is gone (or the bootstrap peers were down at
            # start): try the configured peers again.
            self._rebootstrap_at = None  # the attempt reschedules when it ends
            self._spawn(self.bootstrap_in_background, "kad re-bootstrap")
        self._values.expire(wall)
        refresh = self.table.on_timer(self._clock())
        if refresh:
            self._spawn(partial(self.refresh_buckets_for, [r.target for r in refresh]), "kad bucket refresh")
        self._values.start_due(wall)
