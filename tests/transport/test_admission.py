"""Admission of inbound Initials by source (pure): verdicts in order, the
per-IP and per-/24 (/48) scopes, the own-address exemption, releases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overlay.errors import ConfigError
from overlay.transport import TransportConfig
from overlay.transport.admission import Admission, Decision, Verdict, normalise_ip

CONFIG = TransportConfig(
    max_connections=100,
    max_handshakes=10,
    retry_threshold=5,
    max_handshakes_per_ip=4,
    max_connections_per_ip=3,
    max_connections_per_prefix=5,
)


def decide(adm: Admission, ip: str, *, validated: bool = False, handshakes: int = 0,
           connections: int = 0) -> Decision:
    return adm.decide(adm.source(ip), validated=validated, handshakes=handshakes,
                      connections=connections)


def test_global_caps_and_threshold() -> None:
    adm = Admission(CONFIG, "192.0.2.1")
    assert decide(adm, "198.51.100.1").verdict is Verdict.ACCEPT
    assert decide(adm, "198.51.100.1", connections=100) == Decision(Verdict.DROP,
                                                                     "quic.connections")
    assert decide(adm, "198.51.100.1", handshakes=4).verdict is Verdict.ACCEPT
    assert decide(adm, "198.51.100.1", handshakes=5) == Decision(Verdict.RETRY, "quic.retry")
    # A validated address passes the threshold, but not the cap.
    assert decide(adm, "198.51.100.1", handshakes=9, validated=True).verdict is Verdict.ACCEPT
    assert decide(adm, "198.51.100.1", handshakes=10, validated=True) == Decision(
        Verdict.DROP, "quic.handshakes")


def test_handshakes_per_ip_retry_at_half_then_drop() -> None:
    adm = Admission(replace(CONFIG, max_connections_per_ip=10, max_connections_per_prefix=10),
                    "192.0.2.1")
    src = adm.source("198.51.100.9")
    adm.opened(src)
    adm.opened(src)
    assert decide(adm, "198.51.100.9") == Decision(Verdict.RETRY, "quic.retry_per_ip")
    assert decide(adm, "198.51.100.9", validated=True).verdict is Verdict.ACCEPT
    adm.opened(src)
    adm.opened(src)
    assert adm.handshakes_from("198.51.100.9") == 4
    assert decide(adm, "198.51.100.9", validated=True) == Decision(
        Verdict.DROP, "quic.handshakes_per_ip")
    # Another IP of the same /24 has its own handshake share.
    assert decide(adm, "198.51.100.10").verdict is Verdict.ACCEPT
    # A completed handshake frees its slot but keeps its connection slot.
    adm.established(src)
    assert adm.handshakes_from("198.51.100.9") == 3
    assert adm.connections_from("198.51.100.9") == 4


def test_connections_per_ip_and_per_prefix() -> None:
    adm = Admission(CONFIG, "192.0.2.1")
    for ip in ("198.51.100.1",) * 3:
        src = adm.source(ip)
        assert decide(adm, ip).verdict is Verdict.ACCEPT
        adm.opened(src)
        adm.established(src)
    assert decide(adm, "198.51.100.1") == Decision(Verdict.REFUSE, "quic.connections_per_ip")
    for ip in ("198.51.100.2", "198.51.100.3"):
        adm.opened(adm.source(ip))
        adm.established(adm.source(ip))
    # The /24 holds 5: a sixth address in it is refused, one outside is not.
    assert decide(adm, "198.51.100.200") == Decision(Verdict.REFUSE,
                                                     "quic.connections_per_prefix")
    assert decide(adm, "198.51.101.1").verdict is Verdict.ACCEPT
    # Closing one makes room again.
    adm.closed(adm.source("198.51.100.1"), handshaking=False)
    assert decide(adm, "198.51.100.1").verdict is Verdict.ACCEPT
    assert adm.connections_from("198.51.100.1") == 2


def test_ipv6_prefix_is_a_48() -> None:
    adm = Admission(CONFIG, "2001:db8:ffff::1")
    for i in range(5):
        src = adm.source(f"2001:db8:1:{i}::1")
        adm.opened(src)
        adm.established(src)
    assert decide(adm, "2001:db8:1:ffff::9").cause == "quic.connections_per_prefix"
    assert decide(adm, "2001:db8:2::1").verdict is Verdict.ACCEPT


def test_loopback_addresses_are_separate_sources() -> None:
    adm = Admission(CONFIG, "127.0.0.1")
    for _ in range(3):
        adm.opened(adm.source("127.0.0.66"))
    assert decide(adm, "127.0.0.66", validated=True).cause == "quic.connections_per_ip"
    assert decide(adm, "127.0.0.67").verdict is Verdict.ACCEPT


@pytest.mark.parametrize("local, exempt", [
    ("127.0.0.1", {"127.0.0.1"}),
    ("0.0.0.0", {"127.0.0.1", "::1"}),
    ("::", {"127.0.0.1", "::1"}),
    ("192.0.2.1", {"192.0.2.1"}),
])
def test_own_address_is_exempt(local: str, exempt: set[str]) -> None:
    adm = Admission(CONFIG, local)
    for ip in ("127.0.0.1", "::1", "192.0.2.1", "127.0.0.66", "::ffff:127.0.0.1"):
        src = adm.source(ip)
        assert src.exempt == (normalise_ip(ip) in exempt)
        if src.exempt:
            for _ in range(20):
                adm.opened(src)
            # Past every per-source cap, still in; global limits still apply.
            assert decide(adm, ip).verdict is Verdict.ACCEPT
            assert decide(adm, ip, handshakes=5).verdict is Verdict.RETRY
            assert adm.connections_from(ip) == 0


def test_exemption_can_be_turned_off() -> None:
    adm = Admission(TransportConfig(max_connections_per_ip=1, exempt_own_address=False),
                    "127.0.0.1")
    adm.opened(adm.source("127.0.0.1"))
    assert decide(adm, "127.0.0.1", validated=True).cause == "quic.connections_per_ip"


@pytest.mark.parametrize("bad", [
    {"retry_threshold": -1},
    {"retry_token_lifetime": 0.0},
    {"max_handshakes_per_ip": 0},
    {"max_connections_per_ip": 0},
    {"max_connections_per_prefix": 0},
])
def test_config_validation(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TransportConfig(**bad)  # type: ignore[arg-type]
