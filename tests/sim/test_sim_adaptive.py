"""Adaptive disjoint paths in the simulator (issue #10): what one path
costs without liars, what several cost only where liars show."""

import io
import json
from contextlib import redirect_stdout

import pytest

from overlay.kad.lookup import LOOKUP_RETRIES, LookupConfig, LookupKind
from overlay.sim import SimConfig, Simulator, main

SEED = 20240601
SINGLE = LookupConfig(peer_timeout=1.0, retries=LOOKUP_RETRIES)
ADAPTIVE = LookupConfig(peer_timeout=1.0, retries=LOOKUP_RETRIES, disjoint_paths=4, adaptive_paths=True)


def run(lookup: LookupConfig, **overrides: object) -> list:  # type: ignore[type-arg]
    fields = {"nodes": 1000, "lookups": 60, "seed": SEED, "kind": LookupKind.GET_VALUE,
              "publish_paths": 4, "lookup": lookup, **overrides}
    return Simulator(SimConfig(**fields)).run()  # type: ignore[arg-type]


def test_without_liars_adaptive_gets_cost_what_one_path_costs() -> None:
    single, adaptive = run(SINGLE), run(ADAPTIVE)
    assert all(o.success for o in adaptive)
    assert [o.messages for o in adaptive] == [o.messages for o in single]
    assert all(o.paths == 1 for o in adaptive)


def test_eclipsing_forgers_make_adaptive_gets_widen_and_succeed() -> None:
    single, adaptive = run(SINGLE, adversaries=0.4, lookups=150), run(ADAPTIVE, adversaries=0.4, lookups=150)
    assert sum(o.success for o in single) < len(single), f"seed {SEED}: the attack had no effect"
    assert all(o.success for o in adaptive), f"seed {SEED}"
    assert any(o.paths > 1 for o in adaptive)
    # Cheaper than opening every path up front.
    fixed = run(LookupConfig(peer_timeout=1.0, retries=LOOKUP_RETRIES, disjoint_paths=4), adversaries=0.4,
                lookups=150)
    assert sum(o.messages for o in adaptive) < sum(o.messages for o in fixed)


def test_find_peer_widens_through_an_eclipse() -> None:
    find_peer = LookupConfig(peer_timeout=1.0, retries=LOOKUP_RETRIES, stop_when_found=True,
                             disjoint_paths=4, adaptive_paths=True)
    single = run(LookupConfig(peer_timeout=1.0, retries=LOOKUP_RETRIES, stop_when_found=True),
                 kind=LookupKind.FIND_NODE, adversaries=0.4, lookups=100)
    adaptive = run(find_peer, kind=LookupKind.FIND_NODE, adversaries=0.4, lookups=100)
    assert sum(o.success for o in single) < len(single), f"seed {SEED}: the attack had no effect"
    assert all(o.success for o in adaptive), f"seed {SEED}"


def command(*args: str) -> dict:  # type: ignore[type-arg]
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--nodes", "300", "--lookups", "5", "--quorum", "1", "--json", *args])
    assert code == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def test_command_paths_are_adaptive_unless_fixed() -> None:
    adaptive = command("--publish-paths", "2")
    assert adaptive["adaptive_paths"] is True and adaptive["disjoint_paths"] == 4
    assert adaptive["mean_paths"] == 1.0  # nobody lies
    fixed = command("--fixed-paths", "--disjoint-paths", "2")
    assert fixed["adaptive_paths"] is False and fixed["mean_paths"] == 2.0
    single = command("--disjoint-paths", "1")  # nothing to widen to: plain Kademlia
    assert single["adaptive_paths"] is False and single["mean_paths"] == 1.0


def test_publish_paths_is_validated() -> None:
    with pytest.raises(ValueError):
        SimConfig(publish_paths=0)
