"""libp2p keys: the ``PublicKey``/``PrivateKey`` protobuf and the four key
types of ``peer-ids.md`` (Ed25519, secp256k1, ECDSA, RSA), gathered in one
import.

Decoding goes through the generated ``keys_pb2`` module and then insists
that re-encoding reproduces the input, so a key that two implementations
would serialise differently is rejected instead of silently yielding a
second peer ID.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import InvalidKeyError
from overlay.identity.ec_keys import (
    EcdsaPrivateKey,
    EcdsaPublicKey,
    Secp256k1PrivateKey,
    Secp256k1PublicKey,
)
from overlay.identity.ed25519_keys import Ed25519PrivateKey, Ed25519PublicKey
from overlay.identity.key_base import (
    MAX_PRIVATE_KEY_PROTOBUF,
    MAX_PUBLIC_KEY_PROTOBUF,
    KeyType,
    PrivateKey,
    PublicKey,
    encode_key_message,
)
from overlay.identity.rsa_keys import (
    MAX_RSA_KEY_BITS,
    MIN_RSA_KEY_BITS,
    RsaPrivateKey,
    RsaPublicKey,
)
from overlay.wire.pb import keys_pb2

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
    if encode_key_message(key_type, raw) != bytes(data):
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
