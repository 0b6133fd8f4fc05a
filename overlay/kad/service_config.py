"""Configuration of the network service that drives the pure kad core."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from overlay.errors import InvalidMultiaddr, LocalProtocolError
from overlay.kad.handler import ServerConfig
from overlay.kad.lookup import ADAPTIVE_MAX_PATHS, LOOKUP_RETRIES, LookupConfig
from overlay.kad.providers import ProviderConfig
from overlay.kad.republish import RepublishConfig
from overlay.kad.routing import RoutingConfig
from overlay.kad.store import StoreConfig
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.negotiate import encode_message

__all__ = [
    "DEFAULT_KAD_PROTOCOL",
    "LOOKUP_RETRIES",
    "IPFS_KAD_PROTOCOL",
    "DhtMode",
    "KadServiceConfig",
]

DEFAULT_KAD_PROTOCOL = "/ovl/kad/1.0.0"
"""The overlay network's own DHT: its records never mix with IPFS's."""
IPFS_KAD_PROTOCOL = "/ipfs/kad/1.0.0"
"""The public libp2p DHT, used for interop."""

DhtMode = Literal["server", "client"]



@dataclass(frozen=True, slots=True)
class KadServiceConfig:
    """Everything the kad network service needs; defaults follow the spec."""

    protocol_id: str = DEFAULT_KAD_PROTOCOL
    """Protocol ID served and spoken (``/ipfs/kad/1.0.0`` for interop)."""
    mode: DhtMode = "server"
    """``server`` answers queries and advertises the protocol in identify;
    ``client`` only asks and never enters other peers' routing tables."""
    bootstrap: tuple[str, ...] = ()
    """Full multiaddrs (with ``/p2p/<id>``) contacted at start."""
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    """Routing-table parameters (k, IP diversity, refresh interval)."""
    lookup: LookupConfig = field(
        default_factory=lambda: LookupConfig(
            retries=LOOKUP_RETRIES, disjoint_paths=ADAPTIVE_MAX_PATHS, adaptive_paths=True
        )
    )
    """Lookup parameters (alpha, per-peer timeout, disjoint paths); three
    retries of a peer silent on an open connection (``LOOKUP_RETRIES``);
    adaptive disjoint paths: one path, up to ``ADAPTIVE_MAX_PATHS`` on
    evidence of lies (a GET or find-peer; a lookup of a bare key such as a
    PUT's or a refresh's has none and stays on one path)."""
    server: ServerConfig = field(default_factory=ServerConfig)
    """How many closer peers an answer carries."""
    store: StoreConfig = field(default_factory=StoreConfig)
    """Record store limits and TTL."""
    providers: ProviderConfig = field(default_factory=ProviderConfig)
    """Provider store limits and validity."""
    republish: RepublishConfig = field(default_factory=RepublishConfig)
    """Republish, re-replication and reprovide intervals."""
    request_timeout: float = 10.0
    """Ceiling in seconds for one request (dial, stream, answer) to one
    peer; the actual timeout is derived from measured round trips."""
    min_request_timeout: float = 0.5
    """Floor of the derived request timeout (see ``overlay.kad.rtt``)."""
    lookup_timeout: float = 60.0
    """Seconds a whole lookup may take; it then reports what it has."""
    get_quorum: int = 3
    """GET_VALUE stops after this many valid records (the local one counts)."""
    min_put_acks: int = 1
    """PUT_VALUE fails unless this many peers echoed the record."""
    inbound_idle_timeout: float = 30.0
    """Seconds an inbound stream may wait for its next request."""
    max_requests_per_stream: int = 256
    """Requests served on one inbound stream before it is reset."""
    max_inbound_streams: int = 64
    """Inbound kad streams served at once; more are reset at once."""
    lazy_negotiation: bool = True
    """Send the request together with the protocol proposal (saves a round trip)."""
    refresh_on_bootstrap: bool = True
    """After bootstrapping, run one lookup per bucket to fill the table."""
    background_concurrency: int = 4
    """Liveness checks, corrections and republishes run at once."""
    max_timer_delay: float = 60.0
    """Longest sleep of the maintenance timer (expiry sweeps run this often)."""

    def __post_init__(self) -> None:
        if self.mode not in ("server", "client"):
            raise ValueError(f"mode must be 'server' or 'client', not {self.mode!r}")
        if not self.protocol_id.startswith("/"):
            raise ValueError("protocol_id must start with '/'")
        try:
            encode_message(self.protocol_id)
        except LocalProtocolError as exc:
            raise ValueError(f"protocol_id cannot be negotiated: {exc}") from None
        for addr in self.bootstrap:
            try:
                parsed = parse_quic_multiaddr(addr)
            except InvalidMultiaddr as exc:
                raise ValueError(f"bootstrap address: {exc}") from None
            if parsed.peer_id is None:
                raise ValueError(f"bootstrap address {addr} needs a /p2p/<peer-id> suffix")
        for name in (
            "request_timeout",
            "min_request_timeout",
            "lookup_timeout",
            "inbound_idle_timeout",
            "max_timer_delay",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.min_request_timeout > self.request_timeout:
            raise ValueError("min_request_timeout must not exceed request_timeout")
        if self.get_quorum < 0:
            raise ValueError("get_quorum must not be negative")
        for name in (
            "min_put_acks",
            "max_requests_per_stream",
            "max_inbound_streams",
            "background_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
