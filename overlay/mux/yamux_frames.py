"""yamux frame headers (hashicorp/yamux ``spec.md``, libp2p ``/yamux/1.0.0``).

Every frame starts with a 12-byte big-endian header::

    version:u8 (always 0) | type:u8 | flags:u16 | stream_id:u32 | length:u32

``length`` is the payload size for Data frames, a window delta for Window
Update, an opaque value for Ping and an error code for Go Away; only Data
frames carry a payload.  Pure: no I/O.

Flag bits other than SYN/ACK/FIN/RST are ignored rather than rejected: an
early hashicorp version defined an LZW bit, and no libp2p implementation
treats a spare bit as an error.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from overlay.errors import DecodeError, MessageTooLarge, RemoteProtocolError

__all__ = [
    "HEADER_SIZE",
    "HEADER_STRUCT",
    "KNOWN_FLAGS",
    "VERSION",
    "MAX_DATA_LENGTH",
    "INITIAL_WINDOW",
    "FrameType",
    "Flag",
    "GoAwayCode",
    "Header",
    "YamuxProtocolError",
    "FrameError",
    "UnknownVersion",
    "UnknownFrameType",
    "FrameTooLarge",
    "encode_header",
    "decode_header",
]

HEADER_SIZE: Final = 12
VERSION: Final = 0
INITIAL_WINDOW: Final = 256 * 1024
"""Every stream starts with this send and receive window (the spec's 256 KiB)."""

MAX_DATA_LENGTH: Final = 16 * 1024 * 1024
"""Absolute cap on a Data frame's payload, checked before any of it is
read; go-yamux's largest stream window is 16 MiB, so no honest frame is
bigger.  The session applies the tighter per-stream receive window."""

_U32: Final = 0xFFFFFFFF
HEADER_STRUCT: Final = struct.Struct(">BBHII")
"""The header's fields as ``struct`` packs them, for a decoder's fast path."""
KNOWN_FLAGS: Final = 0x0F
"""SYN | ACK | FIN | RST; other bits are ignored."""
_HEADER = HEADER_STRUCT
_KNOWN_FLAGS = KNOWN_FLAGS


class FrameType(enum.IntEnum):
    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(enum.IntFlag):
    NONE = 0
    SYN = 1
    ACK = 2
    FIN = 4
    RST = 8


class GoAwayCode(enum.IntEnum):
    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class YamuxProtocolError(RemoteProtocolError):
    """The remote broke the yamux protocol; the session ends with a
    Go Away carrying ``PROTOCOL_ERROR``."""


class FrameError(YamuxProtocolError, DecodeError):
    """A frame header could not be decoded."""


class UnknownVersion(FrameError):
    def __init__(self, version: int) -> None:
        super().__init__(f"unknown yamux version {version}")
        self.version = version


class UnknownFrameType(FrameError):
    def __init__(self, frame_type: int) -> None:
        super().__init__(f"unknown yamux frame type {frame_type}")
        self.frame_type = frame_type


class FrameTooLarge(FrameError, MessageTooLarge):
    """A Data frame announced more payload than the decoder accepts."""

    def __init__(self, size: int, limit: int) -> None:
        MessageTooLarge.__init__(self, size, limit)


@dataclass(frozen=True, slots=True)
class Header:
    type: FrameType
    flags: Flag
    stream_id: int
    length: int

    @property
    def payload_length(self) -> int:
        """Bytes of payload that follow this header."""
        return self.length if self.type is FrameType.DATA else 0


def encode_header(frame_type: FrameType, flags: Flag, stream_id: int, length: int) -> bytes:
    """The 12 header bytes; raises ``ValueError`` for out-of-range fields."""
    if not 0 <= stream_id <= _U32:
        raise ValueError(f"stream id {stream_id} does not fit in 32 bits")
    if not 0 <= length <= _U32:
        raise ValueError(f"length {length} does not fit in 32 bits")
    if not 0 <= int(flags) <= 0xFFFF:
        raise ValueError(f"flags {int(flags)} do not fit in 16 bits")
    return _HEADER.pack(VERSION, int(frame_type), int(flags), stream_id, length)


def decode_header(data: bytes | bytearray | memoryview, max_data_length: int = MAX_DATA_LENGTH) -> Header:
    """Decode the first 12 bytes of ``data``.

    Raises ``UnknownVersion``, ``UnknownFrameType`` or ``FrameTooLarge``
    (a Data length above ``max_data_length``), all ``FrameError``s.  Fewer
    than 12 bytes is the caller's mistake (``ValueError``).
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"a header needs {HEADER_SIZE} bytes, got {len(data)}")
    version, raw_type, raw_flags, stream_id, length = _HEADER.unpack_from(data)
    if version != VERSION:
        raise UnknownVersion(version)
    try:
        frame_type = FrameType(raw_type)
    except ValueError:
        raise UnknownFrameType(raw_type) from None
    if frame_type is FrameType.DATA and length > max_data_length:
        raise FrameTooLarge(length, max_data_length)
    return Header(frame_type, Flag(raw_flags & _KNOWN_FLAGS), stream_id, length)
