"""The key abstractions shared by every key type: ``KeyType``, the
``PublicKey``/``PrivateKey`` interfaces and the deterministic encoding of
the libp2p key protobuf.

The protobuf is encoded by hand because peer IDs hash its exact bytes: the
spec demands minimal varints, fields in tag order and no extra fields, and a
generic protobuf encoder promises none of that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import IntEnum
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from overlay.errors import InvalidKeyError
from overlay.wire.varint import encode_uvarint

__all__ = [
    "KeyType",
    "PublicKey",
    "PrivateKey",
    "MAX_PUBLIC_KEY_PROTOBUF",
    "MAX_PRIVATE_KEY_PROTOBUF",
    "encode_key_message",
    "load_canonical_spki",
    "load_der_private_key",
]

# A 8192-bit RSA SubjectPublicKeyInfo is about 1.1 KiB; anything near these
# limits is hostile, and parsing it would only cost us CPU.
MAX_PUBLIC_KEY_PROTOBUF: Final = 8 * 1024
MAX_PRIVATE_KEY_PROTOBUF: Final = 16 * 1024


class KeyType(IntEnum):
    """The ``KeyType`` enum of the libp2p key protobuf."""

    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


def encode_key_message(key_type: KeyType, data: bytes) -> bytes:
    """The canonical ``PublicKey``/``PrivateKey`` protobuf bytes."""
    return (
        b"\x08"
        + encode_uvarint(int(key_type))
        + b"\x12"
        + encode_uvarint(len(data))
        + data
    )


class PublicKey(ABC):
    """A public key of any libp2p key type; equal when type and bytes are."""

    __slots__ = ()

    @property
    @abstractmethod
    def key_type(self) -> KeyType: ...

    @property
    @abstractmethod
    def raw(self) -> bytes:
        """The key bytes as carried in the protobuf ``Data`` field."""

    @abstractmethod
    def verify(self, data: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is valid for ``data``; never raises on a
        malformed signature."""

    def to_protobuf(self) -> bytes:
        """The deterministic ``PublicKey`` protobuf that peer IDs are made of."""
        return encode_key_message(self.key_type, self.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.key_type == other.key_type and self.raw == other.raw

    def __hash__(self) -> int:
        return hash((int(self.key_type), self.raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw.hex()})"


class PrivateKey(ABC):
    """A private key that can sign; ``repr`` never shows secret bytes."""

    __slots__ = ()

    @property
    @abstractmethod
    def key_type(self) -> KeyType: ...

    @abstractmethod
    def sign(self, data: bytes) -> bytes: ...

    @abstractmethod
    def public_key(self) -> PublicKey: ...

    @abstractmethod
    def _raw(self) -> bytes: ...

    def to_protobuf(self) -> bytes:
        """The ``PrivateKey`` protobuf, the on-disk key format of libp2p."""
        return encode_key_message(self.key_type, self._raw())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self.public_key().raw.hex()})"



def load_canonical_spki(raw: bytes, what: str) -> object:
    """Load a DER SubjectPublicKeyInfo that must be in canonical form.

    go-libp2p derives peer IDs from its own re-encoding of the key, so a
    key in any other encoding (compressed EC point, odd DER) would map to
    a different peer ID there than here; such keys are refused.
    """
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError(f"invalid {what} SubjectPublicKeyInfo: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise InvalidKeyError(f"{what} key data holds a {type(key).__name__}")
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != raw:
        raise InvalidKeyError(f"{what} SubjectPublicKeyInfo is not in canonical DER form")
    return key


def load_der_private_key(data: bytes, what: str) -> object:
    try:
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError(f"invalid {what} private key DER: {exc}") from None

