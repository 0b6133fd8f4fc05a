"""Configuration of the host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from overlay import AGENT_VERSION

if TYPE_CHECKING:
    from overlay.transport import TransportConfig

__all__ = ["HostConfig"]


@dataclass(frozen=True, slots=True)
class HostConfig:
    transport: TransportConfig | None = None
    """Settings of every QUIC endpoint the host creates; None = transport defaults."""

    agent_version: str = AGENT_VERSION
    """Sent in identify; libp2p convention is ``name/version``."""

    protocol_version: str = "ipfs/0.1.0"
    """Sent in identify; go-libp2p and rust-libp2p send this value."""

    max_connections: int = 512
    """Total live connections; the newest is closed beyond it."""

    max_connections_per_peer: int = 2
    """Per path (direct and relayed counted apart).  One is normal; a
    simultaneous dial from both sides (a hole punch) can briefly make two."""

    dial_timeout: float = 15.0
    """Seconds for a dial, handshake included."""

    negotiate_timeout: float = 10.0
    """Seconds for multistream-select on one stream, in either direction."""

    identify_timeout: float = 10.0
    """Seconds to request and read one identify message."""

    identify_max_size: int = 64 * 1024
    """Largest identify message accepted.  go-libp2p caps at 4 KiB per
    message but a signed peer record with many addresses can exceed that;
    64 KiB still bounds what a peer can make us buffer."""

    ping_timeout: float = 10.0
    """Seconds to wait for one ping echo."""

    ping_idle_timeout: float = 60.0
    """Seconds an inbound ping stream may stay silent before it is reset."""

    ping_max_inbound_streams: int = 2
    """Concurrent inbound ping streams per peer (the ping spec's limit)."""

    max_inbound_streams: int = 8192
    """Inbound streams open at once on all connections together, in
    negotiation or served; beyond it new ones are reset (limit hit
    ``host.streams_total``).  Each costs a few KiB of buffers and a task."""

    max_inbound_streams_per_source: int = 1024
    """Inbound streams from one source (the connection's IP /24 or /48,
    each loopback address apart, the relay for a relayed one), counted
    across all the peers there: peer IDs cost nothing to make.  Sources
    on our own listen address are exempt (a lab of many nodes on
    127.0.0.1)."""

    max_inbound_streams_per_peer: int = 256
    """Inbound streams from one peer across all its connections (QUIC
    limits each connection to ``TransportConfig.max_inbound_streams``;
    this bounds a peer that holds several)."""

    max_inbound_streams_per_protocol: int = 4096
    """Inbound streams of one protocol at once, from everyone; counted once
    negotiated, so idle streams of one protocol cannot take every slot."""

    refused_streams_burst: int = 64
    """Inbound streams one connection may have refused by the caps above
    in a burst (refilled at ``refused_streams_rate`` a second) before the
    connection itself is closed: a peer that keeps opening streams it is
    refused holds stream state for nothing, and closing the connection
    frees it all at once (limit hit ``host.refused_streams``)."""

    refused_streams_rate: float = 1.0
    """Refusals a second one connection may sustain without being closed."""

    max_peerstore_peers: int = 10_000
    """Peers remembered by the peerstore; the least recently updated go first."""

    max_addrs_per_peer: int = 32
    """Addresses remembered per peer."""

    max_protocols_per_peer: int = 128
    """Protocol IDs remembered per peer (and accepted from identify)."""

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_connections_per_peer",
            "ping_max_inbound_streams",
            "max_inbound_streams",
            "max_inbound_streams_per_source",
            "max_inbound_streams_per_peer",
            "max_inbound_streams_per_protocol",
            "refused_streams_burst",
            "max_peerstore_peers",
            "max_addrs_per_peer",
            "max_protocols_per_peer",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "dial_timeout",
            "negotiate_timeout",
            "identify_timeout",
            "ping_timeout",
            "ping_idle_timeout",
            "refused_streams_rate",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.identify_max_size < 1024:
            raise ValueError("identify_max_size must be at least 1024")
        if not self.agent_version or "\n" in self.agent_version:
            raise ValueError("agent_version must be a non-empty single line")
        if "\n" in self.protocol_version:
            raise ValueError("protocol_version must be a single line")
