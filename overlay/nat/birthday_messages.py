"""Messages of ``/ovl/birthday/1.0.0``, overlay's own extension of hole
punching for one symmetric NAT (docs/nat.md, "Birthday punching"), and the
probe datagram (pure).

The protocol runs on a stream of a relayed connection between two overlay
peers; libp2p peers never see it (it is only opened when the peer's
identify lists it).  Each message is uvarint-framed, at most
``MAX_MESSAGE_SIZE`` bytes, and one of:

- ``Hello``: the sender's NAT kind, a fresh 8-byte nonce and its public
  endpoint (IP and port, as its observers saw it);
- ``Ready`` (hard side only): its sockets are open and have sent; the
  port ranges its NAT is predicted to have given them (``start``, ``count``);
- ``Refuse``: a reason in words; the relayed connection stays.

A decode checks sizes before reading and raises ``BirthdayDecodeError``
(a ``DecodeError``) for anything malformed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from overlay.errors import DecodeError

__all__ = [
    "PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "MAX_RANGES",
    "MAX_PREDICTED",
    "MAX_REASON",
    "NONCE_SIZE",
    "NatKind",
    "Hello",
    "Ready",
    "Refuse",
    "Message",
    "BirthdayDecodeError",
    "encode",
    "decode",
    "probe_datagram",
    "parse_probe",
]

PROTOCOL: Final = "/ovl/birthday/1.0.0"
MAX_MESSAGE_SIZE: Final = 512
MAX_RANGES: Final = 8
MAX_PREDICTED: Final = 1024
"""Ports all ranges of one ``Ready`` may cover together."""
MAX_REASON: Final = 256
NONCE_SIZE: Final = 8

_HELLO, _READY, _REFUSE = 1, 2, 3
_PROBE_MAGIC: Final = b"OVLB"
PROBE_SIZE: Final = 1 + len(_PROBE_MAGIC) + NONCE_SIZE + 2
_PROBE_FIRST: Final = 0x9B
"""``10011011``: the QUIC fixed bit (0x40) clear, so never QUIC; the top
bits set, so never STUN.  An endpoint hands it to its datagram hook."""


class NatKind(IntEnum):
    UNKNOWN = 0
    CONE = 1
    """Endpoint-independent mapping: the port the relay saw is the port
    everyone sees."""
    SYMMETRIC = 2
    """Endpoint-dependent mapping: a new public port per destination."""
    PUBLIC = 3
    """No NAT at all."""


class BirthdayDecodeError(DecodeError):
    """A malformed ``/ovl/birthday`` message or probe."""


@dataclass(frozen=True, slots=True)
class Hello:
    kind: NatKind
    nonce: bytes
    ip: str
    port: int

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        ipaddress.ip_address(self.ip)
        if not 0 <= self.port < 65536:
            raise ValueError("port out of range")


@dataclass(frozen=True, slots=True)
class Ready:
    ranges: tuple[tuple[int, int], ...]
    """(first port, count): ports the hard side's NAT may have given its
    sockets, most likely first."""

    def __post_init__(self) -> None:
        if len(self.ranges) > MAX_RANGES:
            raise ValueError(f"at most {MAX_RANGES} ranges")
        if sum(count for _, count in self.ranges) > MAX_PREDICTED:
            raise ValueError(f"at most {MAX_PREDICTED} predicted ports")
        for start, count in self.ranges:
            if not (1 <= start < 65536 and 1 <= count and start + count <= 65536):
                raise ValueError(f"bad port range {start}+{count}")


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str


Message = Hello | Ready | Refuse


def encode(message: Message) -> bytes:
    if isinstance(message, Hello):
        ip = ipaddress.ip_address(message.ip).packed
        return (bytes([_HELLO, int(message.kind), len(ip)]) + message.nonce + ip
                + struct.pack("!H", message.port))
    if isinstance(message, Ready):
        return bytes([_READY, len(message.ranges)]) + b"".join(
            struct.pack("!HH", start, count) for start, count in message.ranges)
    reason = message.reason.encode()[:MAX_REASON]
    return bytes([_REFUSE]) + reason


def decode(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_SIZE:
        raise BirthdayDecodeError(f"message of {len(data)} bytes over {MAX_MESSAGE_SIZE}")
    if not data:
        raise BirthdayDecodeError("empty message")
    kind = data[0]
    try:
        if kind == _HELLO:
            if len(data) < 3:
                raise BirthdayDecodeError("short HELLO")
            nat, ip_len = data[1], data[2]
            if ip_len not in (4, 16) or len(data) != 3 + NONCE_SIZE + ip_len + 2:
                raise BirthdayDecodeError("HELLO of the wrong length")
            nonce = data[3:3 + NONCE_SIZE]
            ip_bytes = data[3 + NONCE_SIZE:3 + NONCE_SIZE + ip_len]
            (port,) = struct.unpack("!H", data[-2:])
            return Hello(NatKind(nat), bytes(nonce), str(ipaddress.ip_address(ip_bytes)), port)
        if kind == _READY:
            if len(data) < 2 or data[1] > MAX_RANGES or len(data) != 2 + 4 * data[1]:
                raise BirthdayDecodeError("READY of the wrong length")
            ranges = tuple(struct.unpack_from("!HH", data, 2 + 4 * i) for i in range(data[1]))
            return Ready(ranges)
        if kind == _REFUSE:
            if len(data) > 1 + MAX_REASON:
                raise BirthdayDecodeError("REFUSE reason too long")
            return Refuse(data[1:].decode("utf-8", errors="replace"))
    except ValueError as exc:  # an unknown NAT kind, a bad range
        raise BirthdayDecodeError(f"malformed message: {exc}") from None
    raise BirthdayDecodeError(f"unknown message type {kind}")


def probe_datagram(nonce: bytes, port: int) -> bytes:
    """A probe: its first byte is neither QUIC nor STUN, then a magic, the
    receiver's nonce (from its HELLO) and the destination port it was sent
    to (so the receiver learns its public port)."""
    return bytes([_PROBE_FIRST]) + _PROBE_MAGIC + nonce + struct.pack("!H", port)


def parse_probe(data: bytes) -> tuple[bytes, int] | None:
    """(nonce, port) of a probe, or None for anything else."""
    if len(data) != PROBE_SIZE or data[0] != _PROBE_FIRST or data[1:5] != _PROBE_MAGIC:
        return None
    (port,) = struct.unpack("!H", data[-2:])
    return bytes(data[5:5 + NONCE_SIZE]), port
