"""What lost messages cost a lookup, and what retries buy back.

    .venv/bin/python bench/lookup_loss.py                    # 10,000 nodes, 1,000 lookups
    .venv/bin/python bench/lookup_loss.py --nodes 2000 --lookups 200 --retries 0 1

Every figure comes from the virtual-time simulator (``overlay sim``): FIND_NODE
of a random live node, a lookup succeeding when the target itself answered.
A lossy network drops each request and each answer with probability
``--loss``, so a round trip is lost with probability ``1 - (1 - loss)^2``.
Each row is one ``LookupConfig.retries`` setting; messages are requests per
lookup, retries included, and the ratio column compares mean messages
against ``retries=0`` at the same loss in the same run.  Timeouts are a
fixed second, or with ``--adaptive-timeouts`` derived from each asker's
measured round trips as the daemon derives them.

Output: one table on stdout, then (with ``--json``) one JSON object holding
every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from overlay.kad.lookup import LookupConfig
from overlay.sim.engine import SimConfig, Simulator
from overlay.sim.network import NetworkModel
from overlay.sim.report import summarize

COLUMNS = (
    "success_rate",
    "median_messages",
    "mean_messages",
    "p99_messages",
    "mean_retries",
    "median_latency_ms",
    "p99_latency_ms",
)


def measure(
    nodes: int, lookups: int, seed: int, loss: float, retries: int, adaptive: bool
) -> dict[str, Any]:
    config = SimConfig(
        nodes=nodes,
        lookups=lookups,
        seed=seed,
        lookup=LookupConfig(peer_timeout=1.0, retries=retries),
        network=NetworkModel(loss=loss),
        adaptive_timeouts=adaptive,
    )
    started = time.perf_counter()
    simulator = Simulator(config)
    figures = summarize(config, simulator.run(), simulator.net.materialised)
    figures["wall_s"] = round(time.perf_counter() - started, 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--retries", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--adaptive-timeouts", action="store_true",
                        help="timeouts from measured round trips (at most 1 s) instead of a fixed 1 s")
    parser.add_argument("--json", action="store_true", help="also print every run as one JSON object")
    args = parser.parse_args(argv)

    runs: list[dict[str, Any]] = []
    timeouts = "adaptive timeouts" if args.adaptive_timeouts else "fixed 1 s timeouts"
    print(f"{args.nodes} nodes, {args.lookups} lookups, seed {args.seed}, {timeouts}")
    print(f"{'loss':>6}{'retries':>8}" + "".join(f"{c:>18}" for c in COLUMNS) + f"{'msgs vs 0':>11}{'wall_s':>8}")
    for loss in args.loss:
        baseline: float | None = None
        for retries in args.retries:
            row = measure(args.nodes, args.lookups, args.seed, loss, retries, args.adaptive_timeouts)
            runs.append(row)
            if retries == 0:
                baseline = row["mean_messages"]
            ratio = f"{row['mean_messages'] / baseline:>10.3f}x" if baseline else f"{'':>11}"
            cells = "".join(f"{row[c]:>18.3f}" for c in COLUMNS)
            print(f"{loss:>6.2f}{retries:>8}{cells}{ratio}{row['wall_s']:>8}")
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"runs": runs}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
