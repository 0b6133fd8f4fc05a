"""Network-namespace labs: hosts, routers, switches, veth links and nftables
NAT built per test and deleted afterwards (see README.md here)."""

from netns.lab import (
    DEFAULT_PREFIX,
    REQUIRED_TOOLS,
    CommandFailed,
    Lab,
    LabError,
    LabProcess,
    LabUnavailable,
    NatMode,
    Node,
    NodeKind,
    ToolMissing,
    cleanup_stale,
    lab_namespaces,
    require_lab,
)
from netns.delay import DelayedLink, delayed_link
from netns.matrix_topology import MatrixPeer, MatrixTopology, build_matrix_topology
from netns.natkinds import DEFAULT_UDP_TIMEOUTS, NatKind, UdpTimeouts, read_udp_timeouts
from netns.topology import PUBLIC_NET, NatTopology, build_nat_topology

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_UDP_TIMEOUTS",
    "PUBLIC_NET",
    "REQUIRED_TOOLS",
    "CommandFailed",
    "DelayedLink",
    "Lab",
    "LabError",
    "LabProcess",
    "LabUnavailable",
    "MatrixPeer",
    "MatrixTopology",
    "NatKind",
    "NatMode",
    "NatTopology",
    "Node",
    "NodeKind",
    "ToolMissing",
    "UdpTimeouts",
    "build_matrix_topology",
    "build_nat_topology",
    "cleanup_stale",
    "delayed_link",
    "lab_namespaces",
    "read_udp_timeouts",
    "require_lab",
]
