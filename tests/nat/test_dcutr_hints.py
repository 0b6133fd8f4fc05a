"""What a relay's hint buys, at fixed times: the address filter, the cap
of two, and the limits per claimed peer, per relay and per target IP (a
hostile relay must not make us spray anyone)."""

from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from overlay.nat.dcutr_core import AddrContext
from overlay.nat.dcutr_hints import HintConfig, HintPolicy


def ma(text: str) -> bytes:
    return Multiaddr(text).to_bytes()


CTX = AddrContext(own_ips=frozenset({"10.0.2.10"}),
                  contradicted=frozenset({("203.0.113.10", 4001)}),
                  contradicted_ips=frozenset({"198.51.100.9"}))
A = ma("/ip4/203.0.113.1/udp/4001/quic-v1")


def policy(**kwargs: object) -> HintPolicy:
    return HintPolicy(HintConfig(**kwargs), allow_private=True)  # type: ignore[arg-type]


def test_a_public_address_is_punched_towards() -> None:
    kept, why = policy().decide("relay", "peer", [A], CTX, 0.0)
    assert [(c.ip, c.port) for c in kept] == [("203.0.113.1", 4001)] and why is None


def test_addresses_the_filter_refuses_get_nothing() -> None:
    for addr in ("/ip4/10.0.9.5/udp/4001/quic-v1",      # another network's LAN
                 "/ip4/203.0.113.10/udp/4001/quic-v1",  # someone else's (the relay)
                 "/ip4/198.51.100.9/udp/4001/quic-v1",  # a contradicted IP
                 "/dns4/example.com/udp/4001/quic-v1",  # not an IP literal
                 "/ip4/224.0.0.1/udp/4001/quic-v1"):    # multicast
        kept, why = policy().decide("relay", "peer", [ma(addr)], CTX, 0.0)
        assert kept == [] and why, addr


def test_at_most_two_addresses_of_a_hint() -> None:
    many = [ma(f"/ip4/203.0.113.{n}/udp/4001/quic-v1") for n in range(1, 6)]
    kept, _ = policy().decide("relay", "peer", many, CTX, 0.0)
    assert [c.ip for c in kept] == ["203.0.113.1", "203.0.113.2"]
    kept, _ = policy(max_addrs=1).decide("relay", "peer2", many, CTX, 0.0)
    assert len(kept) == 1


def test_per_peer_limit() -> None:
    p = policy(per_peer=(2, 60.0))
    assert p.decide("r", "peer", [A], CTX, 0.0)[0]
    assert p.decide("r", "peer", [A], CTX, 0.0)[0]
    kept, why = p.decide("r", "peer", [A], CTX, 0.0)
    assert kept == [] and why is not None and "peer" in why
    assert p.decide("r", "peer", [A], CTX, 30.0)[0]  # refilled: 2 per 60 s


def test_a_relay_inventing_peer_ids_is_capped_per_relay_and_per_target_ip() -> None:
    p = policy(per_relay=(100, 60.0), per_ip=(3, 60.0))
    got = [bool(p.decide("relay", f"peer{n}", [A], CTX, 0.0)[0]) for n in range(10)]
    assert got == [True] * 3 + [False] * 7
    p = policy(per_relay=(4, 60.0), per_ip=(100, 60.0))
    got = [bool(p.decide("relay", f"peer{n}",
                         [ma(f"/ip4/203.0.113.{n + 1}/udp/4001/quic-v1")], CTX, 0.0)[0])
           for n in range(10)]
    assert got == [True] * 4 + [False] * 6
    # Another relay has its own budget.
    assert p.decide("other", "peer0", [A], CTX, 0.0)[0]


def test_switched_off_and_bad_configs() -> None:
    assert policy(enabled=False).decide("r", "p", [A], CTX, 0.0) == ([], "hints are off")
    for bad in ({"max_addrs": 3}, {"max_addrs": 0}, {"packets": 0}, {"per_ip": (0, 60.0)},
                {"per_relay": (1, 0.0)}):
        with pytest.raises(ValueError):
            HintConfig(**bad)  # type: ignore[arg-type]
