"""The standard NAT topology of the overlay's multi-host tests.

    public switch 203.0.113.0/24
      ├── server   203.0.113.10
      ├── nat1     203.0.113.1  ── LAN 10.0.1.0/24 ── client   10.0.1.10
      └── nat2     203.0.113.2  ── LAN 10.0.2.0/24 ── client2  10.0.2.10  (optional)

The clients route only the public prefix through their NAT; public hosts
have no route to any private LAN, so a private address is unreachable from
the public side, as on the Internet.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.lab.lab import Lab, NatMode, Node
from overlay.lab.natkinds import NatKind

__all__ = ["PUBLIC_NET", "NatTopology", "build_nat_topology"]

PUBLIC_NET = "203.0.113.0/24"
"""TEST-NET-3 (RFC 5737): the lab's stand-in for the public Internet."""


@dataclass(frozen=True, slots=True)
class NatTopology:
    public: Node
    """The switch of the public segment."""
    server: Node
    nat1: Node
    client: Node
    nat2: Node | None
    client2: Node | None

    @property
    def server_ip(self) -> str:
        return self.server.address()

    @property
    def client_ip(self) -> str:
        return self.client.address()

    @property
    def nat1_public_ip(self) -> str:
        return self.nat1.address("public")


def _nat_lan(lab: Lab, public: Node, index: int,
             mode: NatMode | NatKind) -> tuple[Node, Node]:
    nat = lab.router(f"nat{index}")
    client = lab.host("client" if index == 1 else f"client{index}")
    lab.link(nat, public, f"203.0.113.{index}/24", a_ifname="public")
    lab.link(client, nat, f"10.0.{index}.10/24", f"10.0.{index}.1/24",
             a_ifname="lan", b_ifname="lan")
    lab.route(client, PUBLIC_NET, via=f"10.0.{index}.1")
    lab.nat(nat, "public", mode)
    return nat, client


def build_nat_topology(lab: Lab, *, second_lan: bool = False,
                       nat_mode: NatMode | NatKind = NatMode.CONE,
                       nat2_mode: NatMode | NatKind | None = None) -> NatTopology:
    """Build the topology above in ``lab``; ``nat2_mode`` defaults to
    ``nat_mode``.  A ``NatKind`` other than ``NONE`` works here too (with
    the short UDP timeouts); ``NONE`` needs routes this topology lacks (use
    ``matrix_topology``)."""
    public = lab.switch("public")
    server = lab.host("server")
    lab.link(server, public, "203.0.113.10/24", a_ifname="public")
    nat1, client = _nat_lan(lab, public, 1, nat_mode)
    nat2 = client2 = None
    if second_lan:
        nat2, client2 = _nat_lan(lab, public, 2, nat2_mode or nat_mode)
    return NatTopology(public, server, nat1, client, nat2, client2)
