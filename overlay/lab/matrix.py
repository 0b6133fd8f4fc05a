"""The hole-punching matrix topology (``interop/netns/matrix_topology.py`` has
the same builder for the matrix runner): an introducer on the public segment
and N peers, each behind a router of its own NAT kind, with an optional
user-space delay (and loss) on every router's WAN link.

    public switch 203.0.113.0/24
      ├── intro    203.0.113.10
      ├── nat1     203.0.113.101 ─[delay]─ LAN 10.0.1.0/24 ── peer1 10.0.1.10
      ├── nat2     203.0.113.102 ─[delay]─ LAN 10.0.2.0/24 ── peer2 10.0.2.10
      └── natK     203.0.113.10K ─[delay]─ 198.51.100.8K/29 ── peerK 198.51.100.(8K+2)
                                           (NatKind.NONE: a routed public LAN)

With ``wan_delay_ms=20`` a peer is 40 ms (RTT) from the introducer and
80 ms from another peer: a packet between peers crosses two WAN links.
Peers route the lab's public prefixes (203.0.113.0/24, 198.51.100.0/24)
through their router; public nodes route each ``NONE`` LAN through its
router.  Private LANs stay unreachable from outside, and no namespace has
a default route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from overlay.lab.delay import DelayedLink, delayed_link
from overlay.lab.lab import Lab, Node
from overlay.lab.natkinds import DEFAULT_UDP_TIMEOUTS, NatKind, UdpTimeouts

__all__ = [
    "INTRODUCER_IP",
    "MAX_PEERS",
    "MatrixPeer",
    "MatrixTopology",
    "PUBLIC_LAN_NET",
    "build_matrix_topology",
]

PUBLIC_NET = "203.0.113.0/24"
PUBLIC_LAN_NET = "198.51.100.0/24"
"""TEST-NET-2, carved into /29s for the LANs of ``NatKind.NONE`` peers."""
INTRODUCER_IP = "203.0.113.10"
MAX_PEERS = 30


@dataclass(frozen=True, slots=True)
class MatrixPeer:
    index: int
    """1-based: ``nat<index>``, ``peer<index>``."""
    kind: NatKind
    nat: Node
    client: Node
    wan: DelayedLink | None
    """The forwarder on the router's WAN link (None without delay)."""

    @property
    def client_ip(self) -> str:
        return self.client.address("lan")

    @property
    def public_ip(self) -> str:
        """Where the public side sees this peer's flows come from."""
        return self.client_ip if self.kind is NatKind.NONE else self.nat.address("public")


@dataclass(slots=True)
class MatrixTopology:
    public: Node
    """The switch of the public segment."""
    introducer: Node
    peers: list[MatrixPeer]
    wan_delay_ms: float
    public_routes: list[tuple[str, str]] = field(default_factory=list)
    """(prefix, via): what a public node needs to reach the ``NONE`` LANs."""
    _next_public: int = 11

    @property
    def introducer_ip(self) -> str:
        return self.introducer.address("public")

    def add_public_host(self, lab: Lab, name: str, ip: str | None = None) -> Node:
        """Another host on the public segment (a responder, a relay), with
        the routes to the ``NONE`` LANs; addresses from 203.0.113.11 up
        unless given."""
        if ip is None:
            ip = f"203.0.113.{self._next_public}"
            self._next_public += 1
        node = lab.host(name)
        lab.link(node, self.public, f"{ip}/24", a_ifname="public")
        for prefix, via in self.public_routes:
            lab.route(node, prefix, via)
        return node


def _lan(index: int, kind: NatKind) -> tuple[str, str, int]:
    """(router address, client address, prefix length) of peer ``index``'s LAN."""
    if kind is NatKind.NONE:
        base = ipaddress.IPv4Address("198.51.100.0") + 8 * index
        return str(base + 1), str(base + 2), 29
    return f"10.0.{index}.1", f"10.0.{index}.10", 24


def build_matrix_topology(lab: Lab, kinds: Sequence[NatKind], *, wan_delay_ms: float = 0.0,
                          wan_loss: float = 0.0, seed: int = 0,
                          udp_timeouts: UdpTimeouts | None = DEFAULT_UDP_TIMEOUTS,
                          ) -> MatrixTopology:
    """Build the topology above with one peer per entry of ``kinds`` (a kind
    may repeat).  ``wan_delay_ms`` > 0 or ``wan_loss`` > 0 puts a forwarder
    (``delay.delayed_link``) on each router's WAN link, seeded with
    ``seed + index``; ``udp_timeouts`` go to every NAT router."""
    if not 1 <= len(kinds) <= MAX_PEERS:
        raise ValueError(f"1..{MAX_PEERS} peers, not {len(kinds)}")
    public = lab.switch("public")
    introducer = lab.host("intro")
    lab.link(introducer, public, f"{INTRODUCER_IP}/24", a_ifname="public")
    routers: list[tuple[int, NatKind, Node, Node, DelayedLink | None]] = []
    for index, kind in enumerate(kinds, 1):
        nat = lab.router(f"nat{index}")
        client = lab.host(f"peer{index}")
        wan_ip = f"203.0.113.{100 + index}/24"
        wan: DelayedLink | None = None
        if wan_delay_ms > 0 or wan_loss > 0:
            wan = delayed_link(lab, nat, public, wan_ip, delay_ms=wan_delay_ms, loss=wan_loss,
                               seed=seed + index, a_ifname="public", b_ifname=f"nat{index}",
                               name=f"wan{index}")
        else:
            lab.link(nat, public, wan_ip, a_ifname="public")
        gateway, client_ip, plen = _lan(index, kind)
        lab.link(client, nat, f"{client_ip}/{plen}", f"{gateway}/{plen}",
                 a_ifname="lan", b_ifname="lan")
        lab.route(client, PUBLIC_NET, via=gateway)
        lab.route(client, PUBLIC_LAN_NET, via=gateway)
        routers.append((index, kind, nat, client, wan))
    public_routes = [(str(ipaddress.IPv4Network(f"{_lan(index, kind)[0]}/29", strict=False)),
                      f"203.0.113.{100 + index}")
                     for index, kind, *_ in routers if kind is NatKind.NONE]
    for prefix, via in public_routes:
        lab.route(introducer, prefix, via)
    peers = []
    for index, kind, nat, client, wan in routers:
        for prefix, via in public_routes:
            if via != nat.address("public"):
                lab.route(nat, prefix, via)
        lab.nat(nat, "public", kind, udp_timeouts=udp_timeouts)
        peers.append(MatrixPeer(index, kind, nat, client, wan))
    return MatrixTopology(public, introducer, peers, wan_delay_ms, public_routes)
