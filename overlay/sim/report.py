"""Summary figures of a simulation run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from overlay.sim.engine import LookupOutcome, SimConfig

__all__ = ["percentile", "summarize"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2.0


def summarize(config: SimConfig, outcomes: Sequence[LookupOutcome], tables_built: int) -> dict[str, Any]:
    """One JSON-ready object: the parameters (with the seed) and the figures."""
    rounds = [float(o.rounds) for o in outcomes]
    messages = [float(o.messages) for o in outcomes]
    latency = [o.latency * 1000.0 for o in outcomes]
    return {
        "seed": config.seed,
        "nodes": config.nodes,
        "lookups": len(outcomes),
        "kind": config.kind.value,
        "churn": config.churn,
        "adversaries": config.adversaries,
        "adversary_mode": config.adversary_mode,
        "disjoint_paths": config.lookup.disjoint_paths,
        "adaptive_paths": config.lookup.adaptive_paths,
        "quorum": config.lookup.quorum,
        "alpha": config.lookup.alpha,
        "k": config.lookup.k,
        "retries": config.lookup.retries,
        "loss": config.network.loss,
        "stop_when_found": config.lookup.stop_when_found,
        "wire_codec": config.exercise_codec,
        "bootstrap": config.bootstrap,
        "peer_timeout_ms": config.lookup.peer_timeout * 1000.0,
        "adaptive_timeouts": config.adaptive_timeouts,
        "dials": config.dials,
        "median_rtt_ms": config.network.median_rtt * 1000.0,
        "success_rate": sum(1 for o in outcomes if o.success) / len(outcomes),
        "median_rounds": _median(rounds),
        "p99_rounds": percentile(rounds, 0.99),
        "mean_rounds": sum(rounds) / len(rounds),
        "median_messages": _median(messages),
        "p99_messages": percentile(messages, 0.99),
        "mean_messages": round(sum(messages) / len(messages), 3),
        "mean_retries": round(sum(o.retries for o in outcomes) / len(outcomes), 3),
        "mean_paths": round(sum(o.paths for o in outcomes) / len(outcomes), 3),
        "median_latency_ms": round(_median(latency), 3),
        "p99_latency_ms": round(percentile(latency, 0.99), 3),
        "median_failed_requests": _median([float(o.failed) for o in outcomes]),
        "tables_built": tables_built,
    }
