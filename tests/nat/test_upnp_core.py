"""The pure part of UPnP: the run rule, /proc/net/route parsing and the
lease schedule, at fixed times."""

from __future__ import annotations

import pytest

from overlay.nat.upnp_core import LeaseSchedule, Mapping, UpnpConfig, decide, parse_proc_route

ROUTE_HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\t"
                "Window\tIRTT\n")


def test_loopback_only_never_runs_and_reads_no_reason_past_it() -> None:
    decision = decide(["127.0.0.1"], "192.168.1.1")
    assert not decision.run and decision.lan_ip is None
    assert decision.reason == "listening on loopback or IPv6 only"
    assert not decide([], "192.168.1.1").run
    assert not decide(["::1", "fe80::1"], "192.168.1.1").run


def test_needs_a_private_default_gateway() -> None:
    assert decide(["10.0.1.10"], None).reason == "no default gateway"
    public = decide(["10.0.1.10"], "203.0.113.1")
    assert not public.run and "not on a private LAN" in public.reason
    assert not decide(["10.0.1.10"], "127.0.0.1").run
    assert not decide(["10.0.1.10"], "169.254.0.1").run


def test_picks_the_listen_address_on_the_gateways_lan() -> None:
    decision = decide(["127.0.0.1", "10.9.0.5", "192.168.1.20"], "192.168.1.1")
    assert decision.run and decision.lan_ip == "192.168.1.20"
    assert decide(["10.0.1.10"], "192.168.1.1").lan_ip == "10.0.1.10"  # none on it: the first


def test_parse_proc_route_finds_the_default_gateway() -> None:
    text = ROUTE_HEADER + (
        # 203.0.113.0/24 via 10.0.1.1
        "lan\t0071CB00\t0101000A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "lan\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"   # on-link LAN
        "lan\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")  # default via 192.168.1.1
    assert parse_proc_route(text) == "192.168.1.1"
    assert parse_proc_route(ROUTE_HEADER + "lan\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF"
                            "\t0\t0\t0\n") is None
    # A default route without RTF_GATEWAY (a point-to-point link) has no next hop.
    assert parse_proc_route(ROUTE_HEADER + "tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000"
                            "\t0\t0\t0\n") is None


def _mapping(at: float, lease: float = 3600.0) -> Mapping:
    return Mapping("203.0.113.1", 4001, "10.0.1.10", 4001, lease, at)


def test_maps_at_once_then_renews_at_half_the_lease() -> None:
    schedule = LeaseSchedule(UpnpConfig(lease=3600), now=100.0)
    assert schedule.due(100.0) and schedule.next_deadline() == 100.0
    schedule.on_mapped(_mapping(101.0))
    assert schedule.next_deadline() == 101.0 + 1800.0
    assert not schedule.due(1900.0) and schedule.due(1901.0)
    assert schedule.current(1901.0) == _mapping(101.0)
    assert schedule.current(3701.0) is None  # the lease ran out
    assert _mapping(0).multiaddr == "/ip4/203.0.113.1/udp/4001/quic-v1"


def test_failures_back_off_doubling_to_the_cap_and_keep_a_live_lease() -> None:
    config = UpnpConfig(lease=3600, retry_min=30, retry_max=100)
    schedule = LeaseSchedule(config, now=0.0)
    schedule.on_mapped(_mapping(0.0))
    schedule.on_failed(1800.0, "IGD gone")
    assert schedule.next_deadline() == 1830.0 and schedule.failures == 1
    assert schedule.mapping is not None  # still inside its lease
    schedule.on_failed(1830.0, "IGD gone")
    assert schedule.next_deadline() == 1890.0
    schedule.on_failed(1890.0, "IGD gone")
    assert schedule.next_deadline() == 1990.0  # 120 capped at 100
    schedule.on_failed(3600.0, "IGD gone")
    assert schedule.mapping is None and schedule.last_error == "IGD gone"
    schedule.on_mapped(_mapping(3700.0))
    assert schedule.failures == 0 and schedule.last_error is None


@pytest.mark.parametrize("kwargs", [{"lease": 60}, {"discovery_timeout": 0},
                                    {"retry_min": 10, "retry_max": 5}])
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        UpnpConfig(**kwargs)  # type: ignore[arg-type]
