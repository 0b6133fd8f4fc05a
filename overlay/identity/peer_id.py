"""Peer IDs: the multihash of a serialized libp2p ``PublicKey``.

Keys whose protobuf is at most 42 bytes (Ed25519, secp256k1) are inlined as
an identity multihash, so the key can be recovered from the ID itself;
larger keys (RSA, ECDSA) are hashed with sha2-256.  Text is base58btc of
the multihash (``12D3KooW…``, ``Qm…``); CIDv1 text with the ``libp2p-key``
codec (``bafz…``, ``k51…``) is parsed as well, since the spec requires it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Final, Literal

import base58

from overlay.errors import InvalidKeyError, InvalidPeerId
from overlay.identity.keys import PublicKey, public_key_from_protobuf
from overlay.wire.varint import encode_uvarint

__all__ = [
    "PeerId",
    "IDENTITY_CODE",
    "SHA2_256_CODE",
    "LIBP2P_KEY_CODEC",
    "MAX_INLINE_KEY_LENGTH",
]

IDENTITY_CODE: Final = 0x00
SHA2_256_CODE: Final = 0x12
LIBP2P_KEY_CODEC: Final = 0x72
CID_VERSION_1: Final = 0x01
MAX_INLINE_KEY_LENGTH: Final = 42

# The longest valid multihash is an identity one: 0x00, 42, 42 key bytes.
_MAX_MULTIHASH_BYTES: Final = 2 + MAX_INLINE_KEY_LENGTH
# Generous bound on any text form (CID base32 of 46 bytes is 75 chars);
# checked before any big-integer base conversion runs.
_MAX_TEXT_LENGTH: Final = 128

_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_BASE36_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_BASE58_ALPHABET: Final = frozenset(base58.BITCOIN_ALPHABET.decode("ascii"))


def _check_multihash(mh: bytes) -> None:
    """Structural check only: code, length byte and digest size agree."""
    if len(mh) < 2:
        raise InvalidPeerId(f"peer ID multihash too short ({len(mh)} bytes)")
    if len(mh) > _MAX_MULTIHASH_BYTES:
        raise InvalidPeerId(f"peer ID multihash too long ({len(mh)} bytes)")
    code, length = mh[0], mh[1]
    if code == IDENTITY_CODE:
        if length > MAX_INLINE_KEY_LENGTH:
            raise InvalidPeerId(
                f"identity multihash of {length} bytes exceeds {MAX_INLINE_KEY_LENGTH}"
            )
    elif code == SHA2_256_CODE:
        if length != 32:
            raise InvalidPeerId(f"sha2-256 multihash must carry 32 bytes, not {length}")
    else:
        raise InvalidPeerId(f"unsupported multihash code 0x{code:02x} in peer ID")
    if len(mh) != 2 + length:
        raise InvalidPeerId(f"multihash declares {length} digest bytes but holds {len(mh) - 2}")


@dataclass(frozen=True, slots=True)
class PeerId:
    """A peer ID as its binary multihash.  Construction checks the
    multihash shape; ``from_bytes`` additionally parses an inlined key."""

    multihash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.multihash, bytes):
            object.__setattr__(self, "multihash", bytes(self.multihash))
        _check_multihash(self.multihash)

    # --- construction -------------------------------------------------------

    @classmethod
    def from_public_key(cls, public_key: PublicKey) -> PeerId:
        encoded = public_key.to_protobuf()
        if len(encoded) <= MAX_INLINE_KEY_LENGTH:
            return cls(bytes([IDENTITY_CODE]) + encode_uvarint(len(encoded)) + encoded)
        return cls(bytes([SHA2_256_CODE, 32]) + hashlib.sha256(encoded).digest())

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerId:
        """Validate a binary peer ID from the wire; an identity multihash
        must hold a parseable public key."""
        peer = cls(bytes(data))
        peer.extract_public_key()
        return peer

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse base58btc (``12D3KooW…``, ``Qm…``) or a CIDv1 with the
        ``libp2p-key`` codec in base32 (``b…``), base36 (``k…``), base16
        (``f…``) or base58btc (``z…``) multibase."""
        if not isinstance(text, str):
            raise InvalidPeerId(f"peer ID must be text, not {type(text).__name__}")
        if not text:
            raise InvalidPeerId("empty peer ID")
        if len(text) > _MAX_TEXT_LENGTH:
            raise InvalidPeerId(f"peer ID text of {len(text)} characters is too long")
        try:
            return cls.from_bytes(_text_to_multihash(text))
        except InvalidPeerId as exc:
            raise InvalidPeerId(f"invalid peer ID {_short(text)!r}: {exc}") from None

    # --- conversion ---------------------------------------------------------

    def to_bytes(self) -> bytes:
        return self.multihash

    def to_base58(self) -> str:
        return base58.b58encode(self.multihash).decode("ascii")

    def to_cid(self, base: Literal["base32", "base36"] = "base32") -> str:
        cid = bytes([CID_VERSION_1, LIBP2P_KEY_CODEC]) + self.multihash
        if base == "base32":
            return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")
        if base == "base36":
            return "k" + _b36encode(cid)
        raise ValueError(f"unsupported multibase {base!r}")

    def extract_public_key(self) -> PublicKey | None:
        """The inlined key of an identity peer ID, else None."""
        if self.multihash[0] != IDENTITY_CODE:
            return None
        try:
            return public_key_from_protobuf(self.multihash[2:])
        except InvalidKeyError as exc:
            raise InvalidPeerId(
                f"identity peer ID does not hold a valid public key: {exc}"
            ) from None

    def matches_public_key(self, public_key: PublicKey) -> bool:
        return PeerId.from_public_key(public_key) == self

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerId({self.to_base58()!r})"


def _text_to_multihash(text: str) -> bytes:
    if text[0] == "1" or text.startswith("Qm"):
        return _b58decode(text)
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        return _cid_multihash(_b32decode(body))
    if prefix in "kK":
        return _cid_multihash(_b36decode(body))
    if prefix in "fF":
        return _cid_multihash(_b16decode(body))
    if prefix == "z":
        return _cid_multihash(_b58decode(body))
    raise InvalidPeerId(
        "expected base58btc (12D3KooW…, Qm…) or a libp2p-key CID (bafz…, k51…)"
    )


def _short(text: str) -> str:
    return text if len(text) <= 20 else text[:17] + "..."


def _b58decode(text: str) -> bytes:
    bad = next((c for c in text if c not in _BASE58_ALPHABET), None)
    if bad is not None:
        raise InvalidPeerId(f"invalid base58btc character {bad!r}")
    return base58.b58decode(text)


def _b32decode(body: str) -> bytes:
    if not body.isascii() or not body.isalnum():
        raise InvalidPeerId("invalid base32")
    padded = body.upper() + "=" * (-len(body) % 8)
    try:
        return base64.b32decode(padded)
    except (binascii.Error, ValueError):
        raise InvalidPeerId("invalid base32") from None


def _b16decode(body: str) -> bytes:
    # bytes.fromhex would skip whitespace, so check the alphabet first.
    if len(body) % 2 or not set(body.lower()) <= _HEX_DIGITS:
        raise InvalidPeerId("invalid base16")
    return bytes.fromhex(body)


def _b36encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 36)
        digits.append(_BASE36_ALPHABET[rem])
    return "0" * zeros + "".join(reversed(digits))


def _b36decode(body: str) -> bytes:
    lowered = body.lower()
    if not lowered or any(c not in _BASE36_ALPHABET for c in lowered):
        raise InvalidPeerId("invalid base36")
    zeros = len(lowered) - len(lowered.lstrip("0"))
    number = int(lowered, 36)
    payload = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * zeros + payload


def _cid_multihash(cid: bytes) -> bytes:
    """Strip ``<version 1><codec 0x72>`` from a binary CID."""
    # Both version and codec are single-byte varints here.
    if len(cid) < 2 or cid[0] != CID_VERSION_1:
        raise InvalidPeerId("peer ID CID is not CIDv1")
    if cid[1] != LIBP2P_KEY_CODEC:
        raise InvalidPeerId(f"CID codec 0x{cid[1]:02x} is not libp2p-key (0x72)")
    return cid[2:]
