"""Rendezvous (libp2p/specs rendezvous/README.md, ``/rendezvous/1.0.0``):
peers register signed peer records under namespaces at a rendezvous point
(an introducer) and discover each other there.

Pure parts: ``messages`` (codec), ``registry`` (the point's state, limits
and cookies) and ``refresh`` (when a client re-registers).  The asyncio
drivers are ``service.RendezvousServer`` and ``client.RendezvousClient``
with its ``Refresher``; ``daemon_ext`` plugs both into the daemon.
docs/rendezvous.md describes the whole.
"""

from overlay.rendezvous.client import DiscoveredPeer, DiscoveryPage, Refresher, RendezvousClient
from overlay.rendezvous.errors import (
    InvalidNamespace,
    NoRendezvousPoint,
    RendezvousDecodeError,
    RendezvousMessageTooLarge,
    RendezvousRefused,
)
from overlay.rendezvous.messages import (
    DEFAULT_TTL,
    MAX_NAMESPACE_BYTES,
    MAX_TTL,
    PROTOCOL_ID,
    Discover,
    DiscoverResponse,
    MessageType,
    Register,
    RegisterResponse,
    RendezvousMessage,
    Status,
    Unregister,
    check_namespace,
    decode_message,
    encode_message,
)
from overlay.rendezvous.refresh import RefreshConfig, RefreshPlan
from overlay.rendezvous.registry import Registration, Registry, RegistryConfig, source_prefix
from overlay.rendezvous.service import RendezvousServer, ServerConfig

__all__ = [
    "DEFAULT_TTL",
    "MAX_NAMESPACE_BYTES",
    "MAX_TTL",
    "PROTOCOL_ID",
    "Discover",
    "DiscoverResponse",
    "DiscoveredPeer",
    "DiscoveryPage",
    "InvalidNamespace",
    "MessageType",
    "NoRendezvousPoint",
    "RefreshConfig",
    "RefreshPlan",
    "Refresher",
    "Register",
    "RegisterResponse",
    "Registration",
    "Registry",
    "RegistryConfig",
    "RendezvousClient",
    "RendezvousDecodeError",
    "RendezvousMessage",
    "RendezvousMessageTooLarge",
    "RendezvousRefused",
    "RendezvousServer",
    "ServerConfig",
    "Status",
    "Unregister",
    "check_namespace",
    "decode_message",
    "encode_message",
    "source_prefix",
]
