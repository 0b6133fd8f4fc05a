"""One node's Kademlia behaviour: who enters and leaves the routing table,
which liveness checks to run and when to bootstrap again (pure).

Events in, actions out, as rust-libp2p's ``Behaviour::poll`` drives its
queries: a driver reports what happened (``on_identified``,
``on_answered``, ``on_request_failed``, ``on_closed``,
``on_check_result``, ``on_bootstrap_finished``) and collects what to do
next with ``poll(now)``; ``next_deadline()`` says when to poll again if
nothing happens.  Nothing here awaits or reads a clock.

The network service (``overlay.kad.service`` with ``net_health`` and
``net_maintenance``) and the simulator (``overlay.sim.engine``) drive this
same class, so the simulator's churn figures describe the node that ships.

Decisions:

- Only a peer that answered us enters the table.  A peer identify names as
  a kad server is asked once (``VerifyPeer``) unless it is in the table
  already; a peer that stopped serving kad is dropped at once.
- A full bucket checks its least recently seen entry (``PingNeeded``);
  the newcomer waits in the replacement cache.
- Failed requests and closed connections follow ``overlay.kad.policy``:
  outright failures evict, a timeout on a live connection is probed
  first (``ProbeConnection``), a refusal on a live connection (an
  overloaded server) evicts nobody, a silent close is checked
  (``CheckPeer``).
- One check per peer at a time; any check's answer also settles a bucket
  check pending on that peer.
- An empty table with bootstrap peers configured bootstraps again
  (``StartBootstrap``), backing off 1, 2, 4 … s up to ``max_retry_delay``;
  due buckets are refreshed (``RefreshBuckets``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.kad.bootstrap_report import bootstrap_retry_delay
from overlay.kad.keyspace import Contact
from overlay.kad.policy import CheckPeer, FailureKind, NodePolicy, ProbeConnection
from overlay.kad.routing import PingNeeded, RoutingTable
from overlay.kad.rtt import RttEstimator

__all__ = [
    "Action",
    "BehaviourConfig",
    "CheckPeer",
    "KadBehaviour",
    "PingNeeded",
    "ProbeConnection",
    "RefreshBuckets",
    "StartBootstrap",
    "VerifyPeer",
]


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    """What a node does on its own besides answering events."""

    rebootstrap: bool = False
    """Bootstrap peers are configured: bootstrap again while the table is
    empty (a node that has none can only wait to be found)."""
    max_retry_delay: float = 60.0
    """Ceiling in seconds of the back-off between bootstraps that left the
    table empty."""

    def __post_init__(self) -> None:
        if not self.max_retry_delay > 0:
            raise ValueError("max_retry_delay must be positive")


@dataclass(frozen=True, slots=True)
class VerifyPeer:
    """Send ``contact`` one kad request (on the connection it came on);
    report with ``on_check_result`` and the contact as seen then."""

    contact: Contact


@dataclass(frozen=True, slots=True)
class StartBootstrap:
    """Run a bootstrap lookup (our own ID through the bootstrap peers);
    report with ``on_bootstrap_finished``."""


@dataclass(frozen=True, slots=True)
class RefreshBuckets:
    """Run one FIND_NODE for each target (a random ID in a due bucket)."""

    targets: tuple[PeerId, ...]


Action = VerifyPeer | CheckPeer | ProbeConnection | PingNeeded | StartBootstrap | RefreshBuckets
"""What ``poll`` hands the driver.  The first four are checks of one peer,
each answered by ``on_check_result``."""

_Check = VerifyPeer | CheckPeer | ProbeConnection | PingNeeded


def _checked_peer(check: _Check) -> PeerId:
    return check.peer if isinstance(check, ProbeConnection) else check.contact.peer_id


class KadBehaviour:
    """The routing policy of one node over its ``RoutingTable``."""

    def __init__(
        self,
        table: RoutingTable,
        rng: random.Random,
        config: BehaviourConfig | None = None,
        *,
        rtt: RttEstimator | None = None,
    ) -> None:
        """``rtt``: the estimator answers are sampled into (the driver's
        own if it samples elsewhere, as the network service does)."""
        self.table = table
        self.config = config or BehaviourConfig()
        self.policy = NodePolicy(table)
        self.rtt = rtt if rtt is not None else RttEstimator()
        self._rng = rng
        self._queue: deque[Action] = deque()
        self._checking: dict[PeerId, _Check] = {}
        self._bootstrapping = False
        self._bootstrap_failures = 0
        self._rebootstrap_at: float | None = None
        self.checks_failed = 0
        """Checks (any kind) that found the peer dead."""

    # -- queries -------------------------------------------------------------------

    @property
    def checking(self) -> Collection[PeerId]:
        """Peers with a check under way (verifications included)."""
        return self._checking.keys()

    @property
    def evictions(self) -> int:
        """Table peers dropped after failed requests or departures."""
        return self.policy.evictions

    @property
    def bootstrapping(self) -> bool:
        return self._bootstrapping

    def worth_asking(self, contacts: Iterable[Contact], now: float) -> list[Contact]:
        """The contacts others named that did not fail us lately."""
        return self.policy.worth_asking(contacts, now)

    def next_deadline(self) -> float | None:
        """When ``poll`` has timer work to do, if nothing happens before."""
        deadlines = []
        table_due = self.table.next_deadline()
        if table_due is not None:
            deadlines.append(table_due)
        if self._rebootstrap_at is not None and self._wants_bootstrap():
            deadlines.append(self._rebootstrap_at)
        return min(deadlines) if deadlines else None

    # -- events ----------------------------------------------------------------------

    def on_identified(self, contact: Contact, *, is_server: bool, now: float) -> None:
        """Identify told us what ``contact`` serves; its ``ip_groups`` are
        those of the observed address (never of the addresses it claims)."""
        if not is_server:
            # A client (or a server that stopped serving) is never handed out.
            self.table.add(contact, now, is_server=False)
            return
        if contact.peer_id in self.table:
            self._admit(contact, now)  # it answered before: seen alive again
            return
        self._check(VerifyPeer(contact))

    def on_answered(
        self, contact: Contact, now: float, *, rtt: float | None = None, dialed: bool = False
    ) -> None:
        """``contact`` answered one of our lookup requests after ``rtt``
        seconds (None: the driver samples round trips itself)."""
        if rtt is not None:
            self.rtt.sample(contact.peer_id, rtt, now, dialed=dialed)
        self._admit(contact, now)

    def on_request_failed(
        self, peer: PeerId, kind: FailureKind, *, connected: bool, now: float
    ) -> None:
        """A request to ``peer`` failed; ``connected`` if a connection to it
        is still open afterwards."""
        probe = self.policy.on_request_failed(peer, kind, connected=connected, now=now)
        if probe is not None:
            self._check(probe)

    def on_closed(self, peer: PeerId, *, going_away: bool, silent: bool, now: float) -> None:
        """The last connection to ``peer`` closed (see ``NodePolicy.on_closed``)."""
        check = self.policy.on_closed(peer, going_away=going_away, silent=silent, now=now)
        if check is not None:
            self._check(check)

    def on_check_result(
        self, peer: PeerId, alive: bool, now: float, *, seen: Contact | None = None
    ) -> None:
        """The check of ``peer`` ended; ``seen`` is the contact to admit
        after a successful ``VerifyPeer`` (its groups as observed now)."""
        check = self._checking.pop(peer, None)
        if check is None:
            return
        if not alive:
            self.checks_failed += 1
        if isinstance(check, VerifyPeer):
            if alive:
                self._admit(seen if seen is not None else check.contact, now)
            return
        if isinstance(check, PingNeeded) or alive:
            # Also settles a bucket check that waited on this peer while
            # another check of it ran.
            self.table.on_ping_result(peer, alive, now)
        if not alive and not isinstance(check, PingNeeded):
            self.policy.on_check_result(peer, alive, now)

    def forget_check(self, peer: PeerId) -> None:
        """The check of ``peer`` ended without a verdict (its driver was
        cancelled): nothing is decided, and a later check may run."""
        self._checking.pop(peer, None)

    def start_bootstrap(self) -> None:
        """A bootstrap starts outside ``poll`` (at start-up, or asked for)."""
        self._bootstrapping = True

    def on_bootstrap_finished(self, now: float) -> None:
        """A bootstrap ended: a table still empty retries soon, backing off,
        so a bootstrap peer that was busy or still starting does not leave
        us alone for the whole maintenance period."""
        self._bootstrapping = False
        if len(self.table) or not self.config.rebootstrap:
            self._bootstrap_failures = 0
            self._rebootstrap_at = None
            return
        self._bootstrap_failures += 1
        delay = bootstrap_retry_delay(self._bootstrap_failures, self.config.max_retry_delay, self._rng)
        self._rebootstrap_at = now + delay

    # -- the timer and the actions ------------------------------------------------------

    def on_timer(self, now: float) -> None:
        """Timer work, due or not: re-bootstrap an empty table once its
        retry is due (or at once if none is scheduled), expire unanswered
        bucket checks, refresh due buckets."""
        due = self._rebootstrap_at is None or now >= self._rebootstrap_at
        if self._wants_bootstrap() and due and not self._bootstrapping:
            # Everyone we knew is gone (or the bootstrap peers were down at
            # start): try the configured peers again.
            self._rebootstrap_at = None  # the attempt reschedules when it ends
            self._bootstrapping = True
            self._queue.append(StartBootstrap())
        refresh = self.table.on_timer(now)
        if refresh:
            self._queue.append(RefreshBuckets(tuple(r.target for r in refresh)))

    def poll(self, now: float) -> list[Action]:
        """Run the timer work that is due and hand over every pending action."""
        deadline = self.next_deadline()
        if deadline is not None and deadline <= now:
            self.on_timer(now)
        actions = list(self._queue)
        self._queue.clear()
        return actions

    # -- internals ------------------------------------------------------------------

    def _wants_bootstrap(self) -> bool:
        return self.config.rebootstrap and not len(self.table)

    def _admit(self, contact: Contact, now: float) -> None:
        result = self.table.add(contact, now)
        if result.ping is not None:
            self._check(result.ping)

    def _check(self, check: _Check) -> None:
        peer = _checked_peer(check)
        if peer in self._checking:
            return  # its answer settles this one too (``on_check_result``)
        self._checking[peer] = check
        self._queue.append(check)
