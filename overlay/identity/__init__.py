"""Keys, peer IDs, key files, signed envelopes and peer records (pure)."""

from overlay.identity.keys import (
    EcdsaPrivateKey,
    EcdsaPublicKey,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    KeyType,
    PrivateKey,
    PublicKey,
    RsaPrivateKey,
    RsaPublicKey,
    Secp256k1PrivateKey,
    Secp256k1PublicKey,
    private_key_from_protobuf,
    public_key_from_protobuf,
    public_key_from_raw,
)
from overlay.identity.peer_id import PeerId

__all__ = [
    "EcdsaPrivateKey",
    "EcdsaPublicKey",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "KeyType",
    "PeerId",
    "PrivateKey",
    "PublicKey",
    "RsaPrivateKey",
    "RsaPublicKey",
    "Secp256k1PrivateKey",
    "Secp256k1PublicKey",
    "private_key_from_protobuf",
    "public_key_from_protobuf",
    "public_key_from_raw",
]
