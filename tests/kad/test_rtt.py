"""RTT estimation (RFC 6298 smoothing) and the timeouts derived from it."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.rtt import RttConfig, RttEstimate, RttEstimator

NOW = 1000.0


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def test_first_sample_and_smoothing_follow_rfc_6298() -> None:
    estimate = RttEstimate()
    estimate.add(0.1, NOW)
    assert estimate.srtt == pytest.approx(0.1) and estimate.rttvar == pytest.approx(0.05)
    estimate.add(0.2, NOW + 1)
    # RTTVAR = 3/4·0.05 + 1/4·|0.1 - 0.2|; SRTT = 7/8·0.1 + 1/8·0.2
    assert estimate.rttvar == pytest.approx(0.0625)
    assert estimate.srtt == pytest.approx(0.1125)
    assert estimate.rto(4.0) == pytest.approx(0.1125 + 0.25)
    assert estimate.samples == 2 and estimate.updated == NOW + 1


def test_no_samples_gives_the_initial_timeouts() -> None:
    rtt = RttEstimator(RttConfig(initial_timeout=1.0, initial_dial=1.0, min_dial_timeout=1.0))
    peer = _peer()
    assert rtt.timeout(peer, connected=True) == 1.0
    assert rtt.timeout(peer, connected=False) == 2.0


def test_a_fast_peer_gets_the_floor_not_ten_seconds() -> None:
    rtt = RttEstimator(RttConfig(min_timeout=0.25, max_timeout=10.0))
    peer = _peer()
    for i in range(10):
        rtt.sample(peer, 0.002, NOW + i)
    assert rtt.timeout(peer, connected=True) == 0.25
    # Any other connected peer inherits the network-wide estimate.
    assert rtt.timeout(_peer(), connected=True) == 0.25


def test_a_slow_peer_gets_srtt_plus_four_rttvar() -> None:
    rtt = RttEstimator(RttConfig(min_timeout=0.1, max_timeout=10.0))
    fast, slow = _peer(), _peer()
    for i in range(20):
        rtt.sample(fast, 0.01, NOW + i)
    rtt.sample(slow, 0.8, NOW)
    assert rtt.timeout(slow, connected=True) == pytest.approx(0.8 + 4 * 0.4)
    assert rtt.timeout(fast, connected=True) == pytest.approx(0.1)  # its own, at the floor


def test_the_ceiling_is_request_timeout() -> None:
    rtt = RttEstimator(RttConfig(min_timeout=0.1, max_timeout=3.0))
    peer = _peer()
    rtt.sample(peer, 5.0, NOW)
    assert rtt.timeout(peer, connected=True) == 3.0


def test_dials_are_measured_apart_from_requests() -> None:
    rtt = RttEstimator(RttConfig(min_timeout=0.02, min_dial_timeout=0.1, max_timeout=10.0))
    peer, stranger = _peer(), _peer()
    rtt.sample(peer, 0.01, NOW)
    rtt.sample(stranger, 0.2, NOW, dialed=True)
    assert rtt.peer(stranger) is None  # a dial says nothing about the peer's RTT
    assert rtt.timeout(stranger, connected=False) == pytest.approx(0.2 + 4 * 0.1)
    assert rtt.timeout(stranger, connected=True) == pytest.approx(0.01 + 4 * 0.005)


def test_peer_estimates_are_bounded() -> None:
    rtt = RttEstimator(RttConfig(max_peers=2))
    peers = [_peer() for _ in range(3)]
    for peer in peers:
        rtt.sample(peer, 0.01, NOW)
    assert rtt.peer(peers[0]) is None and rtt.peer(peers[2]) is not None


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        RttConfig(min_timeout=2.0, max_timeout=1.0)
    with pytest.raises(ValueError):
        RttConfig(variance_factor=0.5)
    with pytest.raises(ValueError):
        RttConfig(min_timeout=0.5, min_dial_timeout=0.2)


def test_a_dial_gets_its_own_floor() -> None:
    rtt = RttEstimator(RttConfig(min_timeout=0.2, min_dial_timeout=0.8))
    peer = _peer()
    rtt.sample(peer, 0.001, NOW)
    rtt.sample(peer, 0.01, NOW, dialed=True)
    assert rtt.timeout(peer, connected=True) == 0.2
    assert rtt.timeout(peer, connected=False) == 0.8
