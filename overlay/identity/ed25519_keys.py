"""Ed25519 keys, the default host key type of libp2p."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from overlay.errors import InvalidKeyError
from overlay.identity.key_base import KeyType, PrivateKey, PublicKey

__all__ = ["Ed25519PublicKey", "Ed25519PrivateKey"]


class Ed25519PublicKey(PublicKey):
    __slots__ = ("_raw_bytes", "_key")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise InvalidKeyError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise InvalidKeyError(f"invalid Ed25519 public key: {exc}") from None
        self._raw_bytes = bytes(raw)

    @property
    def key_type(self) -> KeyType:
        return KeyType.ED25519

    @property
    def raw(self) -> bytes:
        return self._raw_bytes

    def verify(self, data: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self._key.verify(signature, data)
        except _CryptoInvalidSignature:
            return False
        return True


class Ed25519PrivateKey(PrivateKey):
    __slots__ = ("_key", "_public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public = Ed25519PublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519PrivateKey:
        if len(seed) != 32:
            raise InvalidKeyError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_raw(cls, data: bytes) -> Ed25519PrivateKey:
        """Accept seed‖public (64, current), seed‖public‖public (96, old
        go-libp2p) or a bare 32-byte seed; the stored public half must match."""
        if len(data) == 32:
            return cls.from_seed(data)
        if len(data) == 96:
            if data[32:64] != data[64:96]:
                raise InvalidKeyError("legacy 96-byte Ed25519 key has mismatched public halves")
            data = data[:64]
        if len(data) != 64:
            raise InvalidKeyError(
                f"Ed25519 private key must be 32, 64 or 96 bytes, got {len(data)}"
            )
        key = cls.from_seed(data[:32])
        if key._public.raw != data[32:]:
            raise InvalidKeyError("Ed25519 private key does not match its embedded public key")
        return key

    @property
    def key_type(self) -> KeyType:
        return KeyType.ED25519

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def _raw(self) -> bytes:
        seed = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return seed + self._public.raw

