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
from netns.topology import PUBLIC_NET, NatTopology, build_nat_topology

__all__ = [
    "DEFAULT_PREFIX",
    "PUBLIC_NET",
    "REQUIRED_TOOLS",
    "CommandFailed",
    "Lab",
    "LabError",
    "LabProcess",
    "LabUnavailable",
    "NatMode",
    "NatTopology",
    "Node",
    "NodeKind",
    "ToolMissing",
    "build_nat_topology",
    "cleanup_stale",
    "lab_namespaces",
    "require_lab",
]
