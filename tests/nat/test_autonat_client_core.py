"""The AutoNAT v2 client's choices and the reachability tracker, at fixed times."""

from __future__ import annotations

import random

import pytest

from overlay.nat.autonat_client_core import AutoNATClientCore, ClientConfig
from overlay.nat.reachability import (
    Reachability,
    ReachabilityTracker,
    TrackerConfig,
    UNKNOWN_STATE,
)

NOW = 5000.0
NATTED = "/ip4/198.51.100.7/udp/4001/quic-v1"
PUBLIC = "/ip4/8.8.4.4/udp/4001/quic-v1"
LAN = "/ip4/192.168.1.5/udp/4001/quic-v1"
SERVERS = ["S1", "S2", "S3", "S4"]


def test_tracker_needs_several_servers_and_a_majority() -> None:
    t = ReachabilityTracker(TrackerConfig(confirmations=3, refutations=3))
    for s in ("S1", "S2"):
        t.record(PUBLIC, s, True, NOW)
    assert t.verdict(PUBLIC, NOW).reachability is Reachability.UNKNOWN
    t.record(PUBLIC, "S3", True, NOW)
    assert t.verdict(PUBLIC, NOW).reachability is Reachability.PUBLIC
    # A repeated answer from one server counts once: it replaces the old one.
    for _ in range(5):
        t.record(NATTED, "S1", False, NOW)
    assert t.verdict(NATTED, NOW).refuted_by == ("S1",)
    for s in ("S2", "S3"):
        t.record(NATTED, s, False, NOW)
    assert t.verdict(NATTED, NOW).reachability is Reachability.PRIVATE
    # Three liars against three honest servers: no verdict.
    for s in ("L1", "L2", "L3"):
        t.record(NATTED, s, True, NOW)
    assert t.verdict(NATTED, NOW).reachability is Reachability.UNKNOWN


def test_tracker_results_expire() -> None:
    t = ReachabilityTracker(TrackerConfig(confirmations=1, refutations=1, result_ttl=100))
    t.record(PUBLIC, "S1", True, NOW)
    state = t.state(NOW)
    assert state.reachability is Reachability.PUBLIC and state.expires_at == NOW + 100
    assert t.next_deadline() == NOW + 100
    assert t.state(NOW + 100) == UNKNOWN_STATE
    t.expire(NOW + 100)
    assert t.next_deadline() is None


def test_node_is_public_if_any_address_is_and_private_if_all_decided_ones_fail() -> None:
    t = ReachabilityTracker(TrackerConfig(confirmations=1, refutations=1))
    t.record(NATTED, "S1", False, NOW)
    state = t.state(NOW)
    assert state.reachability is Reachability.PRIVATE
    assert state.refuted == (NATTED,) and state.confirmed == ()
    assert "not reachable" in state.reasons[0]
    t.record(PUBLIC, "S2", True, NOW)
    state = t.state(NOW)
    assert state.reachability is Reachability.PUBLIC
    assert state.confirmed == (PUBLIC,) and state.refuted == (NATTED,)
    # An address we no longer have does not count.
    assert t.state(NOW, current=[NATTED]).reachability is Reachability.PRIVATE


def test_tracker_memory_is_bounded() -> None:
    t = ReachabilityTracker(TrackerConfig(confirmations=1, refutations=1,
                                          max_servers_per_address=2, max_addresses=3))
    for i in range(10):
        t.record(f"/ip4/8.8.8.{i}/udp/1/quic-v1", "S", True, NOW + i)
        t.record(PUBLIC, f"S{i}", True, NOW + i)
    assert len(t.verdicts(NOW + 10)) == 3
    assert len(t.tested_by(PUBLIC, NOW + 10)) == 2


def test_candidates_need_two_observers_and_skip_private_addresses() -> None:
    c = AutoNATClientCore(ClientConfig())
    cands = c.set_candidates({NATTED: 2, "/ip4/198.51.100.9/udp/1/quic-v1": 1, LAN: 5},
                             stun=["/ip4/8.8.4.4/udp/4001/quic-v1"],
                             listen=[LAN, "/ip4/127.0.0.1/udp/4001/quic-v1", PUBLIC])
    # Documentation ranges are not global: outside a lab only PUBLIC is testable.
    assert [(x.addr, x.sources) for x in cands] == [(PUBLIC, ("stun", "listen"))]
    lab = AutoNATClientCore(ClientConfig(lab=True))
    addrs = {x.addr for x in lab.set_candidates({NATTED: 2, LAN: 1}, [], [])}
    assert addrs == {NATTED}


def lab_client(confirm: int = 3) -> AutoNATClientCore:
    return AutoNATClientCore(ClientConfig(
        lab=True, tracker=TrackerConfig(confirmations=confirm, refutations=confirm),
        retry_interval=60, retest_interval=1800, max_in_flight=4))


def test_natted_address_refuted_public_confirmed_by_several_servers() -> None:
    rng = random.Random(3)
    c = lab_client()
    c.set_candidates({NATTED: 3}, [], [PUBLIC])
    now = NOW
    truth = {NATTED: False, PUBLIC: True}
    for _ in range(20):
        while (probe := c.next_probe(SERVERS, now, rng)) is not None:
            c.on_result(probe, truth[probe.addr], now)
        now += 61
    state = c.state(now)
    assert state.reachability is Reachability.PUBLIC
    assert state.confirmed == (PUBLIC,) and state.refuted == (NATTED,)
    assert len(c.tracker.verdict(PUBLIC, now).confirmed_by) >= 3


def test_probes_spread_over_servers_and_respect_in_flight() -> None:
    rng = random.Random(4)
    c = AutoNATClientCore(ClientConfig(lab=True, max_in_flight=1))
    c.set_candidates({}, [], [PUBLIC, NATTED])
    first = c.next_probe(SERVERS, NOW, rng)
    assert first is not None
    assert c.next_probe(SERVERS, NOW, rng) is None  # one in flight
    c.on_result(first, True, NOW)
    second = c.next_probe(SERVERS, NOW, rng)
    assert second is not None and second.addr != first.addr
    c.on_result(second, True, NOW)
    # first.addr is undecided (1 of 3): retried after retry_interval with a new server.
    assert c.next_probe(SERVERS, NOW + 59, rng) is None
    again = c.next_probe(SERVERS, NOW + 60, rng)
    assert again is not None and again.addr == first.addr
    assert again.server != first.server  # a new opinion first


def test_nonces_are_checked_and_unique() -> None:
    rng = random.Random(5)
    c = lab_client()
    c.set_candidates({}, [], [PUBLIC, NATTED])
    a = c.next_probe(SERVERS, NOW, rng)
    b = c.next_probe(SERVERS, NOW, rng)
    assert a is not None and b is not None and a.nonce != b.nonce
    assert c.expects(a.nonce) == a and c.expects(a.nonce ^ 1) is None
    c.on_result(a, True, NOW)
    assert c.expects(a.nonce) is None
    c.on_result(a, False, NOW)  # a late duplicate changes nothing
    assert c.tracker.verdict(a.addr, NOW).refuted_by == ()


def test_failing_server_backs_off() -> None:
    rng = random.Random(6)
    c = AutoNATClientCore(ClientConfig(lab=True, server_backoff=300))
    c.set_candidates({}, [], [PUBLIC])
    p = c.next_probe(["S1"], NOW, rng)
    assert p is not None
    c.on_no_result(p, NOW)
    assert c.next_probe(["S1"], NOW + 100, rng) is None
    assert c.next_probe(["S1"], NOW + 300, rng) is not None


def test_decided_address_retested_after_interval() -> None:
    rng = random.Random(7)
    c = lab_client(confirm=1)
    c.set_candidates({}, [], [PUBLIC])
    p = c.next_probe(SERVERS, NOW, rng)
    assert p is not None
    c.on_result(p, True, NOW)
    assert c.next_deadline(NOW) == NOW + 1800
    assert c.next_probe(SERVERS, NOW + 1799, rng) is None
    assert c.next_probe(SERVERS, NOW + 1800, rng) is not None


def test_manual_probe_addresses_stay_candidates() -> None:
    c = lab_client(confirm=1)
    p = c.start_probe(NATTED + "/p2p/12D3KooWCAbPCGwF1BucuY4ESCrvGRMDfKyUiqwQzh7jtUMrYqN4",
                      "S1", NOW, random.Random(1))
    assert p.addr == NATTED
    c.set_candidates({}, [], [])
    c.on_result(p, False, NOW)
    assert c.state(NOW).refuted == (NATTED,)


@pytest.mark.parametrize("bad", [dict(min_observers=0), dict(retry_interval=0),
                                 dict(max_in_flight=0), dict(max_dial_data=-1)])
def test_client_config_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ClientConfig(**bad)  # type: ignore[arg-type]


def test_tracker_config_validation() -> None:
    with pytest.raises(ValueError):
        TrackerConfig(confirmations=0)
    with pytest.raises(ValueError):
        TrackerConfig(confirmations=5, max_servers_per_address=4)
