"""Signed envelopes (libp2p RFC 0002): a payload, its type and the signer's
public key, signed under a domain string so that a signature made for one
purpose can never be replayed for another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import DecodeError, InvalidSignature, LocalProtocolError, MessageTooLarge
from overlay.identity.keys import PrivateKey, PublicKey, public_key_from_protobuf
from overlay.identity.peer_id import PeerId
from overlay.wire.pb import envelope_pb2
from overlay.wire.varint import encode_uvarint

__all__ = [
    "MAX_ENVELOPE_SIZE",
    "SignedEnvelope",
    "seal",
    "open_envelope",
    "signing_input",
]

# Peer records ride inside identify messages, which implementations cap at
# a few KiB; an envelope larger than this is not worth parsing.
MAX_ENVELOPE_SIZE: Final = 8 * 1024


@dataclass(frozen=True, slots=True)
class SignedEnvelope:
    """An envelope whose signature has been verified for its domain."""

    public_key: PublicKey
    payload_type: bytes
    payload: bytes
    signature: bytes

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_public_key(self.public_key)


def signing_input(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    """The bytes that are signed: each part prefixed by its uvarint length."""
    domain_bytes = domain.encode("utf-8")
    return b"".join(
        encode_uvarint(len(part)) + part for part in (domain_bytes, payload_type, payload)
    )


def seal(private_key: PrivateKey, domain: str, payload_type: bytes, payload: bytes) -> bytes:
    """Sign ``payload`` under ``domain`` and serialize the envelope."""
    if not domain:
        raise LocalProtocolError("envelope domain must not be empty")
    if not payload_type:
        raise LocalProtocolError("envelope payload type must not be empty")
    signature = private_key.sign(signing_input(domain, payload_type, payload))
    message = envelope_pb2.Envelope(
        public_key=private_key.public_key().to_protobuf(),
        payload_type=payload_type,
        payload=payload,
        signature=signature,
    )
    return message.SerializeToString()


def open_envelope(data: bytes, domain: str, max_size: int = MAX_ENVELOPE_SIZE) -> SignedEnvelope:
    """Parse and verify an envelope expected under ``domain``.

    Raises ``MessageTooLarge`` before parsing anything over ``max_size``,
    ``DecodeError`` (or its subclass ``InvalidKeyError``) for malformed
    bytes, and ``InvalidSignature`` when the signature does not verify —
    including when it was made for a different domain.
    """
    if len(data) > max_size:
        raise MessageTooLarge(len(data), max_size)
    message = envelope_pb2.Envelope()
    try:
        message.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise DecodeError(f"malformed signed envelope: {exc}") from None
    if not message.public_key:
        raise DecodeError("signed envelope has no public key")
    if not message.payload_type:
        raise DecodeError("signed envelope has no payload type")
    public_key = public_key_from_protobuf(message.public_key)
    payload_type = bytes(message.payload_type)
    payload = bytes(message.payload)
    signature = bytes(message.signature)
    if not public_key.verify(signing_input(domain, payload_type, payload), signature):
        raise InvalidSignature(f"signed envelope does not verify in domain {domain!r}")
    return SignedEnvelope(public_key, payload_type, payload, signature)
