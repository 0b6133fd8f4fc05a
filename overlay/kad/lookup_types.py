"""The data a lookup takes and gives (``overlay.kad.lookup`` re-exports all
of it): its kind and parameters, the actions it returns, and its result."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.messages import PeerInfo
from overlay.kad.records import Record

__all__ = [
    "ADAPTIVE_MAX_PATHS",
    "LOOKUP_RETRIES",
    "LookupKind",
    "LookupConfig",
    "LookupResult",
    "SendRequest",
    "Waiting",
    "Finished",
    "LookupAction",
]


LOOKUP_RETRIES = 3
"""Retries the network service and the simulator use (``LookupConfig``
alone keeps 1) for a peer whose request timed out on an open connection.
With 10% of messages lost each way a round trip fails 19% of the time,
and a lookup's target stays silent through four of them 0.13% of the
time: 1000 of 1000 simulated lookups at 10,000 nodes succeed, against
96.5% with one retry, at the same median and p99 latency
(bench/lookup_loss.py).  A timeout without a connection is never retried
(``overlay.kad.net_lookup``), so the dead cost little more: p99 2.5x the
churn-free one at 30% churn, against 2.3x with one retry
(bench/bench_sim.py --only-churn)."""


ADAPTIVE_MAX_PATHS = 4
"""The most disjoint paths the network service and the simulator open
(``LookupConfig.adaptive_paths``; they start with one).  At 10,000
simulated nodes with 1000 GETs each, nobody lying costs the messages of
one path (1.00x), 20% forgers and 40% eclipse liars leave no GET failing
(bench/bench_sim.py --only-adaptive, bench/README.md #10)."""


class LookupKind(Enum):
    FIND_NODE = "find-node"
    GET_VALUE = "get-value"
    GET_PROVIDERS = "get-providers"


@dataclass(frozen=True, slots=True)
class LookupConfig:
    """Parameters of one lookup; defaults follow the kad-dht spec."""

    alpha: int = 3
    """Requests in flight per path."""
    k: int = 20
    """A path ends when this many of its closest peers have answered."""
    peer_timeout: float = 10.0
    """Seconds after which a silent peer no longer holds an alpha slot."""
    disjoint_paths: int = 1
    """Number of disjoint paths (S/Kademlia's d); 1 is plain Kademlia.
    With ``adaptive_paths``, the most paths the lookup may open."""
    adaptive_paths: bool = False
    """Start with one path and open another disjoint one for each path that
    shows evidence of lies: a GET_VALUE record failing validation or
    conflicting with another valid one, a GET_VALUE path ending without a
    valid record, a GET_PROVIDERS path ending without a provider, a
    FIND_NODE with ``stop_when_found`` whose path ends without the target.
    A lookup nobody lies to then costs what one path costs, a miss (no
    record anywhere) up to ``disjoint_paths`` times that
    (bench/bench_sim.py --only-adaptive)."""
    quorum: int = 1
    """GET_VALUE stops after this many valid records; 0 runs to the end."""
    max_providers: int = 20
    """GET_PROVIDERS stops after this many distinct providers; 0 runs to the end."""
    stop_when_found: bool = False
    """FIND_NODE stops as soon as the target peer itself has answered."""
    retries: int = 1
    """Times a peer whose request timed out is asked again, each with a
    fresh timeout, before it counts as failed; 0 never retries."""
    slow_after: float = 0.3
    """Share of a request's timeout after which it no longer holds an
    alpha slot (it still may answer until its timeout); 1.0: only then.
    Timeouts are several round trips (``overlay.kad.rtt``), so 0.3 leaves
    a live peer time to answer while a dead one stalls a slot for about a
    third as long (bench/bench_sim.py's churn rows)."""

    def __post_init__(self) -> None:
        if self.alpha < 1 or self.k < 1:
            raise ValueError("alpha and k must be at least 1")
        if self.peer_timeout <= 0:
            raise ValueError("peer_timeout must be positive")
        if self.disjoint_paths < 1:
            raise ValueError("disjoint_paths must be at least 1")
        if self.adaptive_paths and self.disjoint_paths < 2:
            raise ValueError("adaptive_paths needs disjoint_paths of at least 2 to widen to")
        if self.quorum < 0 or self.max_providers < 0:
            raise ValueError("quorum and max_providers must not be negative")
        if self.retries < 0:
            raise ValueError("retries must not be negative")
        if not 0.0 < self.slow_after <= 1.0:
            raise ValueError("slow_after must be within (0, 1]")


@dataclass(frozen=True, slots=True)
class SendRequest:
    peer: Contact
    path: int
    deadline: float
    attempt: int = 0
    """0 for the first request to ``peer``, then 1, 2 ... for retries."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Nothing to send now; call ``next`` again at ``deadline`` or when an
    answer arrives."""

    deadline: float | None


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a lookup found, and how sure it is.

    The ``closest_*`` counts describe the *window*: the ``k`` peers closest
    to the target that the lookup learned of and that did not fail.

    - ``closest_answered + closest_silent + closest_unasked`` is the window
      size, which is ``k`` unless fewer live peers are known.
    - ``closest_failed`` counts the peers closer than the window's farthest
      member (or any, if the window is not full) whose request failed or
      outlived its timeout: presumed dead, they are skipped, not waited for
      (a late answer still counts as an answer).
    - ``complete`` is true when every window peer answered: "nobody
      holds a record" is then a definite answer.  Otherwise the lookup
      could not ask everyone that matters (its deadline, silent peers).
    """

    kind: LookupKind
    target: bytes
    closest: tuple[Contact, ...]
    """Up to k peers closest to the target that answered."""
    messages: int
    """Requests sent, retries included."""
    queried: tuple[PeerId, ...]
    """The peers asked, in the order they were asked."""
    answered: int
    failed: int
    """Peers whose requests failed or timed out without a late answer."""
    rounds: int
    record: Record | None = None
    """GET_VALUE: the best valid record (the local one counts too)."""
    valid_records: int = 0
    outdated_peers: tuple[Contact, ...] = ()
    """Peers that returned a worse or an invalid record: store the best back."""
    invalid_peers: tuple[Contact, ...] = ()
    """Peers that returned a record failing validation (a subset of outdated)."""
    cache_peer: Contact | None = None
    """The closest peer that answered without the record: cache it there."""
    providers: tuple[PeerInfo, ...] = ()
    quorum_reached: bool = False
    target_found: bool = False
    """FIND_NODE: the target peer itself answered."""
    closest_answered: int = 0
    """Window peers (see the class docstring) that answered."""
    closest_failed: int = 0
    """Peers that failed or timed out and would otherwise be in the window."""
    closest_silent: int = 0
    """Window peers asked, still within their timeout when the lookup ended."""
    closest_unasked: int = 0
    """Window peers never asked (the lookup ended first)."""
    deadline_reached: bool = False
    """The lookup ended at its overall deadline, not by converging."""
    retries: int = 0
    """Requests sent again to a peer whose earlier request timed out
    (included in ``messages``)."""
    paths: int = 1
    """Disjoint paths the lookup ran (with ``adaptive_paths``, 1 plus one
    per path that showed evidence of lies, up to ``disjoint_paths``)."""

    @property
    def complete(self) -> bool:
        """Every peer of the window answered (and there was at least one)."""
        return (
            self.closest_answered > 0 and self.closest_silent == 0 and self.closest_unasked == 0
        )


@dataclass(frozen=True, slots=True)
class Finished:
    result: LookupResult


LookupAction = SendRequest | Waiting | Finished
