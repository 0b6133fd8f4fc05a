"""Keys, peer IDs, key files, signed envelopes and peer records (pure)."""

from overlay.identity.envelope import SignedEnvelope, open_envelope, seal
from overlay.identity.errors import (
    KeyFileError,
    KeyFileExists,
    KeyFileInsecure,
    KeyFileInvalid,
    KeyFileMissing,
    PeerRecordMismatch,
)
from overlay.identity.keyfile import create_private_key_file, load_private_key, save_private_key
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
from overlay.identity.peer_record import PeerRecord, open_peer_record, seal_peer_record

__all__ = [
    "EcdsaPrivateKey",
    "EcdsaPublicKey",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "KeyFileError",
    "KeyFileExists",
    "KeyFileInsecure",
    "KeyFileInvalid",
    "KeyFileMissing",
    "KeyType",
    "PeerId",
    "PeerRecord",
    "PeerRecordMismatch",
    "PrivateKey",
    "PublicKey",
    "RsaPrivateKey",
    "RsaPublicKey",
    "Secp256k1PrivateKey",
    "Secp256k1PublicKey",
    "SignedEnvelope",
    "create_private_key_file",
    "load_private_key",
    "open_envelope",
    "open_peer_record",
    "private_key_from_protobuf",
    "public_key_from_protobuf",
    "public_key_from_raw",
    "save_private_key",
    "seal",
    "seal_peer_record",
]
