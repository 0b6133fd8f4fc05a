"""What one simulation run simulates (``SimConfig``) and what one lookup
of it came to (``LookupOutcome``)."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.kad.lookup import ADAPTIVE_MAX_PATHS, LOOKUP_RETRIES, LookupConfig, LookupKind
from overlay.kad.routing import RoutingConfig
from overlay.sim.bootstrap import MAX_JOIN_NODES
from overlay.sim.network import NetworkModel

__all__ = ["SimConfig", "LookupOutcome"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulation run."""

    nodes: int = 10_000
    """Nodes present at the start."""
    lookups: int = 100
    seed: int = 0
    churn: float = 0.0
    """Fraction of nodes that leave abruptly during the run; as many new
    nodes join, each making itself known by a self-lookup (see ``_announce``)."""
    adversaries: float = 0.0
    """Fraction of nodes that lie (see ``adversary_mode``)."""
    adversary_mode: str = "eclipse"
    """``eclipse``: answer with the colluding adversaries closest to the key;
    ``random``: answer with random nonexistent peer IDs."""
    kind: LookupKind = LookupKind.FIND_NODE
    """FIND_NODE looks up a random live node.  GET_VALUE and GET_PROVIDERS
    first have a random node publish (a lookup for the key, then PUT_VALUE
    or ADD_PROVIDER to the closest peers it found), then look the key up
    from another node."""
    lookup: LookupConfig = LookupConfig(
        peer_timeout=1.0, retries=LOOKUP_RETRIES, disjoint_paths=ADAPTIVE_MAX_PATHS, adaptive_paths=True
    )
    """Lookup parameters; the timeout is short because simulated RTTs are,
    and the retries and adaptive disjoint paths are the daemon's."""
    routing: RoutingConfig = RoutingConfig()
    network: NetworkModel = NetworkModel()
    lookup_interval: float = 0.5
    """Virtual seconds between lookup starts (lookups overlap)."""
    update_tables: bool = True
    """Askers admit the peers that answered and servers check and admit
    the askers, as the network service does (through ``KadBehaviour``)."""
    bootstrap: str = "sampled"
    """``sampled``: tables drawn from the global view on first use (any N);
    ``join``: every initial node joins through real lookups first (N up to
    20,000; see ``overlay.sim.bootstrap``)."""
    evict_on_failure: bool = True
    """Askers tell their behaviour of failed requests, so they drop a peer
    whose request failed (the daemon's own rule) and stop asking it when
    others name it; False keeps the dead in tables, for comparison."""
    exercise_codec: bool = False
    """Send every request and answer through the wire codec (slower; shows
    that what the simulator exchanges is what the network would carry)."""
    table_connections: bool = True
    """Every node holds a connection to each member of its table, as the
    daemon does: it admits only peers that answered, and QUIC keep-alives
    keep those connections open (up to the host's ``max_connections``,
    512, above a 10,000-node table's ~200 members).  A member that leaves
    is then noticed ``idle_timeout`` later and checked; a table built
    after that no longer holds it.  False: only peers that exchanged
    answers during the run are connected."""
    idle_timeout: float = 30.0
    """Seconds after a peer left abruptly until its connections die of
    silence (the transport's ``idle_timeout``)."""
    dials: bool = False
    """A request to a peer the asker holds no connection to costs one more
    round trip (the QUIC handshake), and with ``adaptive_timeouts`` waits
    the daemon's dial timeout (its cold estimate, at least 1 s) instead of
    the connected one.  Off, every request costs one round trip and every
    peer gets the connected timeout."""
    publish_paths: int | None = None
    """Disjoint paths of the lookup publishing a GET_VALUE or GET_PROVIDERS
    key; None: every path of ``lookup`` (``disjoint_paths``), also when
    they are adaptive (a PUT's lookup has no evidence to widen on)."""
    adaptive_timeouts: bool = False
    """Each asker derives its request timeouts from the round trips it
    measured (``overlay.kad.rtt``, as the daemon does for peers it is
    connected to), at most ``lookup.peer_timeout``; otherwise every request
    waits ``lookup.peer_timeout``."""

    def __post_init__(self) -> None:
        if self.nodes < 2 or self.lookups < 1:
            raise ValueError("need at least 2 nodes and 1 lookup")
        if not 0.0 <= self.churn < 1.0 or not 0.0 <= self.adversaries < 1.0:
            raise ValueError("churn and adversaries must be fractions within [0, 1)")
        if self.adversary_mode not in ("eclipse", "random"):
            raise ValueError("adversary_mode must be 'eclipse' or 'random'")
        if self.bootstrap not in ("sampled", "join"):
            raise ValueError("bootstrap must be 'sampled' or 'join'")
        if self.bootstrap == "join" and self.nodes > MAX_JOIN_NODES:
            raise ValueError(f"join bootstrap is for at most {MAX_JOIN_NODES} nodes")
        if self.lookup_interval <= 0:
            raise ValueError("lookup_interval must be positive")
        if self.publish_paths is not None and self.publish_paths < 1:
            raise ValueError("publish_paths must be at least 1")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    success: bool
    rounds: int
    messages: int
    latency: float
    failed: int
    retries: int = 0
    """Requests sent again after a timeout (included in ``messages``)."""
    paths: int = 1
    """Disjoint paths the lookup ran (more than 1 with evidence of lies
    under ``LookupConfig.adaptive_paths``)."""
