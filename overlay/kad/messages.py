"""The ``/ipfs/kad/1.0.0`` message as Python values, and its codec.

``decode`` is the only entry point for bytes from a peer.  It checks the
16 KiB limit before parsing and afterwards validates everything a server
or lookup relies on; only errors of the overlay tree escape it:

- unknown message types and the deprecated PING: ``UnsupportedMessageType``;
- more than ``MAX_PEERS`` closer or provider peers: ``TooManyPeers``;
- a peer ID that is not a valid multihash, more than ``MAX_ADDRS_PER_PEER``
  addresses or a structurally broken multiaddr: ``InvalidPeerInfo``.
  Addresses of protocols we do not know are skipped, not fatal, so newer
  transports announced by other implementations do not break lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from google.protobuf.message import DecodeError as ProtobufDecodeError

from overlay.errors import InvalidPeerId, LocalProtocolError, MessageTooLarge
from overlay.identity import PeerId
from overlay.kad.addrs import check_multiaddr
from overlay.kad.errors import (
    InvalidKadMessage,
    InvalidPeerInfo,
    TooManyPeers,
    UnsupportedMessageType,
)
from overlay.kad.keyspace import Contact
from overlay.kad.records import Record
from overlay.wire.pb import kad_pb2

__all__ = [
    "MAX_MESSAGE_SIZE",
    "MAX_PEERS",
    "MAX_ADDRS_PER_PEER",
    "MAX_KEY_BYTES",
    "MessageType",
    "ConnectionType",
    "PeerInfo",
    "KadMessage",
    "encode_message",
    "decode_message",
]

MAX_MESSAGE_SIZE = 16 * 1024
MAX_PEERS = 40
"""Twice k: an honest server sends k closer peers; thousands mean hostility."""
MAX_ADDRS_PER_PEER = 32
MAX_KEY_BYTES = 1024


class MessageType(IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4


_PING = 5


class ConnectionType(IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: PeerId
    addrs: tuple[bytes, ...] = ()
    connection: ConnectionType = ConnectionType.NOT_CONNECTED

    def contact(self) -> Contact:
        return Contact.of(self.peer_id, self.addrs)

    @classmethod
    def of(cls, contact: Contact, max_addrs: int = MAX_ADDRS_PER_PEER) -> PeerInfo:
        return cls(contact.peer_id, contact.addrs[:max_addrs])


@dataclass(frozen=True, slots=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[PeerInfo, ...] = ()
    provider_peers: tuple[PeerInfo, ...] = ()


def _peer_to_pb(info: PeerInfo, out: kad_pb2.Message.Peer) -> None:
    out.id = info.peer_id.multihash
    out.addrs.extend(info.addrs)
    out.connection = int(info.connection)  # type: ignore[assignment]


def encode_message(message: KadMessage, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """Serialize ``message`` (without the length prefix).  Raises
    ``LocalProtocolError`` if it would exceed what peers accept."""
    pb = kad_pb2.Message()
    pb.type = int(message.type)  # type: ignore[assignment]
    pb.key = message.key
    if message.record is not None:
        pb.record.key = message.record.key
        pb.record.value = message.record.value
        pb.record.timeReceived = message.record.time_received
    for info in message.closer_peers:
        _peer_to_pb(info, pb.closerPeers.add())
    for info in message.provider_peers:
        _peer_to_pb(info, pb.providerPeers.add())
    data = pb.SerializeToString()
    if len(data) > limit:
        raise LocalProtocolError(f"kad message of {len(data)} bytes exceeds the limit of {limit}")
    return data


def _peers_from_pb(entries: list[kad_pb2.Message.Peer], what: str) -> tuple[PeerInfo, ...]:
    if len(entries) > MAX_PEERS:
        raise TooManyPeers(len(entries), MAX_PEERS)
    peers: dict[PeerId, PeerInfo] = {}
    for entry in entries:
        try:
            peer_id = PeerId.from_bytes(entry.id)
        except InvalidPeerId as exc:
            raise InvalidPeerInfo(f"{what}: {exc}") from None
        if len(entry.addrs) > MAX_ADDRS_PER_PEER:
            raise InvalidPeerInfo(f"{what}: {len(entry.addrs)} addresses for one peer")
        addrs = tuple(addr for addr in entry.addrs if check_multiaddr(addr))
        try:
            connection = ConnectionType(entry.connection)
        except ValueError:
            connection = ConnectionType.NOT_CONNECTED
        if peer_id not in peers:
            peers[peer_id] = PeerInfo(peer_id, addrs, connection)
    return tuple(peers.values())


def decode_message(data: bytes, limit: int = MAX_MESSAGE_SIZE) -> KadMessage:
    """Parse and validate one kad message body (the frame is already removed)."""
    if len(data) > limit:
        raise MessageTooLarge(len(data), limit)
    pb = kad_pb2.Message()
    try:
        pb.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise InvalidKadMessage(f"malformed kad protobuf: {exc}") from None
    type_number = int(pb.type)
    if type_number == _PING or type_number not in MessageType._value2member_map_:
        raise UnsupportedMessageType(type_number)
    if len(pb.key) > MAX_KEY_BYTES:
        raise InvalidKadMessage(f"kad key of {len(pb.key)} bytes exceeds {MAX_KEY_BYTES}")
    record = None
    if pb.HasField("record"):
        record = Record(pb.record.key, pb.record.value, pb.record.timeReceived)
    return KadMessage(
        type=MessageType(type_number),
        key=pb.key,
        record=record,
        closer_peers=_peers_from_pb(list(pb.closerPeers), "closer peer"),
        provider_peers=_peers_from_pb(list(pb.providerPeers), "provider peer"),
    )
