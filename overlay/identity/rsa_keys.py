"""RSA keys: SubjectPublicKeyInfo public keys, PKCS#1 private keys and
PKCS#1 v1.5 signatures over SHA-256."""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from overlay.errors import InvalidKeyError
from overlay.identity.key_base import (
    KeyType,
    PrivateKey,
    PublicKey,
    load_canonical_spki,
    load_der_private_key,
)

__all__ = ["RsaPublicKey", "RsaPrivateKey", "MIN_RSA_KEY_BITS", "MAX_RSA_KEY_BITS"]

# go-libp2p refuses RSA keys outside this range: below it signatures are
# forgeable, above it verification is slow enough to be a denial of service.
MIN_RSA_KEY_BITS: Final = 2048
MAX_RSA_KEY_BITS: Final = 8192


def _check_rsa_size(bits: int) -> None:
    if not MIN_RSA_KEY_BITS <= bits <= MAX_RSA_KEY_BITS:
        raise InvalidKeyError(
            f"RSA key of {bits} bits is outside {MIN_RSA_KEY_BITS}..{MAX_RSA_KEY_BITS}"
        )


class RsaPublicKey(PublicKey):
    """An RSA key as a DER SubjectPublicKeyInfo; PKCS#1 v1.5 over SHA-256."""

    __slots__ = ("_raw_bytes", "_key")

    def __init__(self, raw: bytes) -> None:
        key = load_canonical_spki(raw, "RSA")
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidKeyError("RSA key data holds a non-RSA key")
        _check_rsa_size(key.key_size)
        self._key = key
        self._raw_bytes = bytes(raw)

    @property
    def key_type(self) -> KeyType:
        return KeyType.RSA

    @property
    def raw(self) -> bytes:
        return self._raw_bytes

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except (_CryptoInvalidSignature, ValueError):
            return False
        return True


class RsaPrivateKey(PrivateKey):
    """Stored as DER PKCS#1 ``RSAPrivateKey``."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        _check_rsa_size(key.key_size)
        self._key = key
        self._public = RsaPublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaPrivateKey:
        _check_rsa_size(bits)
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_raw(cls, data: bytes) -> RsaPrivateKey:
        key = load_der_private_key(data, "RSA")
        if not isinstance(key, rsa.RSAPrivateKey):
            raise InvalidKeyError("RSA key data holds a non-RSA key")
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.RSA

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def public_key(self) -> RsaPublicKey:
        return self._public

    def _raw(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

