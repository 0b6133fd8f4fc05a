"""The single error tree of overlay.

Local misuse (a bad argument, a call in the wrong state) and remote
violations (a peer sent something malformed or hostile) are different types,
as in h11: a RemoteProtocolError closes that stream or connection, never the
node.  Subsystems subclass these; callers catch the narrowest type that tells
them what to do.
"""

from __future__ import annotations

__all__ = [
    "OverlayError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "DecodeError",
    "MessageTooLarge",
    "InvalidKeyError",
    "InvalidSignature",
    "InvalidPeerId",
    "InvalidMultiaddr",
    "TransportError",
    "HandshakeError",
    "PeerIdMismatch",
    "DialError",
    "ConnectionClosed",
    "StreamReset",
    "StreamClosed",
    "LimitExceeded",
    "NegotiationError",
    "ProtocolNotSupported",
    "ConfigError",
]


class OverlayError(Exception):
    """Root of every error overlay raises on purpose."""


class LocalProtocolError(OverlayError):
    """We were asked to do something invalid (bad argument, wrong state)."""


class RemoteProtocolError(OverlayError):
    """The remote peer violated a protocol; the stream/connection is dropped."""


class DecodeError(RemoteProtocolError):
    """Bytes from the outside could not be decoded."""


class MessageTooLarge(DecodeError):
    """A length prefix or message exceeded the decoder's limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class InvalidKeyError(DecodeError):
    """A key could not be parsed or is of an unsupported type."""


class InvalidSignature(RemoteProtocolError):
    """A signature did not verify."""


class InvalidPeerId(DecodeError, ValueError):
    """Text or bytes are not a valid peer ID."""


class InvalidMultiaddr(LocalProtocolError, ValueError):
    """A multiaddr is malformed or unsupported; the message names the part."""


class TransportError(OverlayError):
    """A transport-level failure (socket, QUIC)."""


class HandshakeError(TransportError, RemoteProtocolError):
    """The libp2p TLS handshake failed."""


class PeerIdMismatch(HandshakeError):
    """The remote proved a different peer ID than the one dialed."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"dialed peer {expected} but the remote proved {actual}")
        self.expected = expected
        self.actual = actual


class DialError(TransportError):
    """A dial failed; the message says why."""


class ConnectionClosed(TransportError):
    """The connection is closed; no more streams can be opened or used."""


class StreamReset(TransportError):
    """The remote (or we) reset the stream."""


class StreamClosed(TransportError):
    """Writing to a stream whose send side was closed, or reading past EOF."""


class LimitExceeded(OverlayError):
    """A resource limit (connections, streams, storage quota) was hit."""


class NegotiationError(RemoteProtocolError):
    """multistream-select failed."""


class ProtocolNotSupported(NegotiationError):
    """The remote answered `na` to every protocol we proposed."""

    def __init__(self, protocols: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"remote supports none of {', '.join(protocols)}")
        self.protocols = tuple(protocols)


class ConfigError(LocalProtocolError, ValueError):
    """Configuration is invalid."""
