"""The simulator's nodes run the daemon's ``KadBehaviour``: the dead leave
simulated tables as they leave the daemon's, and loss or overload evicts
nobody."""

from __future__ import annotations

import json

import pytest

from overlay.kad.behaviour import KadBehaviour
from overlay.sim import NetworkModel, SimConfig, Simulator, main

SEED = 20240611


def churned(evict: bool) -> Simulator:
    simulator = Simulator(SimConfig(nodes=300, lookups=300, seed=SEED, churn=0.3, evict_on_failure=evict))
    simulator.run()
    return simulator


def stale_after_departure(simulator: Simulator) -> tuple[int, int]:
    """(entries for a departed peer still in the table of a node that was
    connected to it when it left, such pairs in all)."""
    end = simulator.duration + simulator.config.idle_timeout + 10
    stale = pairs = 0
    for gone, survivors in simulator.departures.items():
        peer = simulator.net.peer_ids[gone]
        for node in survivors:
            pairs += 1
            stale += peer in simulator.net.server(node, end).table
    return stale, pairs


def dead_entries(simulator: Simulator) -> int:
    end = simulator.duration + simulator.config.idle_timeout + 10
    net = simulator.net
    return sum(
        not net.alive(net.index_of[contact.peer_id], end)
        for node, behaviour in net.behaviours().items()
        if net.alive(node, end)
        for contact in behaviour.table.contacts()
    )


def test_every_simulated_node_runs_the_daemons_behaviour() -> None:
    simulator = Simulator(SimConfig(nodes=200, lookups=20, seed=SEED))
    simulator.run()
    behaviours = simulator.net.behaviours()
    assert behaviours and all(type(b) is KadBehaviour for b in behaviours.values())
    node, behaviour = next(iter(behaviours.items()))
    assert behaviour.table is simulator.net.server(node, 0.0).table
    assert simulator.checks_sent > 0  # askers were verified before admission


def test_peers_that_left_are_dropped_from_the_tables_of_those_connected_to_them() -> None:
    evicting, kept = churned(True), churned(False)
    stale, pairs = stale_after_departure(evicting)
    stale_kept, pairs_kept = stale_after_departure(kept)
    assert pairs > 100 and pairs_kept > 100, f"seed {SEED}"
    # Without the behaviour's checks most of them stay; with them, only a
    # few that came back from a replacement cache after the check.
    assert stale_kept > pairs_kept / 4, f"seed {SEED}: {stale_kept}/{pairs_kept}"
    assert stale <= pairs / 50, f"seed {SEED}: {stale}/{pairs} stale"
    assert dead_entries(evicting) < 0.95 * dead_entries(kept), f"seed {SEED}"
    assert evicting.evictions > 0 and kept.evictions == 0


def test_lost_messages_are_probed_and_evict_nobody() -> None:
    simulator = Simulator(SimConfig(nodes=300, lookups=100, seed=SEED, network=NetworkModel(loss=0.1)))
    outcomes = simulator.run()
    assert simulator.evictions == 0, f"seed {SEED}"
    assert sum(b.checks_failed for b in simulator.net.behaviours().values()) == 0
    assert sum(o.success for o in outcomes) / len(outcomes) >= 0.9, f"seed {SEED}"


def test_a_table_built_after_departures_were_noticed_no_longer_holds_the_departed() -> None:
    def departed_members(connections: bool) -> int:
        config = SimConfig(nodes=500, lookups=10, seed=SEED, churn=0.3, table_connections=connections)
        net = Simulator(config).net
        later = max(t for t in net.leave_time if t != float("inf")) + 40.0
        table = net.server(7, later).table
        return sum(net.leave_time[net.index_of[c.peer_id]] < later for c in table.contacts())

    # Its owner held connections to them and checked them when they died.
    assert departed_members(True) == 0
    assert departed_members(False) > 0, f"seed {SEED}"


def test_dials_cost_a_handshake_and_are_sampled_as_cold_round_trips() -> None:
    def median_latency(dials: bool) -> tuple[float, Simulator]:
        config = SimConfig(nodes=500, lookups=20, seed=SEED, adaptive_timeouts=True, dials=dials)
        simulator = Simulator(config)
        outcomes = simulator.run()
        assert all(o.success for o in outcomes), f"seed {SEED}"
        latencies = sorted(o.latency for o in outcomes)
        return latencies[len(latencies) // 2], simulator

    plain, _ = median_latency(False)
    dialing, simulator = median_latency(True)
    # Most peers a lookup asks are only heard of: one more round trip each.
    assert 1.3 * plain < dialing < 2.5 * plain, f"seed {SEED}: {plain} vs {dialing}"
    assert any(b.rtt.cold.samples for b in simulator.net.behaviours().values())


def test_the_command_runs_with_dials_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "300", "--lookups", "5", "--dials", "--adaptive-timeouts", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["dials"] is True and figures["adaptive_timeouts"] is True
    with pytest.raises(ValueError):
        SimConfig(idle_timeout=0.0)
