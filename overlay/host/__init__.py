"""The host: transports, connections, protocol handlers, peerstore; the ping
and identify services."""

from overlay.host.config import HostConfig
from overlay.host.connmgr import ConnectionManager
from overlay.host.events import HostListener
from overlay.host.host import Host, StreamHandler
from overlay.host.identify import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    IdentifyInfo,
    IdentifyMismatch,
    build_identify,
    parse_identify,
)
from overlay.host.identify_service import IdentifyService
from overlay.host.peerstore import ObservedAddrs, PeerInfo, Peerstore
from overlay.host.ping import PING_PROTOCOL, PingMismatch, PingService, Pong
from overlay.host.quic import EndpointFactory, QuicTransport
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import (
    DIRECT,
    RELAYED,
    Connection,
    ConnectionLimit,
    ConnectionOwner,
    Endpoint,
    Path,
    Transport,
)

__all__ = [
    "DIRECT",
    "RELAYED",
    "ConnectionLimit",
    "ConnectionOwner",
    "IdentifyService",
    "Path",
    "PingService",
    "Pong",
    "QuicTransport",
    "Transport",
    "IDENTIFY_PROTOCOL",
    "IDENTIFY_PUSH_PROTOCOL",
    "PING_PROTOCOL",
    "Connection",
    "ConnectionManager",
    "Endpoint",
    "EndpointFactory",
    "Host",
    "HostConfig",
    "HostListener",
    "IdentifyInfo",
    "IdentifyMismatch",
    "NegotiatedStream",
    "ObservedAddrs",
    "PeerInfo",
    "Peerstore",
    "PingMismatch",
    "StreamHandler",
    "build_identify",
    "parse_identify",
]
