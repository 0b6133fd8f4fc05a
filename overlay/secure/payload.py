"""The libp2p Noise handshake payload: the identity key, its signature over
the Noise static key, and the extensions (stream muxers, WebTransport
certificate hashes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError as ProtobufDecodeError

from overlay.errors import InvalidKeyError, LocalProtocolError, MessageTooLarge
from overlay.identity.keys import PrivateKey, PublicKey, public_key_from_protobuf
from overlay.secure.errors import (
    InvalidHandshakePayload,
    InvalidIdentityKey,
    InvalidStaticKeySignature,
)
from overlay.wire.pb import noise_pb2

__all__ = [
    "STATIC_KEY_DOMAIN",
    "MAX_PAYLOAD",
    "NoiseExtensions",
    "HandshakePayload",
    "make_payload",
    "decode_payload",
    "verify_payload",
]

STATIC_KEY_DOMAIN: Final = b"noise-libp2p-static-key:"
# A payload rides in one Noise message (65535 bytes) behind the 48-byte
# encrypted static key and its own 16-byte tag.
MAX_PAYLOAD: Final = 65535 - 48 - 16
# Far beyond any real list; a longer one is hostile and only costs memory.
MAX_EXTENSION_ITEMS: Final = 32
MAX_EXTENSION_ITEM: Final = 1024


@dataclass(frozen=True, slots=True)
class NoiseExtensions:
    """What a peer offers beyond authentication; exposed only after the
    handshake verified who sent it."""

    stream_muxers: tuple[str, ...] = ()
    webtransport_certhashes: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class HandshakePayload:
    identity_key: PublicKey
    identity_sig: bytes
    extensions: NoiseExtensions | None


def make_payload(
    identity: PrivateKey, static_public: bytes, extensions: NoiseExtensions | None = None
) -> bytes:
    msg = noise_pb2.NoiseHandshakePayload(
        identity_key=identity.public_key().to_protobuf(),
        identity_sig=identity.sign(STATIC_KEY_DOMAIN + static_public),
    )
    if extensions is not None:
        msg.extensions.stream_muxers.extend(extensions.stream_muxers)
        msg.extensions.webtransport_certhashes.extend(extensions.webtransport_certhashes)
    data = msg.SerializeToString()
    if len(data) > MAX_PAYLOAD:
        raise LocalProtocolError(f"handshake payload of {len(data)} bytes exceeds {MAX_PAYLOAD}")
    return data


def decode_payload(data: bytes) -> HandshakePayload:
    """Parse (not verify) a payload; every failure is an ``InvalidHandshakePayload``."""
    if len(data) > MAX_PAYLOAD:
        raise MessageTooLarge(len(data), MAX_PAYLOAD)
    msg = noise_pb2.NoiseHandshakePayload()
    try:
        msg.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise InvalidHandshakePayload(f"undecodable handshake payload: {exc}") from None
    if not msg.identity_key:
        raise InvalidIdentityKey("handshake payload carries no identity key")
    try:
        key = public_key_from_protobuf(msg.identity_key)
    except InvalidKeyError as exc:
        raise InvalidIdentityKey(f"handshake payload identity key: {exc}") from None
    extensions = None
    if msg.HasField("extensions"):
        ext = msg.extensions
        muxers = tuple(ext.stream_muxers)
        hashes = tuple(ext.webtransport_certhashes)
        for items in (muxers, hashes):
            if len(items) > MAX_EXTENSION_ITEMS or any(
                len(item) > MAX_EXTENSION_ITEM for item in items
            ):
                raise InvalidHandshakePayload("handshake payload extensions exceed their limits")
        extensions = NoiseExtensions(muxers, hashes)
    return HandshakePayload(key, msg.identity_sig, extensions)


def verify_payload(payload: HandshakePayload, remote_static: bytes) -> None:
    if not payload.identity_key.verify(STATIC_KEY_DOMAIN + remote_static, payload.identity_sig):
        raise InvalidStaticKeySignature(
            "the identity key's signature over the Noise static key does not verify"
        )
