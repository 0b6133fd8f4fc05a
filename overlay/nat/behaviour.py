"""What kind of NAT we are behind, from what STUN servers reported (pure).

Terms are RFC 4787's.  Mapping behaviour needs the mapped address one
socket got from two or more servers: the same mapping towards every server
is endpoint-independent; a new one per server IP is address-dependent; a
new one per server IP *and* port is address-and-port-dependent.  Servers on
different IPs only can tell "endpoint-dependent" but not which kind; servers
sharing one IP cannot rule out address-dependent mapping.

Filtering needs a server that answers RFC 5780 change requests (it has a
second address, as coturn listening on two): if an answer from the other
IP and port gets through, filtering is endpoint-independent; if only one
from the other port does, address-dependent; if neither,
address-and-port-dependent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from overlay.nat.stun import Address

__all__ = [
    "Behaviour",
    "Verdict",
    "MappingObservation",
    "FilteringProbe",
    "PublicAddress",
    "classify_mapping",
    "classify_filtering",
    "nat_type",
    "public_addresses",
    "format_address",
]


class Behaviour(Enum):
    NO_NAT = "no-nat"
    """The mapped address is one of our own: nothing translates us."""
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    ENDPOINT_DEPENDENT = "endpoint-dependent"
    """Dependent on the destination; whether on its port too is not known."""
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    behaviour: Behaviour
    reason: str
    """One line saying what the verdict rests on."""


@dataclass(frozen=True, slots=True)
class MappingObservation:
    server: Address
    mapped: Address


@dataclass(frozen=True, slots=True)
class FilteringProbe:
    """Outcomes of the RFC 5780 filtering tests on one socket: True if the
    answer arrived, False if it timed out, None if not run (or the server
    cannot change its address)."""

    change_ip_and_port: bool | None = None
    change_port: bool | None = None


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def classify_mapping(observations: Sequence[MappingObservation], local: Address,
                     local_ips: Iterable[str] = ()) -> Verdict:
    """Mapping behaviour of the socket bound at ``local`` (its IP may be the
    wildcard; ``local_ips`` are the machine's own addresses)."""
    latest: dict[Address, Address] = {}
    for obs in observations:
        latest[obs.server] = obs.mapped
    if not latest:
        return Verdict(Behaviour.UNKNOWN, "no STUN server has answered")
    own = set(local_ips) | {local[0]}
    if any(mapped[0] in own and mapped[1] == local[1] for mapped in latest.values()):
        return Verdict(Behaviour.NO_NAT, "a server saw our own address and port")
    if len(latest) < 2:
        (server, _), = latest.items()
        return Verdict(Behaviour.UNKNOWN,
                       f"only {format_address(server)} answered; two servers are needed")
    servers = sorted(latest)
    if len(set(latest.values())) == 1:
        if len({server[0] for server in servers}) < 2:
            return Verdict(Behaviour.UNKNOWN, "one mapping, but every server has the same IP "
                                              "(address-dependent mapping not ruled out)")
        return Verdict(Behaviour.ENDPOINT_INDEPENDENT,
                       f"{len(servers)} servers saw the same mapping")
    same_ip_pairs = [(a, b) for i, a in enumerate(servers) for b in servers[i + 1:]
                     if a[0] == b[0]]
    if any(latest[a] != latest[b] for a, b in same_ip_pairs):
        return Verdict(Behaviour.ADDRESS_AND_PORT_DEPENDENT,
                       "two ports of one server IP saw different mappings")
    if same_ip_pairs:
        return Verdict(Behaviour.ADDRESS_DEPENDENT,
                       "mappings differ per server IP but not per port")
    return Verdict(Behaviour.ENDPOINT_DEPENDENT,
                   f"{len(servers)} servers saw {len(set(latest.values()))} different mappings")


def classify_filtering(probe: FilteringProbe) -> Verdict:
    if probe.change_ip_and_port:
        return Verdict(Behaviour.ENDPOINT_INDEPENDENT,
                       "an answer from another IP and port got through")
    if probe.change_ip_and_port is None:
        return Verdict(Behaviour.UNKNOWN, "no server could answer from another address")
    if probe.change_port:
        return Verdict(Behaviour.ADDRESS_DEPENDENT,
                       "only an answer from the server's IP (another port) got through")
    if probe.change_port is None:
        return Verdict(Behaviour.UNKNOWN,
                       "answers from another IP are filtered; the port test did not run")
    return Verdict(Behaviour.ADDRESS_AND_PORT_DEPENDENT,
                   "answers from another IP or port are filtered")


def nat_type(mapping: Behaviour, filtering: Behaviour) -> str:
    """The classic name (full cone … symmetric) where the two allow one."""
    if mapping is Behaviour.NO_NAT:
        return "no NAT"
    if mapping in (Behaviour.ADDRESS_DEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT,
                   Behaviour.ENDPOINT_DEPENDENT):
        return "symmetric"
    if mapping is Behaviour.ENDPOINT_INDEPENDENT:
        return {
            Behaviour.ENDPOINT_INDEPENDENT: "full cone",
            Behaviour.ADDRESS_DEPENDENT: "restricted cone",
            Behaviour.ADDRESS_AND_PORT_DEPENDENT: "port-restricted cone",
        }.get(filtering, "cone (filtering unknown)")
    return "unknown"


@dataclass(frozen=True, slots=True)
class PublicAddress:
    address: Address
    sources: tuple[str, ...]
    """How it was learnt: ``stun 203.0.113.10:3478``, ``identify (2 peers)``."""


def public_addresses(stun: Iterable[tuple[Address, Address]],
                     identify: Iterable[tuple[Address, int]]) -> list[PublicAddress]:
    """Our addresses as others see them: ``stun`` pairs (server, mapped)
    and ``identify`` pairs (observed, number of peers reporting it); the
    best attested first."""
    sources: dict[Address, list[str]] = {}
    for server, mapped in stun:
        label = f"stun {format_address(server)}"
        entry = sources.setdefault(mapped, [])
        if label not in entry:
            entry.append(label)
    for observed, reporters in identify:
        word = "peer" if reporters == 1 else "peers"
        sources.setdefault(observed, []).append(f"identify ({reporters} {word})")
    ranked = sorted(sources.items(), key=lambda item: (-len(item[1]), item[0]))
    return [PublicAddress(addr, tuple(labels)) for addr, labels in ranked]
