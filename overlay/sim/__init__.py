"""A virtual-time simulator running thousands of pure Kademlia cores.

No asyncio and no sockets: time moves through an event heap and every
random choice comes from the run's seed.  ``overlay sim`` is ``command.main``.
"""

from overlay.sim.bootstrap import MAX_JOIN_NODES, bootstrap_by_joins
from overlay.sim.command import main
from overlay.sim.engine import LookupOutcome, SimConfig, Simulator
from overlay.sim.network import NetworkModel, SimNetwork, xor_closest_positions
from overlay.sim.report import percentile, summarize

__all__ = [
    "MAX_JOIN_NODES",
    "bootstrap_by_joins",
    "LookupOutcome",
    "NetworkModel",
    "SimConfig",
    "SimNetwork",
    "Simulator",
    "main",
    "percentile",
    "summarize",
    "xor_closest_positions",
]
