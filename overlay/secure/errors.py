"""Errors of the Noise secure channel, placed in overlay's one error tree.

Everything a remote can cause is a ``RemoteProtocolError`` (the connection
is dropped, never the node); a failure before the handshake completed is
also a ``HandshakeError``, so dialers that already catch the QUIC/TLS
handshake errors catch these too.
"""

from __future__ import annotations

from overlay.errors import (
    HandshakeError,
    InvalidKeyError,
    InvalidSignature,
    LocalProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "NoiseProtocolError",
    "NoiseHandshakeError",
    "HandshakeTimeout",
    "InvalidHandshakePayload",
    "InvalidIdentityKey",
    "InvalidStaticKeySignature",
    "DecryptionFailed",
    "TruncatedFrame",
    "NonceExhausted",
]


class NoiseProtocolError(RemoteProtocolError):
    """The remote broke the Noise protocol (handshake or transport phase)."""


class NoiseHandshakeError(NoiseProtocolError, HandshakeError):
    """The Noise handshake failed because of what the remote sent (or did not)."""


class HandshakeTimeout(NoiseHandshakeError):
    """The handshake did not complete within its deadline."""


class InvalidHandshakePayload(NoiseHandshakeError):
    """The decrypted handshake payload is not a valid NoiseHandshakePayload."""


class InvalidIdentityKey(InvalidHandshakePayload, InvalidKeyError):
    """The payload's identity key cannot be parsed or is of an unknown type."""


class InvalidStaticKeySignature(NoiseHandshakeError, InvalidSignature):
    """The identity key did not sign the Noise static key it came with."""


class DecryptionFailed(NoiseProtocolError):
    """A transport message failed authentication (tampered, reordered or
    encrypted under another key)."""


class TruncatedFrame(NoiseProtocolError):
    """The stream ended inside a length-prefixed Noise message."""


class NonceExhausted(LocalProtocolError):
    """2^64-1 messages were sent or received under one key; Noise forbids more."""
