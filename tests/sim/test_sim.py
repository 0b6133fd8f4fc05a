import io
import json
import random
import statistics
from contextlib import redirect_stdout

import pytest

from overlay.kad.lookup import LookupConfig, LookupKind
from overlay.kad.routing import RoutingConfig
from overlay.sim import NetworkModel, SimConfig, Simulator, main, percentile, xor_closest_positions
from overlay.sim.network import SimNetwork

SEED = 20240601


def run(**overrides: object) -> tuple[SimConfig, list]:  # type: ignore[type-arg]
    config = SimConfig(**{"nodes": 2000, "lookups": 60, "seed": SEED, **overrides})  # type: ignore[arg-type]
    return config, Simulator(config).run()


def test_two_thousand_nodes_find_every_target_in_few_rounds() -> None:
    config, outcomes = run()
    assert len(outcomes) == config.lookups
    success = sum(o.success for o in outcomes) / len(outcomes)
    rounds = statistics.median(o.rounds for o in outcomes)
    assert success == 1.0, f"seed {SEED}: success {success}"
    assert rounds <= 4, f"seed {SEED}: median rounds {rounds}"
    assert all(o.failed == 0 for o in outcomes), f"seed {SEED}: requests failed without churn"
    assert statistics.median(o.messages for o in outcomes) <= 40


def test_runs_are_reproducible_from_the_seed() -> None:
    _, first = run(lookups=15)
    _, again = run(lookups=15)
    _, other = run(lookups=15, seed=SEED + 1)
    assert first == again
    assert first != other


def test_pair_latency_is_symmetric_deterministic_and_lognormal_around_100ms() -> None:
    net = SimNetwork(500, 9, NetworkModel(), RoutingConfig(), None, None)  # type: ignore[arg-type]
    rng = random.Random(1)
    pairs = [(rng.randrange(500), rng.randrange(500)) for _ in range(3000)]
    samples = [net.rtt(a, b) for a, b in pairs]
    assert all(net.rtt(b, a) == s for (a, b), s in zip(pairs, samples))
    assert all(0.005 <= s <= 2.0 for s in samples)
    assert 0.09 <= statistics.median(samples) <= 0.11
    assert percentile(samples, 0.9) > 0.15  # a real tail, not a constant


def test_xor_closest_positions_matches_brute_force() -> None:
    rng = random.Random(2)
    keys = sorted(rng.getrandbits(256) for _ in range(3000))
    for _ in range(30):
        target = rng.getrandbits(256)
        n = rng.randrange(1, 50)
        expected = sorted(range(len(keys)), key=lambda i: keys[i] ^ target)[:n]
        assert xor_closest_positions(keys, target, n) == expected
    assert len(xor_closest_positions(keys[:5], 0, 10)) == 5


def test_lazily_built_tables_fill_buckets_like_a_converged_node() -> None:
    net = SimNetwork(3000, 4, NetworkModel(), RoutingConfig(k=20), None, None)  # type: ignore[arg-type]
    node = 17
    table = net._build_table(node, 0.0)
    own = net.keys[node]
    population: dict[int, int] = {}
    for i, key in enumerate(net.keys):
        if i != node:
            index = (key ^ own).bit_length() - 1
            population[index] = population.get(index, 0) + 1
    sizes = {s.index: s.size for s in table.occupancy()}
    assert sizes == {index: min(20, count) for index, count in population.items()}


def test_disjoint_paths_resist_colluding_liars() -> None:
    _, single = run(adversaries=0.5, lookups=40)
    _, disjoint = run(adversaries=0.5, lookups=40, lookup=LookupConfig(peer_timeout=1.0, disjoint_paths=4))
    single_rate = sum(o.success for o in single) / len(single)
    disjoint_rate = sum(o.success for o in disjoint) / len(disjoint)
    assert disjoint_rate == 1.0, f"seed {SEED}: disjoint success {disjoint_rate}"
    assert single_rate < 1.0, f"seed {SEED}: the eclipse attack had no effect"


def test_churn_costs_timeouts_but_lookups_still_succeed() -> None:
    _, outcomes = run(churn=0.3, lookups=40)
    assert sum(o.failed for o in outcomes) > 0, f"seed {SEED}: churn left no dead entries"
    assert sum(o.success for o in outcomes) / len(outcomes) >= 0.9, f"seed {SEED}"


def test_get_value_with_quorum_ignores_forged_records() -> None:
    config, outcomes = run(
        kind=LookupKind.GET_VALUE,
        adversaries=0.2,
        adversary_mode="random",
        lookups=30,
        lookup=LookupConfig(peer_timeout=1.0, quorum=3),
    )
    assert sum(o.success for o in outcomes) / len(outcomes) >= 0.95, f"seed {SEED}"


def test_loss_is_survived() -> None:
    _, outcomes = run(network=NetworkModel(loss=0.1), lookups=100)
    assert sum(o.failed for o in outcomes) > 0
    # One retry by default: the target is missed only if two round trips are lost.
    assert sum(o.success for o in outcomes) / len(outcomes) >= 0.9, f"seed {SEED}"


def test_command_prints_one_json_object() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--nodes", "500", "--lookups", "10", "--seed", "5", "--adversaries", "0.1", "--disjoint-paths", "2", "--json"])
    assert code == 0
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    for name in ("median_rounds", "p99_rounds", "success_rate", "median_messages", "median_latency_ms"):
        assert isinstance(figures[name], (int, float))
    assert figures["seed"] == 5 and figures["nodes"] == 500 and figures["lookups"] == 10
    assert figures["adversaries"] == 0.1 and figures["disjoint_paths"] == 2 and figures["kind"] == "find-node"


def test_command_quorum_selects_get_value_and_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "300", "--lookups", "5", "--quorum", "2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["kind"] == "get-value" and figures["quorum"] == 2
    with pytest.raises(SystemExit):
        main(["--churn", "1.5"])
    with pytest.raises(SystemExit):
        main(["--nodes", "0"])


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimConfig(adversary_mode="nice")
    with pytest.raises(ValueError):
        SimConfig(nodes=1)
    with pytest.raises(ValueError):
        NetworkModel(loss=1.0)


def test_wire_codec_is_transparent_to_the_simulation() -> None:
    _, plain = run(nodes=800, lookups=10, adversaries=0.1)
    _, wired = run(nodes=800, lookups=10, adversaries=0.1, exercise_codec=True)
    assert plain == wired


def test_find_peer_stops_when_the_target_answers() -> None:
    _, full = run(lookups=20)
    _, quick = run(lookups=20, lookup=LookupConfig(peer_timeout=1.0, stop_when_found=True))
    assert all(o.success for o in quick), f"seed {SEED}"
    assert statistics.median(o.messages for o in quick) < statistics.median(o.messages for o in full)
    assert statistics.median(o.latency for o in quick) < statistics.median(o.latency for o in full)


def test_tables_grown_by_real_joins_route_as_well_as_sampled_ones() -> None:
    simulator = Simulator(SimConfig(nodes=500, lookups=30, seed=SEED, bootstrap="join"))
    assert simulator.bootstrap_requests > 500
    # Every node's far half is populated after the joins and the refresh.
    far = [
        {s.index: s.size for s in simulator.net.server(node, 0.0).table.occupancy()}.get(255, 0)
        for node in range(0, 500, 10)
    ]
    assert min(far) >= 10, f"seed {SEED}"
    outcomes = simulator.run()
    assert sum(o.success for o in outcomes) == len(outcomes), f"seed {SEED}"
    assert statistics.median(o.rounds for o in outcomes) <= 4, f"seed {SEED}"
    with pytest.raises(ValueError):
        SimConfig(nodes=30_000, bootstrap="join")


def test_providers_are_announced_and_found() -> None:
    _, outcomes = run(kind=LookupKind.GET_PROVIDERS, lookups=20)
    assert all(o.success for o in outcomes), f"seed {SEED}"


def test_published_values_are_found_through_eclipsing_liars_with_disjoint_paths() -> None:
    lookup = LookupConfig(peer_timeout=1.0, quorum=2, disjoint_paths=4)
    _, outcomes = run(kind=LookupKind.GET_VALUE, adversaries=0.3, lookups=20, lookup=lookup)
    assert all(o.success for o in outcomes), f"seed {SEED}"


def test_a_joiner_becomes_known_through_its_self_lookup() -> None:
    simulator = Simulator(SimConfig(nodes=1000, lookups=1, seed=SEED, churn=0.1))
    joiner = 1000  # the first of the joiners
    join_time = simulator.net.join_time[joiner]
    assert join_time > 0
    peer = simulator.net.peer_ids[joiner]
    # Tables of the initial network do not know it.
    assert all(peer not in simulator.net.server(n, join_time).table for n in range(0, 1000, 50))
    simulator._announce(joiner, join_time)
    knowing = [n for n in range(1000) if simulator.net.has_table(n) and peer in simulator.net.server(n, 0).table]
    assert len(knowing) >= 10, f"seed {SEED}"


def test_the_daemons_eviction_policy_spares_later_lookups_the_dead() -> None:
    # The same seed and churn, with and without the node policy the daemon
    # runs; a small network so that askers come back and benefit.
    kept = Simulator(SimConfig(nodes=200, lookups=200, seed=SEED, churn=0.3, evict_on_failure=False))
    kept_outcomes = kept.run()
    evicting = Simulator(SimConfig(nodes=200, lookups=200, seed=SEED, churn=0.3))
    outcomes = evicting.run()
    assert evicting.evictions > 0 and kept.evictions == 0, f"seed {SEED}"
    failed_kept = sum(o.failed for o in kept_outcomes)
    failed = sum(o.failed for o in outcomes)
    assert failed < failed_kept, f"seed {SEED}: {failed} failed requests vs {failed_kept}"
    assert sum(o.success for o in outcomes) / len(outcomes) >= 0.9, f"seed {SEED}"


def test_retries_recover_lost_messages_and_cost_nothing_without_loss() -> None:
    def lossy(loss: float, retries: int) -> list:  # type: ignore[type-arg]
        return run(lookups=150, network=NetworkModel(loss=loss),
                   lookup=LookupConfig(peer_timeout=1.0, retries=retries))[1]

    def rate(outcomes: list) -> float:  # type: ignore[type-arg]
        return sum(o.success for o in outcomes) / len(outcomes)

    def mean_messages(outcomes: list) -> float:  # type: ignore[type-arg]
        return sum(o.messages for o in outcomes) / len(outcomes)

    # 10% of requests and 10% of answers lost: without a retry the target
    # itself stays silent for about one lookup in five.
    never, once, thrice = lossy(0.1, 0), lossy(0.1, 1), lossy(0.1, 3)
    assert rate(never) < 0.9, f"seed {SEED}: {rate(never)}"
    assert rate(once) >= 0.93 and rate(once) > rate(never), f"seed {SEED}: {rate(once)}"
    assert rate(thrice) >= 0.98, f"seed {SEED}: {rate(thrice)}"
    assert all(o.retries <= 3 * o.messages for o in thrice)
    assert sum(o.retries for o in once) > 0
    # Retries take the place of asking new peers: hardly more messages.
    assert mean_messages(once) <= 1.05 * mean_messages(never), f"seed {SEED}"
    # Nobody loses anything: no retry is sent and nothing changes.
    clean = lossy(0.0, 0)
    assert lossy(0.0, 1) == clean, f"seed {SEED}"
    assert all(o.retries == 0 for o in clean)


def test_adaptive_timeouts_give_up_on_lost_messages_sooner() -> None:
    def lossy(adaptive: bool) -> tuple[Simulator, list]:  # type: ignore[type-arg]
        config = SimConfig(nodes=2000, lookups=100, seed=SEED, network=NetworkModel(loss=0.1),
                           lookup=LookupConfig(peer_timeout=1.0), adaptive_timeouts=adaptive)
        simulator = Simulator(config)
        return simulator, simulator.run()

    _, fixed = lossy(False)
    simulator, adaptive = lossy(True)
    # Round trips are ~100 ms: the derived timeout sits at the 0.5 s floor,
    # half the fixed second, so each lost message costs half as long.
    assert statistics.median(o.latency for o in adaptive) < 0.8 * statistics.median(o.latency for o in fixed)
    assert sum(o.success for o in adaptive) / len(adaptive) >= 0.93, f"seed {SEED}"
    estimator = next(iter(simulator.estimators.values()))
    assert estimator.warm.samples > 0
    assert 0.5 <= estimator.timeout(simulator.net.peer_ids[0], connected=True) <= 1.0
