from __future__ import annotations

import pytest

from overlay import AGENT_VERSION
from overlay.host import HostConfig
from multiaddr import Multiaddr

from overlay.host.addrs import (
    expand_unspecified,
    is_ipv6,
    is_loopback,
    observed_to_quic,
    socket_to_multiaddr,
)


def test_defaults() -> None:
    config = HostConfig()
    assert config.agent_version == AGENT_VERSION
    assert config.protocol_version == "ipfs/0.1.0"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"max_connections_per_peer": 0},
        {"dial_timeout": 0},
        {"ping_timeout": -1},
        {"identify_max_size": 10},
        {"agent_version": ""},
        {"agent_version": "a\nb"},
    ],
)
def test_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HostConfig(**kwargs)  # type: ignore[arg-type]


def test_socket_to_multiaddr() -> None:
    assert str(socket_to_multiaddr("127.0.0.1", 5)) == "/ip4/127.0.0.1/udp/5/quic-v1"
    assert str(socket_to_multiaddr("::1", 6)) == "/ip6/::1/udp/6/quic-v1"
    # Dual-stack sockets report IPv4 peers as mapped IPv6 addresses.
    assert str(socket_to_multiaddr("::ffff:192.0.2.1", 7)) == "/ip4/192.0.2.1/udp/7/quic-v1"
    assert str(socket_to_multiaddr("fe80::1%eth0", 8)) == "/ip6/fe80::1/udp/8/quic-v1"
    assert is_ipv6("::1") and not is_ipv6("10.0.0.1")
    with pytest.raises(ValueError):
        is_ipv6("example.com")


def test_expand_unspecified() -> None:
    assert [str(a) for a in expand_unspecified("10.1.2.3", 9)] == ["/ip4/10.1.2.3/udp/9/quic-v1"]
    v4 = [str(a) for a in expand_unspecified("0.0.0.0", 9)]
    assert v4[0] == "/ip4/127.0.0.1/udp/9/quic-v1"
    assert all(a.startswith("/ip4/") and a.endswith("/udp/9/quic-v1") for a in v4)
    assert "/ip4/0.0.0.0/udp/9/quic-v1" not in v4
    v6 = [str(a) for a in expand_unspecified("::", 9)]
    assert v6[0] == "/ip6/::1/udp/9/quic-v1"


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        # py-libp2p labels the UDP port of a QUIC connection as /tcp.
        ("/ip4/192.0.2.1/tcp/4001", "/ip4/192.0.2.1/udp/4001/quic-v1"),
        ("/ip6/2001:db8::1/udp/9/quic-v1", "/ip6/2001:db8::1/udp/9/quic-v1"),
        ("/dns4/example.com/udp/9/quic-v1", None),
        ("/ip4/192.0.2.1/udp/0/quic-v1", None),
        ("/ip4/192.0.2.1", None),
    ],
)
def test_observed_to_quic(observed: str, expected: str | None) -> None:
    result = observed_to_quic(Multiaddr(observed))
    assert (str(result) if result is not None else None) == expected


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
