"""NAT kinds (RFC 4787 behaviours) built with nftables in a router namespace.

Each ``NatKind`` is one combination of mapping and filtering that hole
punching has to cope with.  ``nat_ruleset`` writes the nftables table for
it; ``apply_nat`` loads it into a router and sets the namespace's UDP
conntrack timeouts (``nf_conntrack_udp_timeout*`` are per network
namespace, measured on kernel 6.18: a value written in one namespace leaves
the root namespace's alone).

What every translating kind shares:

- ``masquerade`` keeps the inside source port while it is free, so the
  cone kinds map one inside socket to one public port towards every
  destination (endpoint-independent mapping);
- conntrack admits replies, which is address-and-port-dependent filtering;
  the cone kinds widen it with a DNAT from the mapped port back to the
  inside socket, found in a dynamic map the outbound packets keep fresh;
- unsolicited packets that no rule forwards are dropped in the router's
  input hook, *before* conntrack confirms them.  Without that, each such
  packet leaves an ``[UNREPLIED]`` entry (peer → public:port) behind, and
  when the inside host then sends to that peer, masquerade finds the tuple
  taken and picks another port: the "cone" turns symmetric exactly when
  both sides of a hole punch send at once.  Home routers drop those
  packets too.

Only UDP gets the cone DNAT and the sequential allocation; TCP and ICMP
get plain conntrack behaviour (port-restricted, or random ports for the
random symmetric kind).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overlay.lab.lab import Lab, Node

__all__ = [
    "DEFAULT_UDP_TIMEOUTS",
    "KERNEL_UDP_TIMEOUTS",
    "SEQUENTIAL_PORT_BASE",
    "SEQUENTIAL_PORT_SPAN",
    "NatKind",
    "UdpTimeouts",
    "Flow",
    "apply_nat",
    "conntrack_udp_flows",
    "nat_ruleset",
    "read_udp_timeouts",
    "set_udp_timeouts",
]

SEQUENTIAL_PORT_BASE = 20000
"""First public port the sequential symmetric NAT hands out."""
SEQUENTIAL_PORT_SPAN = 1024
"""It counts up through this many ports, then wraps."""
TABLE = "lab_nat"


class NatKind(enum.Enum):
    """A NAT's behaviour towards UDP, in RFC 4787 terms (``mapping``,
    ``filtering``) and by its classic name (``classic``)."""

    NONE = "none"
    """Routed, no translation, no filtering: a public host behind a router."""
    FULL_CONE = "full-cone"
    """Endpoint-independent mapping and filtering."""
    RESTRICTED_CONE = "restricted-cone"
    """Endpoint-independent mapping, address-dependent filtering."""
    PORT_RESTRICTED_CONE = "port-restricted-cone"
    """Endpoint-independent mapping, address-and-port-dependent filtering."""
    SYMMETRIC_RANDOM = "symmetric-random"
    """A random public port per destination (``masquerade random-fully``)."""
    SYMMETRIC_SEQUENTIAL = "symmetric-sequential"
    """A public port per destination, counting up by one per new flow
    through the NAT (from ``SEQUENTIAL_PORT_BASE``)."""

    @property
    def translates(self) -> bool:
        return self is not NatKind.NONE

    @property
    def mapping(self) -> str:
        """``overlay.nat.behaviour.Behaviour`` value of the mapping."""
        if self is NatKind.NONE:
            return "no-nat"
        if self in (NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_SEQUENTIAL):
            return "endpoint-dependent"
        return "endpoint-independent"

    @property
    def filtering(self) -> str:
        """``Behaviour`` value of the filtering (``no-nat`` without NAT)."""
        return {
            NatKind.NONE: "no-nat",
            NatKind.FULL_CONE: "endpoint-independent",
            NatKind.RESTRICTED_CONE: "address-dependent",
        }.get(self, "address-and-port-dependent")

    @property
    def allocation(self) -> str:
        """How public ports are chosen: ``none`` (no NAT), ``preserving``
        (the inside port while it is free), ``random`` or ``sequential``."""
        return {
            NatKind.NONE: "none",
            NatKind.SYMMETRIC_RANDOM: "random",
            NatKind.SYMMETRIC_SEQUENTIAL: "sequential",
        }.get(self, "preserving")

    @property
    def classic(self) -> str:
        """The name ``overlay nat`` reports (``overlay.nat.behaviour.nat_type``)."""
        return {
            NatKind.NONE: "no NAT",
            NatKind.FULL_CONE: "full cone",
            NatKind.RESTRICTED_CONE: "restricted cone",
            NatKind.PORT_RESTRICTED_CONE: "port-restricted cone",
        }.get(self, "symmetric")


@dataclass(frozen=True, slots=True)
class UdpTimeouts:
    """Seconds a UDP mapping lives without traffic.

    ``unreplied``: ``nf_conntrack_udp_timeout``, for a flow that has seen
    no answer (and for every flow in its first 2 s).  ``stream``:
    ``nf_conntrack_udp_timeout_stream``, for a flow that has; the cone
    kinds' DNAT entries live this long after the last outbound packet.
    Kernel defaults are 30 and 120.
    """

    unreplied: int = 30
    stream: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.unreplied <= 3600 or not 1 <= self.stream <= 3600:
            raise ValueError(f"UDP timeouts must be 1..3600 s, not {self}")


DEFAULT_UDP_TIMEOUTS = UdpTimeouts()
"""The lab's default: short, so that tests see mappings expire."""
KERNEL_UDP_TIMEOUTS = UdpTimeouts(30, 120)

_UDP_TIMEOUT_KEYS = ("net/netfilter/nf_conntrack_udp_timeout",
                     "net/netfilter/nf_conntrack_udp_timeout_stream")


def nat_ruleset(kind: NatKind, public_ifname: str, public_ip: str, *,
                block_inbound: bool = True,
                timeouts: UdpTimeouts = DEFAULT_UDP_TIMEOUTS) -> str:
    """The nftables table ``lab_nat`` for ``kind`` on a router whose
    public interface is ``public_ifname`` with address ``public_ip``.

    ``block_inbound`` drops new flows arriving on the public interface that
    no DNAT of the kind admits (a home router); without it they are
    forwarded when a route exists.
    """
    pub = f'"{public_ifname}"'
    ip = str(ipaddress.IPv4Address(public_ip))
    if kind is NatKind.NONE:
        return (f"table ip {TABLE} {{\n"
                "    chain forward {\n"
                "        type filter hook forward priority filter; policy accept;\n"
                "    }\n"
                "}\n")
    sets: list[str] = []
    post: list[str] = []
    pre: list[str] = []
    track: list[str] = []
    if kind is NatKind.SYMMETRIC_RANDOM:
        post.append(f"oifname {pub} masquerade fully-random")
    elif kind is NatKind.SYMMETRIC_SEQUENTIAL:
        # A nat chain sees only the first packet of a flow, so the counter
        # moves once per new mapping: the next flow gets the next port.  The
        # map turns the count into a port: nft 1.0.6 hands numgen's value
        # to snat in host byte order (`offset 20000` gave port 8270).
        ports = ", ".join(f"{n} : {SEQUENTIAL_PORT_BASE + n}"
                          for n in range(SEQUENTIAL_PORT_SPAN))
        post.append(f"oifname {pub} meta l4proto udp snat ip to {ip} : numgen inc mod "
                    f"{SEQUENTIAL_PORT_SPAN} map {{ {ports} }}")
        post.append(f"oifname {pub} masquerade")
    else:
        post.append(f"oifname {pub} masquerade")
    if kind in (NatKind.FULL_CONE, NatKind.RESTRICTED_CONE):
        life = f"timeout {timeouts.stream}s"
        # Public port -> inside socket, refreshed by every packet leaving
        # (after srcnat, so `udp sport` is already the public port).  Which
        # end is inside depends on who opened the flow.
        sets.append("map inside {\n"
                    "        type inet_service : ipv4_addr . inet_service\n"
                    f"        flags dynamic,timeout; {life}; size 65535;\n"
                    "    }")
        track.append(f"oifname {pub} ct direction original update @inside "
                     f"{{ udp sport {life} : ct original ip saddr . ct original proto-src }}")
        track.append(f"oifname {pub} ct direction reply update @inside "
                     f"{{ udp sport {life} : ct reply ip saddr . ct reply proto-src }}")
        if kind is NatKind.FULL_CONE:
            pre.append(f"iifname {pub} dnat ip to udp dport map @inside")
        else:
            sets.append("set peers {\n"
                        "        type inet_service . ipv4_addr\n"
                        f"        flags dynamic,timeout; {life}; size 65535;\n"
                        "    }")
            track.append(f"oifname {pub} update @peers {{ udp sport . ip daddr {life} }}")
            pre.append(f"iifname {pub} udp dport . ip saddr @peers "
                       "dnat ip to udp dport map @inside")
    forward = [f"iifname {pub} ct state established,related accept",
               f"iifname {pub} ct status dnat accept"]
    if block_inbound:
        forward.append(f"iifname {pub} drop")
    chains = [
        ("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post),
        ("forward", "type filter hook forward priority filter; policy accept;", forward),
        # Dropped before conntrack confirms it, so it leaves no entry that
        # would steal the port of a later outbound flow (module doc).
        ("input", "type filter hook input priority filter; policy accept;",
         [f"iifname {pub} ct state new meta l4proto {{ udp, tcp }} drop"]),
    ]
    if pre:
        chains.append(("prerouting", "type nat hook prerouting priority dstnat; policy accept;",
                       pre))
    if track:
        chains.append(("track", "type filter hook postrouting priority srcnat + 10; "
                                "policy accept;", track))
    lines = [f"table ip {TABLE} {{"]
    for text in sets:
        lines.append(f"    {text}")
    for name, head, rules in chains:
        lines.append(f"    chain {name} {{")
        lines.append(f"        {head}")
        lines.extend(f"        {rule}" for rule in rules)
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def set_udp_timeouts(lab: Lab, node: Node, timeouts: UdpTimeouts) -> None:
    """Write ``node``'s namespace's UDP conntrack timeouts."""
    for key, value in zip(_UDP_TIMEOUT_KEYS, (timeouts.unreplied, timeouts.stream)):
        lab._sysctl(node, key, str(value))


def read_udp_timeouts(lab: Lab, node: Node) -> UdpTimeouts:
    """The UDP conntrack timeouts in force in ``node``'s namespace."""
    done = lab.run(node, ["cat", *(f"/proc/sys/{key}" for key in _UDP_TIMEOUT_KEYS)])
    if done.returncode != 0:
        raise RuntimeError(f"cannot read UDP timeouts in {node.name}: {done.stderr}")
    unreplied, stream = (int(word) for word in done.stdout.split())
    return UdpTimeouts(unreplied, stream)


Flow = tuple[str, int, str, int]
"""One direction of a conntrack entry: (src ip, src port, dst ip, dst port)."""


def conntrack_udp_flows(lab: Lab, node: Node) -> list[tuple[Flow, Flow]]:
    """The UDP entries of ``conntrack -L`` in ``node``'s namespace, each as
    its (original, reply) directions.  For a flow an inside host opened
    through a NAT, the reply direction's destination is the public address
    the remote sees."""
    done = lab.run(node, ["conntrack", "-L", "-p", "udp"])
    if done.returncode != 0:
        raise RuntimeError(f"conntrack -L in {node.name}: {done.stderr}")
    flows = []
    for line in done.stdout.splitlines():
        fields: dict[str, list[str]] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields.setdefault(key, []).append(value)
        if len(fields.get("src", [])) != 2:
            continue
        src, dst, sport, dport = fields["src"], fields["dst"], fields["sport"], fields["dport"]
        flows.append(((src[0], int(sport[0]), dst[0], int(dport[0])),
                      (src[1], int(sport[1]), dst[1], int(dport[1]))))
    return flows


def apply_nat(lab: Lab, router: Node, public_ifname: str, kind: NatKind, *,
              block_inbound: bool = True,
              timeouts: UdpTimeouts | None = DEFAULT_UDP_TIMEOUTS) -> str:
    """Set ``router``'s UDP conntrack timeouts (unless ``timeouts`` is
    None: kernel defaults) and load ``kind``'s ruleset; return it."""
    from overlay.lab.lab import NodeKind, _run

    if router.kind is not NodeKind.ROUTER:
        raise ValueError(f"{router.name} is not a router")
    if public_ifname not in router.interfaces:
        raise ValueError(f"{router.name} has no interface {public_ifname!r}")
    if timeouts is not None:
        set_udp_timeouts(lab, router, timeouts)
    ruleset = nat_ruleset(kind, public_ifname, router.address(public_ifname),
                          block_inbound=block_inbound,
                          timeouts=timeouts or KERNEL_UDP_TIMEOUTS)
    _run(["ip", "netns", "exec", router.namespace, "nft", "-f", "-"], input_text=ruleset)
    return ruleset
