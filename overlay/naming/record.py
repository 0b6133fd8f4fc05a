"""Name records: the data model, its canonical encoding and signing.

The wire format is the ``NameRecord`` protobuf in
``overlay/wire/pb/name_record.proto``.  Its encoding must be canonical
(fields in tag order, defaults omitted, minimal varints, no unknown
fields).  This module encodes by hand so the signed bytes never depend on a
protobuf library's choices.  Decoding parses with the generated module,
re-encodes, and refuses anything that does not match byte for byte.  A
record therefore has exactly one encoding, and bytes can be compared to
detect duplicates.

The owner signs ``b"overlay-name-record:" + canonical(record without signature)``.
Field 16 (``release_proof``) came after the first records; a record without
it encodes exactly as before, so older records keep their signatures.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace

from google.protobuf.message import DecodeError as ProtobufDecodeError

from overlay.errors import LocalProtocolError
from overlay.identity import PrivateKey
from overlay.naming.config import MAX_RECORD_BYTES
from overlay.naming.errors import MalformedRecord, TooLarge, UnsupportedVersion
from overlay.wire.pb import name_record_pb2

__all__ = [
    "RECORD_DOMAIN",
    "RECORD_VERSION",
    "NameRecord",
    "PeerTarget",
    "RecordKind",
    "Service",
    "decode_record",
    "encode_record",
    "sign_record",
]

RECORD_DOMAIN = b"overlay-name-record:"
RECORD_VERSION = 1
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class RecordKind(enum.IntEnum):
    REGISTER = 0
    UPDATE = 1
    TRANSFER = 2
    RELEASE = 3


@dataclass(frozen=True, slots=True)
class PeerTarget:
    """A peer the name points at, with the addresses to dial it."""

    peer_id: bytes
    """Binary peer ID (multihash)."""
    addrs: tuple[bytes, ...] = ()
    """Binary multiaddrs."""


@dataclass(frozen=True, slots=True)
class Service:
    """An SRV-like service entry."""

    protocol: str
    """Service name, e.g. ``http`` or a libp2p protocol ID."""
    port: int
    """Port, 0..65535 (0 when the service is reached by protocol ID)."""
    target: str = ""
    """Serving host name; empty means this name's own peers/addresses."""
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True, slots=True)
class NameRecord:
    """One signed statement by ``owner`` about ``name``."""

    name: str
    """Normalized name, zone included."""
    owner: bytes
    """libp2p PublicKey protobuf of the owner (the signer)."""
    sequence: int
    """Higher wins among one owner's records."""
    expires: int
    """Absolute end of validity, unix seconds."""
    ttl: int
    """Seconds a resolver may cache the record."""
    kind: RecordKind = RecordKind.REGISTER
    peers: tuple[PeerTarget, ...] = ()
    ips: tuple[bytes, ...] = ()
    """Raw IPv4 (4 bytes) or IPv6 (16 bytes) addresses."""
    services: tuple[Service, ...] = ()
    txt: tuple[str, ...] = ()
    new_owner: bytes = b""
    """TRANSFER only: PublicKey protobuf of the receiving owner."""
    pow_nonce: int = 0
    """Proof of work over (name, owner)."""
    transfer_proof: bytes = b""
    """Canonical bytes of a TRANSFER record that handed the name to owner."""
    release_proof: bytes = b""
    """Canonical bytes of the previous owner's RELEASE of this name."""
    signature: bytes = b""
    version: int = RECORD_VERSION
    _encoded: bytes = field(default=b"", init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for label, value, top in (
            ("sequence", self.sequence, _U64),
            ("expires", self.expires, _U64),
            ("ttl", self.ttl, _U32),
            ("pow_nonce", self.pow_nonce, _U64),
            ("version", self.version, _U32),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"{label} out of range: {value}")
        for service in self.services:
            if not 0 <= service.port <= 0xFFFF:
                raise ValueError(f"service port out of range: {service.port}")
            if not (0 <= service.priority <= 0xFFFF and 0 <= service.weight <= 0xFFFF):
                raise ValueError("service priority and weight must fit 16 bits")

    def signing_bytes(self) -> bytes:
        """What the owner signs: the domain prefix and the unsigned record."""
        return RECORD_DOMAIN + _encode(self, with_signature=False)

    def to_bytes(self) -> bytes:
        """The canonical wire encoding (cached; records are immutable)."""
        if self._encoded:
            return self._encoded
        encoded = _encode(self, with_signature=True)
        object.__setattr__(self, "_encoded", encoded)
        return encoded

    def ip_addresses(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address(raw) for raw in self.ips]

    @property
    def carries_targets(self) -> bool:
        return bool(self.peers or self.ips or self.services or self.txt)


# --- canonical encoding -------------------------------------------------------


def _varint(value: int) -> bytes:
    # Protobuf varints carry 64 bits (10 bytes), beyond the 63-bit
    # multiformats uvarint of overlay.wire.
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_field(out: bytearray, number: int, value: int) -> None:
    if value:
        out += _varint(number << 3)
        out += _varint(value)


def _bytes_field(out: bytearray, number: int, value: bytes, *, repeated: bool = False) -> None:
    if value or repeated:
        out += _varint(number << 3 | 2)
        out += _varint(len(value))
        out += value


def _encode_peer(peer: PeerTarget) -> bytes:
    out = bytearray()
    _bytes_field(out, 1, peer.peer_id)
    for addr in peer.addrs:
        _bytes_field(out, 2, addr, repeated=True)
    return bytes(out)


def _encode_service(service: Service) -> bytes:
    out = bytearray()
    _bytes_field(out, 1, service.protocol.encode("utf-8"))
    _varint_field(out, 2, service.port)
    _bytes_field(out, 3, service.target.encode("utf-8"))
    _varint_field(out, 4, service.priority)
    _varint_field(out, 5, service.weight)
    return bytes(out)


def _encode(record: NameRecord, *, with_signature: bool) -> bytes:
    out = bytearray()
    _varint_field(out, 1, record.version)
    _varint_field(out, 2, int(record.kind))
    _bytes_field(out, 3, record.name.encode("utf-8"))
    _bytes_field(out, 4, record.owner)
    _varint_field(out, 5, record.sequence)
    _varint_field(out, 6, record.expires)
    _varint_field(out, 7, record.ttl)
    for peer in record.peers:
        _bytes_field(out, 8, _encode_peer(peer), repeated=True)
    for ip in record.ips:
        _bytes_field(out, 9, ip, repeated=True)
    for service in record.services:
        _bytes_field(out, 10, _encode_service(service), repeated=True)
    for text in record.txt:
        _bytes_field(out, 11, text.encode("utf-8"), repeated=True)
    _bytes_field(out, 12, record.new_owner)
    _varint_field(out, 13, record.pow_nonce)
    _bytes_field(out, 14, record.transfer_proof)
    if with_signature:
        _bytes_field(out, 15, record.signature)
    _bytes_field(out, 16, record.release_proof)
    return bytes(out)


def encode_record(record: NameRecord) -> bytes:
    return record.to_bytes()


def decode_record(data: bytes, max_size: int = MAX_RECORD_BYTES) -> NameRecord:
    """Parse canonical record bytes; no signature or policy checks.

    The size is checked before anything is parsed.  Raises ``TooLarge``,
    ``MalformedRecord`` or ``UnsupportedVersion``.
    """
    if len(data) > max_size:
        raise TooLarge(len(data), max_size)
    message = name_record_pb2.NameRecord()
    try:
        message.ParseFromString(bytes(data))
    except ProtobufDecodeError as exc:
        raise MalformedRecord(f"not a name record: {exc}") from None
    if message.version != RECORD_VERSION:
        raise UnsupportedVersion(message.version, RECORD_VERSION)
    try:
        record = NameRecord(
            version=message.version,
            kind=RecordKind(message.kind),
            name=message.name,
            owner=message.owner,
            sequence=message.sequence,
            expires=message.expires,
            ttl=message.ttl,
            peers=tuple(PeerTarget(p.peer_id, tuple(p.addrs)) for p in message.peers),
            ips=tuple(message.ips),
            services=tuple(
                Service(s.protocol, s.port, s.target, s.priority, s.weight)
                for s in message.services
            ),
            txt=tuple(message.txt),
            new_owner=message.new_owner,
            pow_nonce=message.pow_nonce,
            transfer_proof=message.transfer_proof,
            release_proof=message.release_proof,
            signature=message.signature,
        )
    except ValueError as exc:
        raise MalformedRecord(f"field out of range: {exc}") from None
    if record.to_bytes() != bytes(data):
        # Unknown fields, repeated singular fields, non-minimal varints or
        # reordering: one record must have one encoding.
        raise MalformedRecord("record is not canonically encoded")
    return record


def sign_record(record: NameRecord, key: PrivateKey) -> NameRecord:
    """Return ``record`` signed by ``key``, which must be its owner."""
    if key.public_key().to_protobuf() != record.owner:
        raise LocalProtocolError("only the record's owner key can sign it")
    unsigned = replace(record, signature=b"")
    return replace(unsigned, signature=key.sign(unsigned.signing_bytes()))
