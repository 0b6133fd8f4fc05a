"""Name resolution in the simulator: fast, and right with 20% liars."""

from __future__ import annotations

from overlay.sim.naming import NameSimConfig, simulate_resolutions
from overlay.sim.report import percentile


def test_resolution_is_correct_and_early_without_adversaries() -> None:
    seed = 11
    outcomes = simulate_resolutions(NameSimConfig(nodes=600, resolutions=30, seed=seed))
    assert all(o.correct and o.final_correct and o.early for o in outcomes), f"seed {seed}"
    # The early answer needs the first few closest holders, not the whole lookup.
    assert all(o.latency < o.lookup_time for o in outcomes), f"seed {seed}"
    assert percentile([o.latency for o in outcomes], 0.5) < 1.0, f"seed {seed}"


def test_twenty_percent_forging_or_squatting_nodes_do_not_win() -> None:
    seed = 5
    outcomes = simulate_resolutions(
        NameSimConfig(nodes=600, resolutions=30, seed=seed, adversaries=0.2))
    assert all(o.correct for o in outcomes), f"seed {seed}"
    assert all(o.final_correct for o in outcomes), f"seed {seed}"
