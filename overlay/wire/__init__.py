"""Wire helpers: uvarint framing with size limits, the byte-stream interface,
and the generated protobuf modules (in ``overlay.wire.pb``)."""

from overlay.wire.varint import (
    MAX_UVARINT_BYTES,
    decode_uvarint,
    encode_uvarint,
    frame,
    read_frame,
    read_uvarint,
)
from overlay.wire.stream import ByteStream

__all__ = [
    "MAX_UVARINT_BYTES",
    "ByteStream",
    "decode_uvarint",
    "encode_uvarint",
    "frame",
    "read_frame",
    "read_uvarint",
]
