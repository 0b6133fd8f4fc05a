"""Transport-specific errors, all inside the overlay error tree."""

from __future__ import annotations

from typing import Final

from overlay.errors import ConnectionClosed, HandshakeError, RemoteProtocolError, TransportError

__all__ = [
    "GOING_AWAY",
    "BindError",
    "CertificateError",
    "ClosedWithCode",
    "EndpointClosed",
    "InvalidToken",
    "PeerUnreachable",
]

GOING_AWAY: Final = 0x676F6E65
"""Application close code ("gone") a node sends to every peer when it shuts
down on purpose: the receiver may forget it at once instead of checking."""


class CertificateError(HandshakeError):
    """A peer's libp2p TLS certificate failed one of the checks of tls.md."""


class BindError(TransportError):
    """The UDP socket could not be bound (port busy, address not local…)."""


class InvalidToken(TransportError, RemoteProtocolError):
    """A client's Initial carried an address-validation token this endpoint
    did not issue to it, or one that expired (RFC 9000 section 8.1.3)."""


class EndpointClosed(ConnectionClosed):
    """The endpoint was closed; it no longer dials or accepts."""


class PeerUnreachable(ConnectionClosed):
    """ICMP port-unreachable came back for our packets: nothing listens at
    the peer's address any more (it crashed, or its port moved)."""


class ClosedWithCode(ConnectionClosed):
    """The connection ended with a CONNECTION_CLOSE the peer sent or one
    aioquic made up (the idle timeout: the peer fell silent), with its code
    and reason phrase."""

    def __init__(
        self, message: str, *, code: int, phrase: str, application: bool, by_peer: bool
    ) -> None:
        super().__init__(message)
        self.code = code
        self.phrase = phrase
        self.application = application
        """True for an application close (0x1d), False for a transport error."""
        self.by_peer = by_peer
        """The close came with the peer's packets (its CONNECTION_CLOSE, or
        a violation in them), so it was alive; False for the idle timeout."""

    @property
    def going_away(self) -> bool:
        """The peer announced that it is shutting down (see ``GOING_AWAY``)."""
        return self.by_peer and self.application and self.code == GOING_AWAY
