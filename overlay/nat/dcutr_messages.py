"""DCUtR messages (libp2p/specs relay/DCUtR.md) as frozen dataclasses and
their protobuf codec (``overlay/wire/pb/dcutr.proto``).

A message is ``HolePunch {type, ObsAddrs}``: CONNECT carries the sender's
candidate addresses, SYNC carries nothing.  Every decode checks the size
before parsing and raises a ``DcutrDecodeError`` for anything malformed,
so the driver drops that stream and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import DecodeError, MessageTooLarge
from overlay.wire.pb import dcutr_pb2

__all__ = [
    "PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "MAX_ADDRS",
    "MAX_ADDR_LEN",
    "MessageType",
    "HolePunch",
    "DcutrDecodeError",
    "DcutrMessageTooLarge",
    "encode",
    "decode",
]

PROTOCOL: Final = "/libp2p/dcutr"
MAX_MESSAGE_SIZE: Final = 4096
"""The spec's bound on one message, length prefix excluded."""
MAX_ADDRS: Final = 32
"""More addresses than this in one CONNECT is an attack, not a network
configuration: the message is refused (go-libp2p and rust-libp2p send a
handful)."""
MAX_ADDR_LEN: Final = 256
"""Longest binary multiaddr we accept in ObsAddrs."""


class MessageType(IntEnum):
    CONNECT = 100
    SYNC = 300


class DcutrDecodeError(DecodeError):
    """A DCUtR message that is malformed: bad protobuf, a missing or unknown
    type, too many or too long addresses."""


class DcutrMessageTooLarge(MessageTooLarge):
    """A DCUtR message over the 4 KiB limit; refused before parsing."""


@dataclass(frozen=True, slots=True)
class HolePunch:
    type: MessageType
    addrs: tuple[bytes, ...] = ()
    """Binary multiaddrs (CONNECT only); the core parses and filters them."""


def encode(message: HolePunch) -> bytes:
    """The message body (without its length prefix).  Raises ``ValueError``
    for a message this codec would refuse to decode."""
    if message.type is MessageType.SYNC and message.addrs:
        raise ValueError("SYNC carries no addresses")
    if len(message.addrs) > MAX_ADDRS or any(len(a) > MAX_ADDR_LEN for a in message.addrs):
        raise ValueError("too many or too long addresses")
    pb = dcutr_pb2.HolePunch()
    pb.type = int(message.type)
    pb.ObsAddrs.extend(message.addrs)
    data = pb.SerializeToString()
    if len(data) > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_SIZE}-byte limit")
    return data


def decode(data: bytes, limit: int = MAX_MESSAGE_SIZE) -> HolePunch:
    """Parse one message body.  Raises ``DcutrMessageTooLarge`` before
    parsing anything over ``limit`` and ``DcutrDecodeError`` otherwise."""
    if len(data) > limit:
        raise DcutrMessageTooLarge(len(data), limit)
    pb = dcutr_pb2.HolePunch()
    try:
        pb.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise DcutrDecodeError(f"malformed DCUtR message: {exc}") from None
    if not pb.HasField("type"):
        raise DcutrDecodeError("a DCUtR message without its type")
    try:
        kind = MessageType(pb.type)
    except ValueError:
        raise DcutrDecodeError(f"unknown DCUtR message type {pb.type}") from None
    addrs = tuple(bytes(a) for a in pb.ObsAddrs)
    if kind is MessageType.SYNC:
        # The spec gives SYNC no addresses; one that has some is ignored
        # rather than refused, as other implementations do.
        return HolePunch(kind)
    if len(addrs) > MAX_ADDRS:
        raise DcutrDecodeError(f"a CONNECT with {len(addrs)} addresses (at most {MAX_ADDRS})")
    if any(len(a) > MAX_ADDR_LEN for a in addrs):
        raise DcutrDecodeError(f"a CONNECT address over {MAX_ADDR_LEN} bytes")
    return HolePunch(kind, addrs)
