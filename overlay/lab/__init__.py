"""Network-namespace labs: hosts, routers, switches, veth links, nftables
NAT of every kind and user-space delay, built per run and deleted
afterwards, plus real ``overlay`` daemons inside them.

``overlay demo --nat`` runs on this, and so do the netns tests
(``interop/netns`` re-exports these modules under their old names).
Everything here needs root, ``ip`` and ``nft``; ``require_lab()`` says
which is missing.
"""

from overlay.lab.delay import DelayedLink, delayed_link
from overlay.lab.lab import (
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
from overlay.lab.matrix import MatrixPeer, MatrixTopology, build_matrix_topology
from overlay.lab.natkinds import DEFAULT_UDP_TIMEOUTS, NatKind, UdpTimeouts, read_udp_timeouts
from overlay.lab.topology import PUBLIC_NET, NatTopology, build_nat_topology

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
