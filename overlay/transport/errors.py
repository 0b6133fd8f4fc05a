"""Transport-specific errors, all inside the overlay error tree."""

from __future__ import annotations

from overlay.errors import ConnectionClosed, HandshakeError, TransportError

__all__ = ["BindError", "CertificateError", "EndpointClosed"]


class CertificateError(HandshakeError):
    """A peer's libp2p TLS certificate failed one of the checks of tls.md."""


class BindError(TransportError):
    """The UDP socket could not be bound (port busy, address not local…)."""


class EndpointClosed(ConnectionClosed):
    """The endpoint was closed; it no longer dials or accepts."""
