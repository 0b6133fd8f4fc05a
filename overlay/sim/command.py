"""``overlay sim``: run the simulator and print its figures.

``main`` parses its own arguments so the CLI can hand it ``argv`` as is.
"""

from __future__ import annotations

import argparse
import json
import sys

from overlay.kad.lookup import ADAPTIVE_MAX_PATHS, LOOKUP_RETRIES, LookupConfig, LookupKind
from overlay.kad.routing import RoutingConfig
from overlay.sim.engine import SimConfig, Simulator
from overlay.sim.network import NetworkModel
from overlay.sim.report import summarize

__all__ = ["main", "build_parser", "config_from_args"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction within [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def build_parser(prog: str = "overlay sim") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Simulate Kademlia lookups over N pure nodes in virtual time.",
    )
    add = parser.add_argument
    add("--nodes", type=_positive, default=10_000, help="nodes at the start (default 10000)")
    add("--lookups", type=_positive, default=100, help="lookups to run (default 100)")
    add("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    add("--churn", type=_fraction, default=0.0,
        help="fraction of nodes leaving during the run (as many join)")
    add("--adversaries", type=_fraction, default=0.0, help="fraction of lying nodes")
    add("--adversary-mode", choices=("eclipse", "random"), default="eclipse",
        help="eclipse: answer with the colluding adversaries closest to the key; "
        "random: answer with random IDs")
    add("--disjoint-paths", type=_positive, default=ADAPTIVE_MAX_PATHS,
        help=f"S/Kademlia disjoint paths (default {ADAPTIVE_MAX_PATHS}); the lookup starts with one "
             "and opens another on evidence of lies, up to these (see --fixed-paths)")
    add("--fixed-paths", action="store_true",
        help="open every disjoint path from the start (not only on evidence of lies)")
    add("--publish-paths", type=_positive, default=None,
        help="disjoint paths of the lookup publishing a GET/providers key (default: --disjoint-paths)")
    add("--quorum", type=int, default=None,
        help="run GET_VALUE lookups that stop after Q valid records")
    add("--kind", choices=("find-node", "get-value", "get-providers"), default=None,
        help="lookup kind (default find-node, or get-value when --quorum is given)")
    add("--alpha", type=_positive, default=3, help="requests in flight per path (default 3)")
    add("--k", type=_positive, default=20, help="bucket size and lookup width (default 20)")
    add("--loss", type=_fraction, default=0.0, help="probability a message is lost")
    add("--peer-timeout", type=float, default=1.0,
        help="per-peer timeout in seconds (default 1)")
    add("--retries", type=int, default=LOOKUP_RETRIES,
        help=f"times a peer whose request timed out is asked again (default {LOOKUP_RETRIES}, the daemon's)")
    add("--adaptive-timeouts", action="store_true",
        help="timeouts from measured round trips (as the daemon), at most --peer-timeout")
    add("--dials", action="store_true",
        help="a peer not yet connected costs a handshake and the dial timeout (as in the daemon)")
    add("--stop-when-found", action="store_true",
        help="FIND_NODE ends when the target answers (find-peer), not at the k closest")
    add("--bootstrap", choices=("sampled", "join"), default="sampled",
        help="sampled: tables drawn from the global view (any N); "
        "join: nodes join through real lookups (N <= 20000, slow)")
    add("--wire", action="store_true", help="pass every message through the wire codec")
    add("--json", action="store_true", help="print one JSON object")
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    kind_name = args.kind or ("get-value" if args.quorum is not None else "find-node")
    quorum = args.quorum if args.quorum is not None else 1
    if quorum < 0:
        raise ValueError("--quorum must not be negative")
    return SimConfig(
        nodes=args.nodes,
        lookups=args.lookups,
        seed=args.seed,
        churn=args.churn,
        adversaries=args.adversaries,
        adversary_mode=args.adversary_mode,
        kind=LookupKind(kind_name),
        lookup=LookupConfig(
            alpha=args.alpha,
            k=args.k,
            peer_timeout=args.peer_timeout,
            disjoint_paths=args.disjoint_paths,
            adaptive_paths=not args.fixed_paths and args.disjoint_paths > 1,
            quorum=quorum,
            stop_when_found=args.stop_when_found,
            retries=args.retries,
        ),
        routing=RoutingConfig(k=args.k),
        network=NetworkModel(loss=args.loss),
        exercise_codec=args.wire,
        adaptive_timeouts=args.adaptive_timeouts,
        dials=args.dials,
        bootstrap=args.bootstrap,
        publish_paths=args.publish_paths,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    simulator = Simulator(config)
    figures = summarize(config, simulator.run(), simulator.net.materialised)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        for name, value in figures.items():
            print(f"{name:>24}: {value}")
    sys.stdout.flush()
    return 0
