"""The AutoNAT v2 server's decisions at a fixed ``now``."""

from __future__ import annotations

import random

import pytest

from overlay.multiaddrs import multiaddr_to_bytes
from overlay.nat.autonat_messages import DialRequest, ResponseStatus
from overlay.nat.autonat_server_core import (
    AutoNATServerCore,
    DialBackPlan,
    Reject,
    ServerConfig,
    ip_prefix,
)

NOW = 1000.0
PUBLIC = "/ip4/8.8.4.4/udp/4001/quic-v1"


def req(*addrs: str, nonce: int = 1) -> DialRequest:
    return DialRequest(tuple(multiaddr_to_bytes(a) for a in addrs), nonce)


def core(**changes: object) -> AutoNATServerCore:
    return AutoNATServerCore(ServerConfig(**changes), random.Random(7))  # type: ignore[arg-type]


def test_own_ip_is_dialled_without_data() -> None:
    decision = core().on_request("A", "8.8.4.4", req(PUBLIC), NOW)
    assert isinstance(decision, DialBackPlan)
    assert decision.addr_idx == 0 and decision.data_needed == 0
    assert decision.target.socket_address == ("8.8.4.4", 4001)


def test_other_ip_costs_30_to_100_kb_of_data() -> None:
    c = core()
    needs = []
    for i in range(10):
        d = c.on_request(f"P{i}", f"9.9.{i}.1", req(PUBLIC), NOW)
        assert isinstance(d, DialBackPlan)
        needs.append(d.data_needed)
        c.finished(f"P{i}")
    assert all(30_000 <= n <= 100_000 for n in needs)
    assert len(set(needs)) > 1  # drawn from the injected rng


def test_private_and_loopback_targets_refused_outside_a_lab() -> None:
    for addr in ("/ip4/10.0.0.5/udp/1/quic-v1", "/ip4/127.0.0.1/udp/1/quic-v1",
                 "/ip4/192.168.1.2/udp/1/quic-v1", "/ip4/203.0.113.7/udp/1/quic-v1",
                 "/ip6/::1/udp/1/quic-v1", "/ip6/fe80::1/udp/1/quic-v1"):
        d = core().on_request("A", "10.0.0.5", req(addr), NOW)
        assert d == Reject(ResponseStatus.E_DIAL_REFUSED, "no address we are willing to dial"), addr


def test_lab_allows_private_targets_but_never_unspecified_or_multicast() -> None:
    lab = core(lab=True)
    assert isinstance(lab.on_request("A", "10.0.0.5", req("/ip4/10.0.0.5/udp/1/quic-v1"), NOW),
                      DialBackPlan)
    for addr in ("/ip4/0.0.0.0/udp/1/quic-v1", "/ip4/224.0.0.1/udp/1/quic-v1"):
        d = core(lab=True).on_request("A", "10.0.0.5", req(addr), NOW)
        assert isinstance(d, Reject) and d.status is ResponseStatus.E_DIAL_REFUSED


def test_first_dialable_address_wins_and_indices_count_the_skipped_ones() -> None:
    d = core().on_request("A", "8.8.4.4", req("/ip4/10.1.1.1/udp/1/quic-v1",
                                              "/dns4/example.com/udp/1/quic-v1",
                                              "/ip4/8.8.4.4/udp/0/quic-v1",
                                              PUBLIC, "/ip4/1.1.1.1/udp/2/quic-v1"), NOW)
    assert isinstance(d, DialBackPlan) and d.addr_idx == 3


def test_unparseable_address_bytes_are_skipped_not_fatal() -> None:
    request = DialRequest((b"\xff\x00garbage", multiaddr_to_bytes(PUBLIC)), 1)
    d = core().on_request("A", "8.8.4.4", request, NOW)
    assert isinstance(d, DialBackPlan) and d.addr_idx == 1


def test_ipv6_only_server_refuses_ipv4_targets() -> None:
    d = core(ipv4=False).on_request("A", "8.8.4.4", req(PUBLIC), NOW)
    assert isinstance(d, Reject) and d.status is ResponseStatus.E_DIAL_REFUSED


def test_relayed_requests_are_rejected() -> None:
    d = core().on_request("A", None, req(PUBLIC), NOW)
    assert isinstance(d, Reject) and d.status is ResponseStatus.E_REQUEST_REJECTED


def test_per_peer_limit_then_window_slides() -> None:
    c = core(max_requests_per_peer=2, max_concurrent_per_peer=5)
    for _ in range(2):
        assert isinstance(c.on_request("A", "8.8.4.4", req(PUBLIC), NOW), DialBackPlan)
    d = c.on_request("A", "8.8.4.4", req(PUBLIC), NOW + 1)
    assert isinstance(d, Reject) and d.status is ResponseStatus.E_REQUEST_REJECTED
    assert "peer" in d.reason
    assert isinstance(c.on_request("B", "8.8.4.4", req(PUBLIC), NOW + 1), DialBackPlan)
    assert isinstance(c.on_request("A", "8.8.4.4", req(PUBLIC), NOW + 61), DialBackPlan)


def test_per_prefix_limit_catches_fresh_peer_ids() -> None:
    c = core(max_requests_per_prefix=3, max_requests_per_peer=100)
    results = [c.on_request(f"P{i}", f"8.8.4.{i + 1}", req(PUBLIC), NOW) for i in range(5)]
    assert [isinstance(r, DialBackPlan) for r in results] == [True, True, True, False, False]
    # Another /24 is another budget.
    assert isinstance(c.on_request("Q", "8.8.5.1", req(PUBLIC), NOW), DialBackPlan)
    assert ip_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"


def test_concurrency_limit_released_by_finished() -> None:
    c = core(max_concurrent=1)
    assert isinstance(c.on_request("A", "8.8.4.4", req(PUBLIC), NOW), DialBackPlan)
    assert isinstance(c.on_request("B", "8.8.4.4", req(PUBLIC), NOW), Reject)
    c.finished("A")
    assert isinstance(c.on_request("B", "8.8.4.4", req(PUBLIC), NOW), DialBackPlan)
    assert c.active == 1


def test_dial_data_requests_have_their_own_budget() -> None:
    c = core(max_dial_data_requests=1, max_concurrent=100, max_concurrent_per_peer=100)
    assert c.on_request("A", "9.9.9.9", req(PUBLIC), NOW).data_needed > 0  # type: ignore[union-attr]
    d = c.on_request("B", "9.9.9.8", req(PUBLIC), NOW)
    assert isinstance(d, Reject) and "third-party" in d.reason
    # Same-IP requests are unaffected.
    assert isinstance(c.on_request("C", "8.8.4.4", req(PUBLIC), NOW), DialBackPlan)


def test_counters() -> None:
    c = core()
    c.on_request("A", "8.8.4.4", req(PUBLIC), NOW)
    c.on_request("A", None, req(PUBLIC), NOW)
    c.on_request("A", "8.8.4.4", req("/ip4/10.0.0.1/udp/1/quic-v1"), NOW)
    assert c.counters == {"dialed": 1, "rejected": 1, "refused": 1}


@pytest.mark.parametrize("bad", [dict(dial_data_min=0), dict(dial_data_min=10, dial_data_max=5),
                                 dict(window=0), dict(max_requests=-1),
                                 dict(dial_data_max=20_000_000)])
def test_config_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerConfig(**bad)  # type: ignore[arg-type]
