"""How Kademlia lookups grow with N, and what liars and churn cost.

    .venv/bin/python bench/bench_sim.py            # 1,000 and 10,000 nodes
    .venv/bin/python bench/bench_sim.py --with-100k
    nice -n 10 .venv/bin/python bench/bench_sim.py --only-churn   # issue #10's figures
    nice -n 10 .venv/bin/python bench/bench_sim.py --only-adaptive --lookups 1000   # #10, liars

Every figure comes from the virtual-time simulator (``overlay sim``): rounds
are hop depths, messages are requests per lookup, latency is simulated
milliseconds with a lognormal per-pair RTT of median 100 ms.  Growth is
printed as a ratio against the 1,000-node baseline of the same run; wall
time is the host's and only says how long the simulation took.

Output: one table per section on stdout, then (with ``--json``) one JSON
object holding every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from overlay.kad.lookup import LookupConfig, LookupKind
from overlay.sim.engine import SimConfig, Simulator
from overlay.sim.report import summarize

COLUMNS = (
    "success_rate",
    "median_rounds",
    "p99_rounds",
    "median_messages",
    "median_latency_ms",
    "p99_latency_ms",
)


def measure(label: str, config: SimConfig) -> dict[str, Any]:
    started = time.perf_counter()
    simulator = Simulator(config)
    outcomes = simulator.run()
    figures = summarize(config, outcomes, simulator.net.materialised)
    figures["wall_s"] = round(time.perf_counter() - started, 2)
    figures["label"] = label
    figures["evictions"] = simulator.evictions
    figures["checks_sent"] = simulator.checks_sent
    return figures


CHURN_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("fixed 1 s", {}),
    ("adaptive", {"adaptive_timeouts": True}),
    ("adaptive + dials", {"adaptive_timeouts": True, "dials": True}),
    ("adaptive, no eviction", {"adaptive_timeouts": True, "evict_on_failure": False}),
)


def churn_against_baseline(
    n: int, config: Any, variants: tuple[tuple[str, dict[str, Any]], ...] = CHURN_VARIANTS
) -> list[dict[str, Any]]:
    """Issue #10: every node runs the daemon's ``KadBehaviour``; lookups at
    30% churn against the same configuration without churn, with fixed
    1 s timeouts, with timeouts from measured round trips (the daemon's
    way), with those and dials (a peer not yet connected costs a handshake
    and the 1 s dial timeout floor: closest to the daemon), and with
    eviction off (the simulator's old copy, for contrast)."""
    rows: list[dict[str, Any]] = []
    print(f"\nChurn against the churn-free baseline at N={n} (goal: median <= 1.5x, p99 <= 3x)")
    print(f"{'timeouts':<24}{'churn':>6}{'success':>9}{'median ms':>11}{'p99 ms':>10}"
          f"{'x median':>10}{'x p99':>8}{'msgs':>6}{'failed':>7}{'evictions':>10}{'checks':>8}{'wall_s':>8}")
    for name, extra in variants:
        base = measure(f"{name}, no churn", config(n, **extra))
        churned = measure(f"{name}, churn 30%", config(n, churn=0.3, **extra))
        for row, churn in ((base, 0), (churned, 30)):
            row["x_median"] = round(row["median_latency_ms"] / base["median_latency_ms"], 2)
            row["x_p99"] = round(row["p99_latency_ms"] / base["p99_latency_ms"], 2)
            print(f"{name:<24}{churn:>5}%{row['success_rate']:>9.3f}{row['median_latency_ms']:>11.0f}"
                  f"{row['p99_latency_ms']:>10.0f}{row['x_median']:>10.2f}{row['x_p99']:>8.2f}"
                  f"{row['median_messages']:>6.0f}{row['median_failed_requests']:>7.1f}"
                  f"{row['evictions']:>10}{row['checks_sent']:>8}{row['wall_s']:>8}")
            rows.append(row)
    return rows


def adaptive_against_fixed(n: int, config: Any, max_paths: int = 4) -> list[dict[str, Any]]:
    """Issue #10: ``LookupConfig.adaptive_paths`` (one path, more only on
    evidence of lies, up to ``max_paths``) against one path and against
    ``max_paths`` fixed disjoint paths, with nobody lying, 20% forgers (GET)
    and 40% eclipse liars (GET, and find-peer: FIND_NODE ending when the
    target answers).  Liars answer with the liars closest to the key and
    forge every record.  Every GET row publishes over ``max_paths`` paths
    (``SimConfig.publish_paths``), so the rows differ only in the GET;
    "published over 1 path" repeats today's 1-path publish for contrast.
    Goals: >= 99.9% with 20% forgers, >= 99% with 40% eclipse liars, and
    without liars at most 1.5x the messages of one path."""
    retries = SimConfig().lookup.retries  # the daemon's
    single = LookupConfig(peer_timeout=1.0, retries=retries)
    adaptive = LookupConfig(peer_timeout=1.0, retries=retries, disjoint_paths=max_paths, adaptive_paths=True)
    fixed = LookupConfig(peer_timeout=1.0, retries=retries, disjoint_paths=max_paths)
    get = LookupKind.GET_VALUE
    scenarios: tuple[tuple[str, dict[str, Any]], ...] = (
        ("GET, no liars", {"kind": get, "publish_paths": max_paths}),
        ("GET, 20% forgers", {"kind": get, "adversaries": 0.2, "publish_paths": max_paths}),
        ("GET, 40% eclipse", {"kind": get, "adversaries": 0.4, "publish_paths": max_paths}),
        ("find-peer, no liars", {}),
        ("find-peer, 40% eclipse", {"adversaries": 0.4}),
    )
    variants = (("1 path", single), ("adaptive", adaptive), (f"{max_paths} paths", fixed))
    rows: list[dict[str, Any]] = []
    print(f"\nAdaptive disjoint paths at N={n} (goals: 20% forgers >= 99.9%, 40% eclipse >= 99%,"
          " no liars <= 1.5x the messages of 1 path)")
    print(f"{'scenario':<30}{'paths':<10}{'success':>9}{'failures':>9}{'mean msgs':>10}{'x 1 path':>9}"
          f"{'median msgs':>12}{'mean paths':>11}{'median ms':>10}{'p99 ms':>9}{'wall_s':>8}")

    def line(label: str, name: str, row: dict[str, Any], base: dict[str, Any]) -> None:
        row["x_messages"] = round(row["mean_messages"] / base["mean_messages"], 2)
        failures = round((1 - row["success_rate"]) * row["lookups"])
        print(f"{label:<30}{name:<10}{row['success_rate']:>9.4f}{failures:>9}{row['mean_messages']:>10.2f}"
              f"{row['x_messages']:>9.2f}{row['median_messages']:>12.0f}{row['mean_paths']:>11.2f}"
              f"{row['median_latency_ms']:>10.0f}{row['p99_latency_ms']:>9.0f}{row['wall_s']:>8}", flush=True)

    for label, extra in scenarios:
        find_peer = "kind" not in extra
        base: dict[str, Any] | None = None
        for name, lookup in variants:
            if find_peer:
                lookup = LookupConfig(**{**_fields(lookup), "stop_when_found": True})
            row = measure(f"{label}, {name}", config(n, lookup=lookup, **extra))
            base = base or row
            line(label, name, row, base)
            rows.append(row)
        if "publish_paths" in extra and extra.get("adversaries"):
            published = {**extra, "publish_paths": 1}
            row = measure(f"{label}, published over 1 path, 1 path", config(n, lookup=single, **published))
            line(label + " (publish 1)", "1 path", row, base or row)
            rows.append(row)
    return rows


def _fields(config: LookupConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def show(title: str, rows: list[dict[str, Any]], baseline: dict[str, Any] | None = None) -> None:
    print(f"\n{title}")
    header = f"{'run':<34}" + "".join(f"{c:>19}" for c in COLUMNS) + f"{'wall_s':>9}"
    print(header)
    for row in rows:
        cells = "".join(f"{row[c]:>19.3f}" if isinstance(row[c], float) else f"{row[c]:>19}" for c in COLUMNS)
        print(f"{row['label']:<34}{cells}{row['wall_s']:>9}")
    if baseline is not None:
        print(f"{'growth vs ' + baseline['label']:<34}")
        for row in rows[1:]:
            ratios = "".join(
                f"{(row[c] / baseline[c] if baseline[c] else float('nan')):>18.2f}x" for c in COLUMNS
            )
            print(f"{'  ' + row['label']:<34}{ratios}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--with-100k", action="store_true", help="also run 100,000 nodes")
    parser.add_argument("--only-churn", action="store_true",
                        help="only the churn-against-baseline section (issue #10)")
    parser.add_argument("--only-adaptive", action="store_true",
                        help="only the adaptive-disjoint-paths section (issue #10; use --lookups 1000)")
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes for --only-adaptive")
    parser.add_argument("--json", action="store_true", help="also print every run as one JSON object")
    args = parser.parse_args(argv)

    def config(nodes: int, **extra: Any) -> SimConfig:
        return SimConfig(nodes=nodes, lookups=args.lookups, seed=args.seed, **extra)

    if args.only_adaptive:
        rows = adaptive_against_fixed(args.nodes, config)
        if args.json:
            print(json.dumps({"adaptive_paths": rows}, sort_keys=True))
        return 0

    if args.only_churn:
        rows = churn_against_baseline(10_000, config)
        if args.json:
            print(json.dumps({"churn_baseline": rows}, sort_keys=True))
        return 0

    sizes = [1_000, 10_000] + ([100_000] if args.with_100k else [])
    scaling = [measure(f"N={n}", config(n)) for n in sizes]

    show("Scaling, no churn, no adversaries (FIND_NODE of a random live node)", scaling, scaling[0])
    find_peer = LookupConfig(peer_timeout=1.0, stop_when_found=True)
    quick = [measure(f"N={n}, find-peer", config(n, lookup=find_peer)) for n in sizes]
    show("Scaling, FIND_NODE ending when the target answers (find-peer)", quick, quick[0])
    quorum3 = LookupConfig(peer_timeout=1.0, quorum=3)
    gets = [measure(f"N={n}, GET q=3", config(n, kind=LookupKind.GET_VALUE, lookup=quorum3)) for n in sizes]
    show("Scaling, GET_VALUE of a freshly published /v/ record, quorum 3", gets, gets[0])

    boot = [measure(f"N=2000, {mode} tables", config(2_000, bootstrap=mode)) for mode in ("sampled", "join")]
    show("Bootstrap model check: sampled tables against tables grown by simulated joins", boot, boot[0])

    n = 10_000
    adversarial = []
    for fraction in (0.2, 0.4):
        for paths in (1, 4):
            lookup = LookupConfig(peer_timeout=1.0, disjoint_paths=paths)
            label = f"{int(fraction * 100)}% eclipse liars, d={paths}"
            adversarial.append(measure(label, config(n, adversaries=fraction, lookup=lookup)))
    adversarial.append(measure("20% random liars, d=1", config(n, adversaries=0.2, adversary_mode="random")))
    for quorum, paths in ((3, 1), (3, 4)):
        lookup = LookupConfig(peer_timeout=1.0, quorum=quorum, disjoint_paths=paths)
        adversarial.append(
            measure(
                f"GET q={quorum}, 20% forgers, d={paths}",
                config(n, kind=LookupKind.GET_VALUE, adversaries=0.2, lookup=lookup),
            )
        )
    for paths in (1, 4):
        lookup = LookupConfig(peer_timeout=1.0, disjoint_paths=paths)
        adversarial.append(
            measure(
                f"providers, 20% liars, d={paths}",
                config(n, kind=LookupKind.GET_PROVIDERS, adversaries=0.2, lookup=lookup),
            )
        )
    show(f"Adversaries at N={n} (GET and providers include publishing through the same liars)", adversarial)

    churn = [measure(f"churn {int(f * 100)}%", config(n, churn=f)) for f in (0.1, 0.3, 0.5)]
    churn.append(measure("churn 30%, providers", config(n, churn=0.3, kind=LookupKind.GET_PROVIDERS)))
    churn.append(
        measure("churn 30%, GET q=3", config(n, churn=0.3, kind=LookupKind.GET_VALUE, lookup=quorum3))
    )
    show(f"Churn at N={n} (leavers stay in tables until checked; joiners announce themselves)", churn)
    churn_baseline = churn_against_baseline(n, config)

    if args.json:
        runs = {
            "scaling": scaling,
            "find_peer": quick,
            "get_value": gets,
            "bootstrap": boot,
            "adversarial": adversarial,
            "churn": churn,
            "churn_baseline": churn_baseline,
        }
        print(json.dumps(runs, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
