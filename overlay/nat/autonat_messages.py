"""AutoNAT v2 messages (libp2p/specs autonat/autonat-v2.md) as frozen
dataclasses, and their protobuf codec (``overlay/wire/pb/autonat_v2.proto``).

Every decode checks the size before parsing and raises an
``AutoNATDecodeError`` for anything malformed, so the handler drops that
stream and nothing else.  The spec's senders speak proto3, which leaves
out fields equal to zero, so an absent nonce or count reads as 0 rather
than as an error.  Addresses stay as bytes here: the server needs
their positions (``addrIdx``) even for the ones it cannot parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.nat.autonat_errors import AutoNATDecodeError, AutoNATMessageTooLarge
from overlay.wire.pb import autonat_v2_pb2 as pb

__all__ = [
    "DIAL_REQUEST_PROTOCOL",
    "DIAL_BACK_PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "MAX_DATA_CHUNK",
    "MAX_ADDRS",
    "MAX_ADDR_BYTES",
    "ResponseStatus",
    "DialStatus",
    "DialRequest",
    "DialResponse",
    "DialDataRequest",
    "DialDataResponse",
    "DialBack",
    "DialBackResponse",
    "Message",
    "encode_message",
    "decode_message",
    "encode_dial_back",
    "decode_dial_back",
    "encode_dial_back_response",
    "decode_dial_back_response",
]

DIAL_REQUEST_PROTOCOL: Final = "/libp2p/autonat/2/dial-request"
DIAL_BACK_PROTOCOL: Final = "/libp2p/autonat/2/dial-back"
MAX_MESSAGE_SIZE: Final = 8192
"""go-libp2p's bound on one AutoNAT v2 message: a 4096-byte data chunk
plus framing, or a request with a few dozen addresses."""
MAX_DATA_CHUNK: Final = 4096
"""The spec limits each DialDataResponse's data to 4096 bytes."""
MAX_ADDRS: Final = 32
"""Addresses in one request; more is noise or an attack."""
MAX_ADDR_BYTES: Final = 1024
_MAX_U64: Final = (1 << 64) - 1


class ResponseStatus(IntEnum):
    E_INTERNAL_ERROR = 0
    E_REQUEST_REJECTED = 100
    E_DIAL_REFUSED = 101
    OK = 200


class DialStatus(IntEnum):
    UNUSED = 0
    E_DIAL_ERROR = 100
    E_DIAL_BACK_ERROR = 101
    OK = 200


@dataclass(frozen=True, slots=True)
class DialRequest:
    addrs: tuple[bytes, ...]
    """Binary multiaddrs, highest priority first."""
    nonce: int


@dataclass(frozen=True, slots=True)
class DialResponse:
    status: ResponseStatus
    addr_idx: int = 0
    dial_status: DialStatus = DialStatus.UNUSED


@dataclass(frozen=True, slots=True)
class DialDataRequest:
    addr_idx: int
    num_bytes: int


@dataclass(frozen=True, slots=True)
class DialDataResponse:
    data: bytes


@dataclass(frozen=True, slots=True)
class DialBack:
    nonce: int


@dataclass(frozen=True, slots=True)
class DialBackResponse:
    status: int = 0
    """0 (OK) is the only status the spec defines."""


Message = DialRequest | DialResponse | DialDataRequest | DialDataResponse


def _check_size(data: bytes, limit: int = MAX_MESSAGE_SIZE) -> None:
    if len(data) > limit:
        raise AutoNATMessageTooLarge(len(data), limit)


def _check_u64(value: int, what: str) -> None:
    if not 0 <= value <= _MAX_U64:
        raise ValueError(f"{what} must fit in 64 bits unsigned")


def encode_message(msg: Message) -> bytes:
    """The protobuf bytes of ``msg`` (frame them with ``wire.varint.frame``)."""
    out = pb.Message()
    if isinstance(msg, DialRequest):
        _check_u64(msg.nonce, "nonce")
        out.dialRequest.addrs.extend(msg.addrs)
        out.dialRequest.nonce = msg.nonce
    elif isinstance(msg, DialResponse):
        out.dialResponse.status = int(msg.status)
        out.dialResponse.addrIdx = msg.addr_idx
        out.dialResponse.dialStatus = int(msg.dial_status)
    elif isinstance(msg, DialDataRequest):
        out.dialDataRequest.addrIdx = msg.addr_idx
        out.dialDataRequest.numBytes = msg.num_bytes
    else:
        if len(msg.data) > MAX_DATA_CHUNK:
            raise ValueError(f"a data chunk holds at most {MAX_DATA_CHUNK} bytes")
        out.dialDataResponse.data = msg.data
    return out.SerializeToString()


def decode_message(data: bytes) -> Message:
    """One dial-request stream message; raises ``AutoNATDecodeError``."""
    _check_size(data)
    msg = pb.Message()
    try:
        msg.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise AutoNATDecodeError(f"malformed AutoNAT message: {exc}") from None
    which = msg.WhichOneof("msg")
    if which == "dialRequest":
        req = msg.dialRequest
        if not req.addrs:
            raise AutoNATDecodeError("a DialRequest without addresses")
        if len(req.addrs) > MAX_ADDRS:
            raise AutoNATDecodeError(f"a DialRequest with {len(req.addrs)} addresses "
                                     f"(at most {MAX_ADDRS})")
        if any(len(addr) > MAX_ADDR_BYTES for addr in req.addrs):
            raise AutoNATDecodeError(f"a DialRequest address longer than {MAX_ADDR_BYTES} bytes")
        return DialRequest(tuple(bytes(a) for a in req.addrs), req.nonce)
    if which == "dialResponse":
        res = msg.dialResponse
        try:
            status = ResponseStatus(res.status)
            dial_status = DialStatus(res.dialStatus)
        except ValueError:
            # The spec: discard responses with status codes we do not understand.
            raise AutoNATDecodeError(f"a DialResponse with unknown status {res.status}"
                                     f"/{res.dialStatus}") from None
        return DialResponse(status, res.addrIdx, dial_status)
    if which == "dialDataRequest":
        ddr = msg.dialDataRequest
        return DialDataRequest(ddr.addrIdx, ddr.numBytes)
    if which == "dialDataResponse":
        chunk = msg.dialDataResponse.data
        if len(chunk) > MAX_DATA_CHUNK:
            raise AutoNATMessageTooLarge(len(chunk), MAX_DATA_CHUNK)
        return DialDataResponse(bytes(chunk))
    raise AutoNATDecodeError("an AutoNAT message with no content")


def encode_dial_back(msg: DialBack) -> bytes:
    _check_u64(msg.nonce, "nonce")
    out = pb.DialBack()
    out.nonce = msg.nonce
    return out.SerializeToString()


def decode_dial_back(data: bytes) -> DialBack:
    _check_size(data, 64)
    msg = pb.DialBack()
    try:
        msg.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise AutoNATDecodeError(f"malformed DialBack: {exc}") from None
    return DialBack(msg.nonce)


def encode_dial_back_response(msg: DialBackResponse) -> bytes:
    out = pb.DialBackResponse()
    out.status = msg.status
    return out.SerializeToString()


def decode_dial_back_response(data: bytes) -> DialBackResponse:
    _check_size(data, 64)
    msg = pb.DialBackResponse()
    try:
        msg.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise AutoNATDecodeError(f"malformed DialBackResponse: {exc}") from None
    if msg.status != 0:
        raise AutoNATDecodeError(f"a DialBackResponse with unknown status {msg.status}")
    return DialBackResponse(msg.status)
