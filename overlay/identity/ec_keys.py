"""Elliptic-curve keys: secp256k1 (Bitcoin encoding) and ECDSA on the NIST
curves.  Both sign SHA-256 digests and encode signatures as DER."""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from overlay.errors import InvalidKeyError
from overlay.identity.key_base import (
    KeyType,
    PrivateKey,
    PublicKey,
    load_canonical_spki,
    load_der_private_key,
)

__all__ = [
    "Secp256k1PublicKey",
    "Secp256k1PrivateKey",
    "EcdsaPublicKey",
    "EcdsaPrivateKey",
]

_ECDSA_CURVES: Final = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _ec_verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (_CryptoInvalidSignature, ValueError):
        # cryptography raises ValueError for DER it cannot parse.
        return False
    return True


def _ec_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))



class Secp256k1PublicKey(PublicKey):
    """A 33-byte compressed SEC1 point.  go-libp2p re-compresses whatever it
    parses before deriving a peer ID, so accepting the 65-byte form would
    let one key yield two peer IDs; it is refused."""

    __slots__ = ("_raw_bytes", "_key")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 33 or raw[0] not in (2, 3):
            raise InvalidKeyError("secp256k1 public key must be a 33-byte compressed point")
        try:
            self._key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), raw)
        except ValueError as exc:
            raise InvalidKeyError(f"invalid secp256k1 point: {exc}") from None
        self._raw_bytes = bytes(raw)

    @property
    def key_type(self) -> KeyType:
        return KeyType.SECP256K1

    @property
    def raw(self) -> bytes:
        return self._raw_bytes

    def verify(self, data: bytes, signature: bytes) -> bool:
        return _ec_verify(self._key, data, signature)


class Secp256k1PrivateKey(PrivateKey):
    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256K1):
            raise InvalidKeyError("not a secp256k1 key")
        self._key = key
        self._public = Secp256k1PublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
        )

    @classmethod
    def generate(cls) -> Secp256k1PrivateKey:
        return cls(ec.generate_private_key(ec.SECP256K1()))

    @classmethod
    def from_raw(cls, data: bytes) -> Secp256k1PrivateKey:
        if len(data) != 32:
            raise InvalidKeyError(f"secp256k1 private key must be 32 bytes, got {len(data)}")
        try:
            key = ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP256K1())
        except ValueError as exc:
            raise InvalidKeyError(f"invalid secp256k1 scalar: {exc}") from None
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.SECP256K1

    def sign(self, data: bytes) -> bytes:
        # Verifiers built on libsecp256k1 (py-libp2p's coincurve) reject a
        # high S; go and rust libp2p sign with the low S, so we do too.
        r, s = decode_dss_signature(_ec_sign(self._key, data))
        if s > _SECP256K1_ORDER // 2:
            s = _SECP256K1_ORDER - s
        return encode_dss_signature(r, s)

    def public_key(self) -> Secp256k1PublicKey:
        return self._public

    def _raw(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")



class EcdsaPublicKey(PublicKey):
    """A P-256/P-384/P-521 key as a DER SubjectPublicKeyInfo."""

    __slots__ = ("_raw_bytes", "_key")

    def __init__(self, raw: bytes) -> None:
        key = load_canonical_spki(raw, "ECDSA")
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise InvalidKeyError("ECDSA key data holds a non-EC key")
        if not isinstance(key.curve, _ECDSA_CURVES):
            raise InvalidKeyError(f"unsupported ECDSA curve {key.curve.name}")
        self._key = key
        self._raw_bytes = bytes(raw)

    @property
    def key_type(self) -> KeyType:
        return KeyType.ECDSA

    @property
    def raw(self) -> bytes:
        return self._raw_bytes

    def verify(self, data: bytes, signature: bytes) -> bool:
        return _ec_verify(self._key, data, signature)


class EcdsaPrivateKey(PrivateKey):
    """Stored as DER SEC1 ``ECPrivateKey``, as go-libp2p writes it."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, _ECDSA_CURVES):
            raise InvalidKeyError(f"unsupported ECDSA curve {key.curve.name}")
        self._key = key
        self._public = EcdsaPublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @classmethod
    def generate(cls, curve: ec.EllipticCurve | None = None) -> EcdsaPrivateKey:
        return cls(ec.generate_private_key(curve or ec.SECP256R1()))

    @classmethod
    def from_raw(cls, data: bytes) -> EcdsaPrivateKey:
        key = load_der_private_key(data, "ECDSA")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidKeyError("ECDSA key data holds a non-EC key")
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.ECDSA

    def sign(self, data: bytes) -> bytes:
        return _ec_sign(self._key, data)

    def public_key(self) -> EcdsaPublicKey:
        return self._public

    def _raw(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

