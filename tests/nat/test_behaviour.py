"""NAT classification from observed mappings (pure)."""

from __future__ import annotations

import pytest

from overlay.nat.behaviour import (
    Behaviour,
    FilteringProbe,
    MappingObservation,
    PublicAddress,
    classify_filtering,
    classify_mapping,
    nat_type,
    public_addresses,
)

LOCAL = ("0.0.0.0", 4001)
A1 = ("203.0.113.10", 3478)
A2 = ("203.0.113.10", 3479)
B1 = ("203.0.113.20", 3478)


def obs(*pairs: tuple[tuple[str, int], tuple[str, int]]) -> list[MappingObservation]:
    return [MappingObservation(server, mapped) for server, mapped in pairs]


def test_no_answer_is_unknown() -> None:
    assert classify_mapping([], LOCAL).behaviour is Behaviour.UNKNOWN


def test_one_server_is_not_enough() -> None:
    verdict = classify_mapping(obs((A1, ("198.51.100.1", 4001))), LOCAL)
    assert verdict.behaviour is Behaviour.UNKNOWN and "two servers" in verdict.reason


def test_own_address_means_no_nat() -> None:
    verdict = classify_mapping(obs((A1, ("10.0.1.10", 4001))), LOCAL, ["10.0.1.10"])
    assert verdict.behaviour is Behaviour.NO_NAT
    # Our IP but another port: something rewrites ports, so not "no NAT".
    other = classify_mapping(obs((A1, ("10.0.1.10", 5000))), LOCAL, ["10.0.1.10"])
    assert other.behaviour is Behaviour.UNKNOWN


def test_same_mapping_from_two_ips_is_endpoint_independent() -> None:
    mapped = ("198.51.100.1", 4001)
    verdict = classify_mapping(obs((A1, mapped), (B1, mapped)), LOCAL)
    assert verdict.behaviour is Behaviour.ENDPOINT_INDEPENDENT


def test_same_mapping_from_one_ip_cannot_rule_out_address_dependence() -> None:
    mapped = ("198.51.100.1", 4001)
    verdict = classify_mapping(obs((A1, mapped), (A2, mapped)), LOCAL)
    assert verdict.behaviour is Behaviour.UNKNOWN


def test_different_mappings_from_two_ips_are_endpoint_dependent() -> None:
    verdict = classify_mapping(obs((A1, ("198.51.100.1", 1000)), (B1, ("198.51.100.1", 2000))),
                               LOCAL)
    assert verdict.behaviour is Behaviour.ENDPOINT_DEPENDENT


def test_port_of_one_ip_changes_mapping_is_address_and_port_dependent() -> None:
    verdict = classify_mapping(obs((A1, ("198.51.100.1", 1000)), (A2, ("198.51.100.1", 1001)),
                                   (B1, ("198.51.100.1", 2000))), LOCAL)
    assert verdict.behaviour is Behaviour.ADDRESS_AND_PORT_DEPENDENT


def test_mapping_per_ip_only_is_address_dependent() -> None:
    verdict = classify_mapping(obs((A1, ("198.51.100.1", 1000)), (A2, ("198.51.100.1", 1000)),
                                   (B1, ("198.51.100.1", 2000))), LOCAL)
    assert verdict.behaviour is Behaviour.ADDRESS_DEPENDENT


def test_latest_observation_per_server_counts() -> None:
    mapped = ("198.51.100.1", 4001)
    verdict = classify_mapping(obs((A1, ("198.51.100.1", 9)), (A1, mapped), (B1, mapped)), LOCAL)
    assert verdict.behaviour is Behaviour.ENDPOINT_INDEPENDENT


@pytest.mark.parametrize("probe, expected", [
    (FilteringProbe(True, None), Behaviour.ENDPOINT_INDEPENDENT),
    (FilteringProbe(False, True), Behaviour.ADDRESS_DEPENDENT),
    (FilteringProbe(False, False), Behaviour.ADDRESS_AND_PORT_DEPENDENT),
    (FilteringProbe(False, None), Behaviour.UNKNOWN),
    (FilteringProbe(None, None), Behaviour.UNKNOWN),
])
def test_filtering(probe: FilteringProbe, expected: Behaviour) -> None:
    assert classify_filtering(probe).behaviour is expected


@pytest.mark.parametrize("mapping, filtering, name", [
    (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ENDPOINT_INDEPENDENT, "full cone"),
    (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ADDRESS_DEPENDENT, "restricted cone"),
    (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT, "port-restricted cone"),
    (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.UNKNOWN, "cone (filtering unknown)"),
    (Behaviour.ENDPOINT_DEPENDENT, Behaviour.UNKNOWN, "symmetric"),
    (Behaviour.ADDRESS_DEPENDENT, Behaviour.UNKNOWN, "symmetric"),
    (Behaviour.NO_NAT, Behaviour.UNKNOWN, "no NAT"),
    (Behaviour.UNKNOWN, Behaviour.UNKNOWN, "unknown"),
])
def test_nat_type_names(mapping: Behaviour, filtering: Behaviour, name: str) -> None:
    assert nat_type(mapping, filtering) == name


def test_public_addresses_name_their_sources_best_first() -> None:
    mapped = ("198.51.100.1", 4001)
    out = public_addresses(
        [(A1, mapped), (B1, mapped), (A1, mapped), (("2001:db8::1", 3478), ("2001:db8::9", 4001))],
        [(mapped, 2), (("198.51.100.1", 5555), 1)])
    assert out[0] == PublicAddress(mapped, ("stun 203.0.113.10:3478", "stun 203.0.113.20:3478",
                                            "identify (2 peers)"))
    assert PublicAddress(("2001:db8::9", 4001), ("stun [2001:db8::1]:3478",)) in out
    assert PublicAddress(("198.51.100.1", 5555), ("identify (1 peer)",)) in out
    assert len(out) == 3
