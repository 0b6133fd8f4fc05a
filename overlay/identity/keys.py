"""libp2p keys: the ``PublicKey``/``PrivateKey`` protobuf envelope and the
four key types of ``peer-ids.md`` (Ed25519, secp256k1, ECDSA, RSA).

The envelope is encoded by hand because peer IDs hash its exact bytes: the
spec demands minimal varints, fields in tag order and no extra fields, and a
generic protobuf encoder promises none of that.  Decoding goes through the
generated ``keys_pb2`` module and then insists that re-encoding reproduces
the input, so a key that two implementations would serialise differently is
rejected instead of silently yielding a second peer ID.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import InvalidKeyError
from overlay.wire.pb import keys_pb2
from overlay.wire.varint import encode_uvarint

__all__ = [
    "KeyType",
    "PublicKey",
    "PrivateKey",
    "Ed25519PublicKey",
    "Ed25519PrivateKey",
    "Secp256k1PublicKey",
    "Secp256k1PrivateKey",
    "EcdsaPublicKey",
    "EcdsaPrivateKey",
    "RsaPublicKey",
    "RsaPrivateKey",
    "MAX_PUBLIC_KEY_PROTOBUF",
    "MAX_PRIVATE_KEY_PROTOBUF",
    "MIN_RSA_KEY_BITS",
    "MAX_RSA_KEY_BITS",
    "public_key_from_protobuf",
    "public_key_from_raw",
    "private_key_from_protobuf",
]

# A 8192-bit RSA SubjectPublicKeyInfo is about 1.1 KiB; anything near these
# limits is hostile, and parsing it would only cost us CPU.
MAX_PUBLIC_KEY_PROTOBUF: Final = 8 * 1024
MAX_PRIVATE_KEY_PROTOBUF: Final = 16 * 1024

# go-libp2p refuses RSA keys outside this range: below it signatures are
# forgeable, above it verification is slow enough to be a denial of service.
MIN_RSA_KEY_BITS: Final = 2048
MAX_RSA_KEY_BITS: Final = 8192

_ECDSA_CURVES: Final = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def _load_spki(raw: bytes, what: str) -> object:
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


class KeyType(IntEnum):
    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


def _encode_key_message(key_type: KeyType, data: bytes) -> bytes:
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
        return _encode_key_message(self.key_type, self.raw)

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
        return _encode_key_message(self.key_type, self._raw())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self.public_key().raw.hex()})"


# --- Ed25519 ---------------------------------------------------------------


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
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
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
            raise InvalidKeyError(f"Ed25519 private key must be 32, 64 or 96 bytes, got {len(data)}")
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


# --- ECDSA-family verification shared by secp256k1 and ECDSA ----------------


def _ec_verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (_CryptoInvalidSignature, ValueError):
        # cryptography raises ValueError for DER it cannot parse.
        return False
    return True


def _ec_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


# --- secp256k1 ---------------------------------------------------------------


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
        return _ec_sign(self._key, data)

    def public_key(self) -> Secp256k1PublicKey:
        return self._public

    def _raw(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")


# --- ECDSA (NIST curves) -------------------------------------------------------


class EcdsaPublicKey(PublicKey):
    """A P-256/P-384/P-521 key as a DER SubjectPublicKeyInfo."""

    __slots__ = ("_raw_bytes", "_key")

    def __init__(self, raw: bytes) -> None:
        key = _load_spki(raw, "ECDSA")
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
        key = _load_der_private(data, "ECDSA")
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


# --- RSA -------------------------------------------------------------------------


def _check_rsa_size(bits: int) -> None:
    if not MIN_RSA_KEY_BITS <= bits <= MAX_RSA_KEY_BITS:
        raise InvalidKeyError(
            f"RSA key of {bits} bits is outside {MIN_RSA_KEY_BITS}..{MAX_RSA_KEY_BITS}"
        )


class RsaPublicKey(PublicKey):
    """An RSA key as a DER SubjectPublicKeyInfo; PKCS#1 v1.5 over SHA-256."""

    __slots__ = ("_raw_bytes", "_key")

    def __init__(self, raw: bytes) -> None:
        key = _load_spki(raw, "RSA")
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
        key = _load_der_private(data, "RSA")
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


def _load_der_private(data: bytes, what: str) -> object:
    try:
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError(f"invalid {what} private key DER: {exc}") from None


# --- protobuf envelope -------------------------------------------------------------


def _parse_key_message(
    data: bytes, message: keys_pb2.PublicKey | keys_pb2.PrivateKey, limit: int, what: str
) -> tuple[KeyType, bytes]:
    if len(data) > limit:
        raise InvalidKeyError(f"{what} protobuf of {len(data)} bytes exceeds {limit}")
    try:
        message.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise InvalidKeyError(f"malformed {what} protobuf: {exc}") from None
    if not message.HasField("Type") or not message.HasField("Data"):
        # An unknown enum value lands in unknown fields, so Type looks unset.
        raise InvalidKeyError(f"{what} protobuf lacks a known Type or its Data")
    return KeyType(message.Type), bytes(message.Data)


def public_key_from_protobuf(data: bytes) -> PublicKey:
    """Parse a serialized ``PublicKey``; raise ``InvalidKeyError`` on
    malformed, non-canonical, oversized or unsupported input."""
    key_type, raw = _parse_key_message(
        data, keys_pb2.PublicKey(), MAX_PUBLIC_KEY_PROTOBUF, "PublicKey"
    )
    if _encode_key_message(key_type, raw) != bytes(data):
        raise InvalidKeyError("PublicKey protobuf is not canonically encoded")
    return public_key_from_raw(key_type, raw)


def public_key_from_raw(key_type: KeyType, raw: bytes) -> PublicKey:
    """Build a public key from its type and ``Data`` bytes."""
    if key_type is KeyType.ED25519:
        return Ed25519PublicKey(raw)
    if key_type is KeyType.SECP256K1:
        return Secp256k1PublicKey(raw)
    if key_type is KeyType.ECDSA:
        return EcdsaPublicKey(raw)
    return RsaPublicKey(raw)


def private_key_from_protobuf(data: bytes) -> PrivateKey:
    """Parse a serialized ``PrivateKey`` (a libp2p key file's contents)."""
    key_type, raw = _parse_key_message(
        data, keys_pb2.PrivateKey(), MAX_PRIVATE_KEY_PROTOBUF, "PrivateKey"
    )
    if key_type is KeyType.ED25519:
        return Ed25519PrivateKey.from_raw(raw)
    if key_type is KeyType.SECP256K1:
        return Secp256k1PrivateKey.from_raw(raw)
    if key_type is KeyType.ECDSA:
        return EcdsaPrivateKey.from_raw(raw)
    return RsaPrivateKey.from_raw(raw)
