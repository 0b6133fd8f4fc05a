"""The re-punch policy at fixed times: when a path is probed, declared dead,
re-punched or left alone, and what the limits allow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overlay.nat.repunch_core import (
    CloseDead,
    Declined,
    EnsurePunch,
    PathSample,
    Probe,
    Redial,
    RefreshAddrs,
    RepunchConfig,
    RepunchPolicy,
)

CFG = RepunchConfig(probe_after=3.0, probe_interval=1.0, dead_after=6.0, probe_grace=1.0,
                    busy_window=30.0, yield_delay=1.0, upgrade_after=3.0,
                    outcome_timeout=40.0, backoff=10.0, per_peer=3, per_minute=10)


def sample(key: str = "c1", peer: str = "B", *, heard: float | None = 0.0,
           data: float | None = 0.0, streams: int = 0, remote: str = "/ip4/203.0.113.2/udp/1",
           punched: bool = True, smaller: bool = False) -> PathSample:
    return PathSample(key, peer, remote, heard, data, streams, 0.001, punched, smaller)


def run(policy: RepunchPolicy, start: float, end: float,
        make: object, step: float = 0.5) -> list[tuple[float, object]]:
    """Sample from ``start`` to ``end``; ``make(now)`` gives the samples."""
    out: list[tuple[float, object]] = []
    now = start
    while now <= end + 1e-9:
        for action in policy.on_sample(now, make(now)):  # type: ignore[operator]
            out.append((now, action))
        now = round(now + step, 3)
    return out


def test_a_live_path_that_matters_is_probed_only_when_quiet_and_never_closed() -> None:
    policy = RepunchPolicy(CFG)
    heard = 0.0
    probes: list[float] = []
    now = 0.0
    while now <= 30.0:
        if now < 10.0:
            heard = now  # data flows until 10 s
        for action in policy.on_sample(now, [sample(heard=heard, data=min(now, 10.0))]):
            assert isinstance(action, Probe), action
            probes.append(now)
            heard = now + 0.05  # the peer acknowledges the PING
        now += 0.5
    # The last data came at 9.5 s; then a probe whenever 3 s passed since
    # the last answer, at the next sample.
    assert probes == [12.5, 16.0, 19.5, 23.0, 26.5, 30.0]


def test_a_dead_path_that_matters_is_redialled_and_then_closed() -> None:
    policy = RepunchPolicy(CFG)
    acts = run(policy, 0.0, 12.0, lambda now: [sample(heard=min(now, 4.0), streams=1)])
    kinds = [(t, type(a).__name__) for t, a in acts]
    probes = [t for t, k in kinds if k == "Probe"]
    assert probes[0] == 7.0  # 3 s after the last packet
    assert not [a for _, a in acts if isinstance(a, CloseDead)]  # the driver closes it
    redial = [(t, a) for t, a in acts if isinstance(a, Redial)]
    assert [t for t, _ in redial] == [10.0]  # 6 s of silence
    assert redial[0][1].dead == "c1" and "no packet for 6.0 s" in redial[0][1].reason
    status = policy.peer_status("B", 10.0)
    assert status is not None and status["count"] == 1 and status["state"] == "dialling"
    assert status["detect_ms"] == 6000.0
    # The redial gives a fresh relayed connection: the peer's DCUtR runs;
    # a new punched connection comes 1.5 s after the verdict.
    assert policy.on_dialled("B", 10.2, fresh=True) == []
    policy.on_sample(11.5, [sample("c2", heard=11.5, streams=1)])
    status = policy.peer_status("B", 11.5)
    assert status is not None and status["direct_again_ms"] == 1500.0
    assert status["last_outcome"] == "direct again" and status["state"] is None
    assert policy.counters["direct_again"] == 1 and policy.counters["repunches"] == 1


def test_an_idle_peer_is_neither_probed_nor_repunched() -> None:
    policy = RepunchPolicy(CFG)
    # Last data at 0 s, no streams: after busy_window it does not matter.
    acts = run(policy, 0.0, 120.0, lambda now: [sample(heard=min(now, 40.0), data=0.0)])
    assert acts == []
    assert policy.peer_status("B", 120.0) is None


def test_a_peer_becoming_wanted_on_a_dead_path_is_repunched_at_once() -> None:
    policy = RepunchPolicy(CFG)
    run(policy, 0.0, 50.0, lambda now: [sample(heard=min(now, 40.0), data=0.0)])
    acts = run(policy, 50.5, 53.0, lambda now: [sample(heard=40.0, data=0.0, streams=1)])
    assert isinstance(acts[0][1], Probe) and acts[0][0] == 50.5
    assert [type(a) for t, a in acts if t == 51.5] == [RefreshAddrs, Redial]


def test_without_hole_punching_nothing_happens() -> None:
    policy = RepunchPolicy(CFG)
    now = 0.0
    while now < 20:
        assert policy.on_sample(now, [sample(heard=0.0, streams=1)], holepunch=False) == []
        now += 0.5


def test_the_larger_peer_id_yields_to_the_peer_redialling() -> None:
    policy = RepunchPolicy(CFG)
    acts = run(policy, 0.0, 10.0, lambda now: [sample(heard=min(now, 4.0), streams=1,
                                                      smaller=True)])
    assert [a for t, a in acts if t == 10.0] == [RefreshAddrs("B")]  # no Redial yet
    assert policy.peer_status("B", 10.0)["state"] == "yielding"  # type: ignore[index]
    # The peer's relayed connection arrives: we close the dead path and
    # wait for the punch it starts.
    assert [type(a) for a in policy.on_relayed_opened("B", 10.4)] == [CloseDead]
    assert policy.on_sample(11.5, []) == []  # nothing after the yield
    # Had it not come, we would have redialled after yield_delay.
    other = RepunchPolicy(CFG)
    acts = run(other, 0.0, 11.0, lambda now: [sample(heard=min(now, 4.0), streams=1,
                                                     smaller=True)] if now <= 10 else [])
    redials = [(t, a) for t, a in acts if isinstance(a, Redial)]
    assert [(t, a.dead) for t, a in redials] == [(11.0, "c1")]


def test_the_peer_redialling_closes_our_silent_path_only() -> None:
    policy = RepunchPolicy(CFG)
    policy.on_sample(0.0, [sample("c1", heard=0.0), sample("c2", "C", heard=0.0)])
    policy.on_sample(5.0, [sample("c1", heard=1.0), sample("c2", "C", heard=4.9)])
    assert policy.on_relayed_opened("C", 5.0) == []  # heard 0.1 s ago: alive
    acts = policy.on_relayed_opened("B", 5.0)
    assert acts == [CloseDead("c1", "B", "the peer redialled through the relay")]
    assert policy.counters["peer_redialled"] == 1
    policy.on_sample(6.0, [sample("c3", heard=6.0), sample("c2", "C", heard=5.9)])
    status = policy.peer_status("B", 6.0)
    assert status is not None and status["direct_again_ms"] == 1000.0


def test_no_punch_from_the_peer_makes_us_start_one_then_give_up() -> None:
    policy = RepunchPolicy(CFG)
    run(policy, 0.0, 10.0, lambda now: [sample(heard=min(now, 4.0), streams=1)])
    policy.on_dialled("B", 10.5, fresh=True)
    acts = run(policy, 11.0, 60.0, lambda now: [])
    assert [(t, a) for t, a in acts] == [(13.5, EnsurePunch("B"))]
    status = policy.peer_status("B", 60.0)
    assert status is not None and status["last_outcome"].startswith("still relayed")
    assert policy.counters["still_relayed"] == 1
    # An open relayed connection that was reused: start DCUtR at once.
    again = RepunchPolicy(CFG)
    run(again, 0.0, 10.0, lambda now: [sample(heard=min(now, 4.0), streams=1)])
    assert again.on_dialled("B", 10.5, fresh=False) == [EnsurePunch("B")]


def test_a_failed_relay_dial_is_retried_once_and_a_later_direct_path_still_counts() -> None:
    policy = RepunchPolicy(CFG)
    run(policy, 0.0, 10.0, lambda now: [sample(heard=min(now, 4.0), streams=1)])
    policy.on_dial_failed("B", 10.5, "timed out")
    status = policy.peer_status("B", 11.0)
    assert status is not None and status["last_outcome"] == "relay dial failed: timed out"
    assert status["state"] == "retry"
    assert policy.on_sample(12.0, []) == []
    assert policy.on_sample(12.5, []) == [Redial("B", "no packet for 6.0 s despite probes", None)]
    policy.on_dial_failed("B", 13.0, "timed out again")
    assert policy.counters["dial_failed"] == 2
    assert policy.peer_status("B", 13.0)["state"] == "waiting"  # type: ignore[index]
    # The peer's own redial brings a direct path after all.
    policy.on_sample(20.0, [sample("c2", heard=20.0)])
    assert policy.peer_status("B", 20.0)["direct_again_ms"] == 10000.0  # type: ignore[index]


def _die_and_recover(policy: RepunchPolicy, start: float, key: str) -> list[object]:
    """Path ``key`` dies at ``start`` + 4 s; returns the actions of the verdict."""
    acts = run(policy, start, start + 10.0,
               lambda now: [sample(key, heard=min(now, start + 4.0), streams=1)])
    verdict = [a for t, a in acts if not isinstance(a, Probe)]
    for action in verdict:
        if isinstance(action, Redial):
            policy.on_dialled("B", start + 10.2, fresh=True)
            policy.on_sample(start + 11.0, [sample(key + "x", heard=start + 11.0, streams=1)])
    return verdict


def test_backoff_and_the_per_peer_budget_bound_repunches() -> None:
    policy = RepunchPolicy(CFG)
    # The first punch (watched at 0 s) and one re-punch: fine.
    first = _die_and_recover(policy, 0.0, "a")
    assert [type(a) for a in first] == [RefreshAddrs, Redial]
    # The new path dies 5 s after the re-punch: back-off (20 s) says no.
    second = _die_and_recover(policy, 11.0, "ax")
    assert [type(a) for a in second] == [CloseDead, Declined]
    assert "back-off" in second[1].reason  # type: ignore[attr-defined]
    # Later a fresh punched path (the peer's next punch spends budget too)
    # dies: three punches in 600 s are the budget.
    policy.on_sample(100.0, [sample("b", heard=100.0, streams=1)])
    third = _die_and_recover(policy, 100.0, "b")
    assert [type(a) for a in third] == [CloseDead, Declined]
    assert "rate limit" in third[1].reason  # type: ignore[attr-defined]
    # Ten minutes after the first punches the budget is back.
    policy.on_sample(700.0, [sample("c", heard=700.0, streams=1)])
    fourth = _die_and_recover(policy, 700.0, "c")
    assert [type(a) for a in fourth] == [RefreshAddrs, Redial]


def test_the_cap_per_minute_covers_all_peers() -> None:
    policy = RepunchPolicy(replace(CFG, per_minute=2))
    peers = ["P1", "P2", "P3"]
    acts = run(policy, 0.0, 10.0, lambda now: [
        sample(f"k{p}", p, heard=min(now, 4.0), streams=1) for p in peers])
    redials = [a.peer for _, a in acts if isinstance(a, Redial)]
    declined = [a.peer for _, a in acts if isinstance(a, Declined)]
    assert len(redials) == 2 and len(declined) == 1


def test_a_newer_direct_connection_replaces_a_silent_one() -> None:
    policy = RepunchPolicy(CFG)
    policy.on_sample(0.0, [sample("old", heard=0.0, data=None)])
    acts = policy.on_sample(4.0, [sample("old", heard=0.0, data=None),
                                  sample("new", heard=4.0, data=None)])
    assert acts == [CloseDead("old", "B", "silent, and a newer direct connection came")]


def test_quic_migration_is_counted_not_repunched() -> None:
    policy = RepunchPolicy(CFG)
    policy.on_sample(0.0, [sample(heard=0.0, streams=1)])
    acts = policy.on_sample(1.0, [sample(heard=1.0, streams=1, remote="/ip4/203.0.113.2/udp/9")])
    assert acts == [] and policy.counters["migrated"] == 1
    status = policy.peer_status("B", 1.0)
    assert status is not None and "moved the path" in status["last_outcome"]


def test_a_mapping_change_probes_at_once_and_a_silent_path_dies_sooner() -> None:
    policy = RepunchPolicy(CFG)
    policy.on_mapping(frozenset({"203.0.113.1:4001"}))
    policy.on_sample(0.0, [sample(heard=0.0, streams=1)])
    policy.on_mapping(frozenset())  # a failed round says nothing
    policy.on_mapping(frozenset({"203.0.113.1:5555"}))
    assert policy.counters["mapping_changes"] == 1
    acts = policy.on_sample(0.5, [sample(heard=0.4, streams=1)])
    assert acts == [Probe("c1")]
    acts = policy.on_sample(1.5, [sample(heard=0.4, streams=1)])
    assert [type(a) for a in acts] == [RefreshAddrs, Redial]
    assert acts[1].reason == "our NAT mapping changed"  # type: ignore[union-attr]
    # Answered: a path whose probe came back stays.
    calm = RepunchPolicy(CFG)
    calm.on_mapping(frozenset({"a"}))
    calm.on_sample(0.0, [sample(heard=0.0, streams=1)])
    calm.on_mapping(frozenset({"b"}))
    assert calm.on_sample(0.5, [sample(heard=0.4, streams=1)]) == [Probe("c1")]
    assert calm.on_sample(1.5, [sample(heard=0.6, streams=1)]) == []


def test_deadlines_follow_the_sampling_and_the_pending_stages() -> None:
    policy = RepunchPolicy(CFG)
    assert policy.next_deadline() is None
    policy.on_sample(0.0, [sample(heard=0.0)])
    assert policy.next_deadline() == 0.5
    policy.on_sample(0.5, [])
    assert policy.next_deadline() is None


@pytest.mark.parametrize("bad", [
    {"probe_after": 0.0}, {"dead_after": 2.0}, {"per_peer": 0}, {"backoff_max": 1.0},
    {"yield_delay": -1.0},
])
def test_config_is_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RepunchConfig(**bad)  # type: ignore[arg-type]


def test_a_path_that_failed_under_us_is_repunched_and_one_closed_otherwise_is_not() -> None:
    # QUIC's idle timeout or ICMP port-unreachable closed the connection
    # before our own verdict: the peer matters, so punch again anyway.
    policy = RepunchPolicy(CFG)
    assert policy.on_sample(0.0, [sample(streams=1)]) == []
    assert policy.watched == ["c1"]
    actions = policy.on_sample(1.0, [], lost={"c1": "the path failed: ICMP"})
    assert actions == [RefreshAddrs("B"), Redial("B", "the path failed: ICMP", None)]
    assert policy.counters["lost"] == 1 and policy.counters["repunches"] == 1
    status = policy.peer_status("B", 1.0)
    assert status is not None and status["last_reason"] == "the path failed: ICMP"
    # Any other close (ours, the peer's CONNECTION_CLOSE): left alone.
    other = RepunchPolicy(CFG)
    other.on_sample(0.0, [sample(streams=1)])
    assert other.on_sample(1.0, []) == []
    assert other.peer_status("B", 1.0) is None
    # An idle peer's path failing is QUIC's business.
    idle = RepunchPolicy(CFG)
    idle.on_sample(0.0, [sample(data=None)])
    assert idle.on_sample(1.0, [], lost={"c1": "idle"}) == []


def test_connections_that_open_during_a_repunch_and_just_after_count_as_its_work() -> None:
    policy = RepunchPolicy(CFG)
    assert not policy.repunching("B", 0.0, 5.0)
    policy.on_sample(0.0, [sample(streams=1)])
    policy.on_sample(10.0, [], lost={"c1": "the path failed"})
    assert policy.repunching("B", 10.0, 5.0)  # under way
    policy.on_sample(12.0, [sample("c2", heard=12.0, streams=1)])
    assert policy.peer_status("B", 12.0)["last_outcome"] == "direct again"  # type: ignore[index]
    assert policy.repunching("B", 16.9, 5.0)  # the session's other dial, a moment later
    assert not policy.repunching("B", 17.0, 5.0)
