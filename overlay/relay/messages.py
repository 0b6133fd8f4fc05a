"""Circuit relay v2 messages (libp2p/specs relay/circuit-v2.md) as frozen
dataclasses, and their protobuf codec (``overlay/wire/pb/circuit.proto``).

Every decode checks the size before parsing and raises a
``RelayDecodeError`` for anything malformed, so the handler drops that
stream and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import InvalidPeerId
from overlay.identity import PeerId
from overlay.relay.errors import RelayDecodeError, RelayMessageTooLarge
from overlay.wire.pb import circuit_pb2

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "MAX_ADDRS",
    "HopType",
    "StopType",
    "Status",
    "status_name",
    "Peer",
    "Limit",
    "Reservation",
    "HopMessage",
    "StopMessage",
    "encode_hop",
    "decode_hop",
    "encode_stop",
    "decode_stop",
]

HOP_PROTOCOL: Final = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL: Final = "/libp2p/circuit/relay/0.2.0/stop"
MAX_MESSAGE_SIZE: Final = 4096
"""go-libp2p's and rust-libp2p's bound on a hop or stop message: a peer,
a handful of addresses and a voucher fit well within it."""
MAX_ADDRS: Final = 32
"""Addresses kept from a Peer or Reservation; more is noise or an attack."""


class HopType(IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(IntEnum):
    CONNECT = 0
    STATUS = 1


class Status(IntEnum):
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


def status_name(code: int) -> str:
    """``NO_RESERVATION`` for 204; unknown codes by number."""
    try:
        return Status(code).name
    except ValueError:
        return f"status {code}"


@dataclass(frozen=True, slots=True)
class Peer:
    id: PeerId
    addrs: tuple[bytes, ...] = ()
    """Binary multiaddrs, as on the wire (the client decides what to trust)."""


@dataclass(frozen=True, slots=True)
class Limit:
    duration: int | None = None
    """Seconds; ``None`` (or 0 on the wire) is unlimited."""
    data: int | None = None
    """Bytes per direction; ``None`` (or 0 on the wire) is unlimited."""


@dataclass(frozen=True, slots=True)
class Reservation:
    expire: int
    """Unix seconds (wall clock)."""
    addrs: tuple[bytes, ...] = ()
    voucher: bytes = b""


@dataclass(frozen=True, slots=True)
class HopMessage:
    type: HopType
    peer: Peer | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class StopMessage:
    type: StopType
    peer: Peer | None = None
    limit: Limit | None = None
    status: int | None = None


# -- encoding -------------------------------------------------------------------


def _fill_peer(pb: circuit_pb2.Peer, peer: Peer) -> None:
    pb.id = peer.id.to_bytes()
    pb.addrs.extend(peer.addrs)


def _fill_limit(pb: circuit_pb2.Limit, limit: Limit) -> None:
    pb.SetInParent()
    if limit.duration:
        pb.duration = limit.duration
    if limit.data:
        pb.data = limit.data


def encode_hop(message: HopMessage) -> bytes:
    """The protobuf body (without its length prefix)."""
    pb = circuit_pb2.HopMessage(type=int(message.type))
    if message.peer is not None:
        _fill_peer(pb.peer, message.peer)
    if message.reservation is not None:
        r = message.reservation
        pb.reservation.expire = r.expire
        pb.reservation.addrs.extend(r.addrs)
        if r.voucher:
            pb.reservation.voucher = r.voucher
    if message.limit is not None:
        _fill_limit(pb.limit, message.limit)
    if message.status is not None:
        pb.status = message.status
    return pb.SerializeToString()


def encode_stop(message: StopMessage) -> bytes:
    pb = circuit_pb2.StopMessage(type=int(message.type))
    if message.peer is not None:
        _fill_peer(pb.peer, message.peer)
    if message.limit is not None:
        _fill_limit(pb.limit, message.limit)
    if message.status is not None:
        pb.status = message.status
    return pb.SerializeToString()


# -- decoding -------------------------------------------------------------------


def _check_size(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise RelayMessageTooLarge(len(data), limit)


def _peer(pb: circuit_pb2.Peer) -> Peer:
    if not pb.HasField("id"):
        raise RelayDecodeError("a Peer without its id")
    try:
        peer_id = PeerId.from_bytes(bytes(pb.id))
    except InvalidPeerId as exc:
        raise RelayDecodeError(f"a Peer with an invalid id: {exc}") from None
    return Peer(peer_id, tuple(bytes(a) for a in pb.addrs[:MAX_ADDRS]))


def _limit(pb: circuit_pb2.Limit) -> Limit:
    return Limit(pb.duration or None, pb.data or None)


def decode_hop(data: bytes, limit: int = MAX_MESSAGE_SIZE) -> HopMessage:
    """Parse one hop message body.  Raises ``RelayMessageTooLarge`` before
    parsing anything over ``limit`` and ``RelayDecodeError`` for malformed
    protobuf, a missing or unknown type, a bad peer or a reservation
    without its expiration."""
    _check_size(data, limit)
    pb = circuit_pb2.HopMessage()
    try:
        pb.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise RelayDecodeError(f"malformed hop message: {exc}") from None
    if not pb.HasField("type"):
        raise RelayDecodeError("a hop message without its type")
    try:
        kind = HopType(pb.type)
    except ValueError:
        raise RelayDecodeError(f"unknown hop message type {pb.type}") from None
    reservation = None
    if pb.HasField("reservation"):
        r = pb.reservation
        if not r.HasField("expire"):
            raise RelayDecodeError("a reservation without its expiration")
        reservation = Reservation(r.expire, tuple(bytes(a) for a in r.addrs[:MAX_ADDRS]),
                                  bytes(r.voucher))
    return HopMessage(
        kind,
        _peer(pb.peer) if pb.HasField("peer") else None,
        reservation,
        _limit(pb.limit) if pb.HasField("limit") else None,
        pb.status if pb.HasField("status") else None,
    )


def decode_stop(data: bytes, limit: int = MAX_MESSAGE_SIZE) -> StopMessage:
    """Parse one stop message body; errors as for ``decode_hop``."""
    _check_size(data, limit)
    pb = circuit_pb2.StopMessage()
    try:
        pb.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise RelayDecodeError(f"malformed stop message: {exc}") from None
    if not pb.HasField("type"):
        raise RelayDecodeError("a stop message without its type")
    try:
        kind = StopType(pb.type)
    except ValueError:
        raise RelayDecodeError(f"unknown stop message type {pb.type}") from None
    return StopMessage(
        kind,
        _peer(pb.peer) if pb.HasField("peer") else None,
        _limit(pb.limit) if pb.HasField("limit") else None,
        pb.status if pb.HasField("status") else None,
    )
