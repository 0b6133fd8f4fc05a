"""Secure channels over raw byte streams: libp2p Noise (``/noise``).

``noise_state`` (the Noise framework objects), ``framing``, ``payload`` and
``noise`` (the libp2p handshake machine and transport ciphers) are pure;
``stream`` drives them over a ``ByteStream`` and ``upgrade`` runs the whole
connection upgrade (multistream ``/noise``, Noise, muxer selection).
"""

from overlay.secure.errors import (
    DecryptionFailed,
    HandshakeTimeout,
    InvalidHandshakePayload,
    InvalidIdentityKey,
    InvalidStaticKeySignature,
    NoiseHandshakeError,
    NoiseProtocolError,
    NonceExhausted,
    TruncatedFrame,
)
from overlay.secure.noise import (
    MAX_PLAINTEXT,
    PROTOCOL_ID,
    HandshakeComplete,
    NoiseHandshake,
    NoiseTransport,
    SendMessage,
)
from overlay.secure.payload import NoiseExtensions
from overlay.secure.stream import NoiseConfig, SecureStream, secure_inbound, secure_outbound
from overlay.secure.upgrade import (
    MuxerFactory,
    UpgradeConfig,
    Upgraded,
    upgrade_inbound,
    upgrade_outbound,
)

__all__ = [
    "MAX_PLAINTEXT",
    "MuxerFactory",
    "NoiseConfig",
    "SecureStream",
    "UpgradeConfig",
    "Upgraded",
    "secure_inbound",
    "secure_outbound",
    "upgrade_inbound",
    "upgrade_outbound",
    "PROTOCOL_ID",
    "DecryptionFailed",
    "HandshakeComplete",
    "HandshakeTimeout",
    "InvalidHandshakePayload",
    "InvalidIdentityKey",
    "InvalidStaticKeySignature",
    "NoiseExtensions",
    "NoiseHandshake",
    "NoiseHandshakeError",
    "NoiseProtocolError",
    "NoiseTransport",
    "NonceExhausted",
    "SendMessage",
    "TruncatedFrame",
]
