"""The host: endpoints, connections, protocol handlers, peerstore, ping and identify."""

from overlay.host.config import HostConfig
from overlay.host.connmgr import ConnectionManager
from overlay.host.events import HostListener
from overlay.host.host import EndpointFactory, Host, StreamHandler
from overlay.host.identify import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    IdentifyInfo,
    IdentifyMismatch,
    build_identify,
    parse_identify,
)
from overlay.host.peerstore import ObservedAddrs, PeerInfo, Peerstore
from overlay.host.ping import PING_PROTOCOL, PingMismatch
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection, Endpoint

__all__ = [
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
