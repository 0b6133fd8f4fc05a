"""Peer records (libp2p RFC 0003): a peer's listen addresses with a sequence
number, carried in a signed envelope (e.g. identify's ``signedPeerRecord``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import DecodeError, InvalidPeerId, LocalProtocolError
from overlay.identity.envelope import MAX_ENVELOPE_SIZE, open_envelope, seal
from overlay.identity.errors import PeerRecordMismatch
from overlay.identity.keys import PrivateKey
from overlay.identity.peer_id import PeerId
from overlay.wire.pb import peer_record_pb2

__all__ = [
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_PAYLOAD_TYPE",
    "MAX_PEER_RECORD_ADDRS",
    "PeerRecord",
    "seal_peer_record",
    "open_peer_record",
]

PEER_RECORD_DOMAIN: Final = "libp2p-peer-record"
# The multicodec ``libp2p-peer-record`` (0x0301) as a uvarint.
PEER_RECORD_PAYLOAD_TYPE: Final = b"\x03\x01"
MAX_PEER_RECORD_ADDRS: Final = 64
_MAX_SEQ: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer's addresses as binary multiaddrs.  ``seq`` must grow with each
    new record so receivers can drop stale ones; the caller picks it (for
    example from the wall clock), keeping this module free of clocks."""

    peer_id: PeerId
    seq: int
    addrs: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= _MAX_SEQ:
            raise LocalProtocolError(f"peer record seq {self.seq} is not a uint64")
        if len(self.addrs) > MAX_PEER_RECORD_ADDRS:
            raise LocalProtocolError(
                f"peer record has {len(self.addrs)} addresses, more than {MAX_PEER_RECORD_ADDRS}"
            )

    def to_protobuf(self) -> bytes:
        message = peer_record_pb2.PeerRecord(peer_id=self.peer_id.to_bytes(), seq=self.seq)
        for addr in self.addrs:
            message.addresses.add(multiaddr=addr)
        return message.SerializeToString()

    @classmethod
    def from_protobuf(cls, data: bytes) -> PeerRecord:
        """Decode a record payload (no signature check; see ``open_peer_record``)."""
        message = peer_record_pb2.PeerRecord()
        try:
            message.ParseFromString(bytes(data))
        except _PbDecodeError as exc:
            raise DecodeError(f"malformed peer record: {exc}") from None
        if len(message.addresses) > MAX_PEER_RECORD_ADDRS:
            raise DecodeError(
                f"peer record has {len(message.addresses)} addresses, "
                f"more than {MAX_PEER_RECORD_ADDRS}"
            )
        try:
            peer_id = PeerId.from_bytes(message.peer_id)
        except InvalidPeerId as exc:
            raise DecodeError(f"peer record holds an invalid peer ID: {exc}") from None
        return cls(peer_id, message.seq, tuple(bytes(a.multiaddr) for a in message.addresses))


def seal_peer_record(private_key: PrivateKey, record: PeerRecord) -> bytes:
    """Sign ``record`` into an envelope; the key must be the record's peer's."""
    if not record.peer_id.matches_public_key(private_key.public_key()):
        raise LocalProtocolError("cannot sign a peer record for another peer")
    return seal(private_key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, record.to_protobuf())


def open_peer_record(envelope: bytes, max_size: int = MAX_ENVELOPE_SIZE) -> PeerRecord:
    """Verify an envelope and decode the peer record in it.

    Raises ``InvalidSignature``, ``DecodeError`` (wrong payload type or a
    malformed record) or ``PeerRecordMismatch`` when the record names a peer
    other than the one whose key signed it.
    """
    opened = open_envelope(envelope, PEER_RECORD_DOMAIN, max_size)
    if opened.payload_type != PEER_RECORD_PAYLOAD_TYPE:
        raise DecodeError(
            f"envelope payload type {opened.payload_type.hex()} is not a peer record (0301)"
        )
    record = PeerRecord.from_protobuf(opened.payload)
    if not record.peer_id.matches_public_key(opened.public_key):
        raise PeerRecordMismatch(
            f"peer record for {record.peer_id} was signed by {opened.peer_id}"
        )
    return record
