"""Rendezvous messages (libp2p/specs rendezvous/README.md) as frozen
dataclasses, and their protobuf codec (``overlay/wire/pb/rendezvous.proto``).

Every decode checks the size before parsing and raises a
``RendezvousDecodeError`` (a ``RemoteProtocolError``) for anything
malformed, so a handler can drop the offending stream and nothing else.
Semantic checks (namespace length, TTL bounds, the signed record) are the
registry's: they earn an error *status*, not a dropped stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.rendezvous.errors import (
    InvalidNamespace,
    RendezvousDecodeError,
    RendezvousMessageTooLarge,
)
from overlay.wire.pb import rendezvous_pb2

__all__ = [
    "PROTOCOL_ID",
    "MAX_NAMESPACE_BYTES",
    "DEFAULT_TTL",
    "MAX_TTL",
    "MAX_REQUEST_SIZE",
    "MAX_RESPONSE_SIZE",
    "MessageType",
    "Status",
    "status_name",
    "Register",
    "RegisterResponse",
    "Unregister",
    "Discover",
    "DiscoverResponse",
    "RendezvousMessage",
    "encode_message",
    "decode_message",
    "check_namespace",
]

PROTOCOL_ID: Final = "/rendezvous/1.0.0"
MAX_NAMESPACE_BYTES: Final = 255
"""The spec's recommended bound on a namespace (UTF-8 bytes)."""
DEFAULT_TTL: Final = 2 * 3600
"""What a REGISTER without a TTL (or with 0, as proto3 senders omit it) means."""
MAX_TTL: Final = 72 * 3600
"""The spec's recommended upper bound on a TTL."""
MAX_REQUEST_SIZE: Final = 16 * 1024
"""A REGISTER is a namespace plus one signed record (the registry accepts
records of at most 4 KiB): a request larger than this is hostile."""
MAX_RESPONSE_SIZE: Final = 1024 * 1024
"""A DISCOVER_RESPONSE; the server fills pages up to this and continues
with a cookie."""


class MessageType(IntEnum):
    REGISTER = 0
    REGISTER_RESPONSE = 1
    UNREGISTER = 2
    DISCOVER = 3
    DISCOVER_RESPONSE = 4


class Status(IntEnum):
    OK = 0
    E_INVALID_NAMESPACE = 100
    E_INVALID_SIGNED_PEER_RECORD = 101
    E_INVALID_TTL = 102
    E_INVALID_COOKIE = 103
    E_NOT_AUTHORIZED = 200
    E_INTERNAL_ERROR = 300
    E_UNAVAILABLE = 400


def status_name(code: int) -> str:
    """``E_INVALID_TTL`` for 102; unknown codes (other drafts) by number."""
    try:
        return Status(code).name
    except ValueError:
        return f"status {code}"


@dataclass(frozen=True, slots=True)
class Register:
    """A registration: as a request (``ttl`` None means the default) or as
    an entry of a DISCOVER_RESPONSE (``ttl`` is what remains)."""

    ns: str
    signed_peer_record: bytes
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    status: int
    status_text: str = ""
    ttl: int = 0
    """The TTL granted, in seconds, so the client knows when to refresh."""


@dataclass(frozen=True, slots=True)
class Unregister:
    ns: str
    peer: bytes = b""
    """The deprecated ``id``: sent for older servers, never trusted."""


@dataclass(frozen=True, slots=True)
class Discover:
    ns: str = ""
    """Empty asks for every namespace."""
    limit: int | None = None
    cookie: bytes = b""


@dataclass(frozen=True, slots=True)
class DiscoverResponse:
    registrations: tuple[Register, ...] = ()
    cookie: bytes = b""
    status: int = Status.OK
    status_text: str = ""


RendezvousMessage = Register | RegisterResponse | Unregister | Discover | DiscoverResponse


def check_namespace(ns: str, *, allow_empty: bool = False) -> str:
    """``ns`` if it is a usable namespace: 1 to 255 UTF-8 bytes without
    control characters (they would garble every log and listing).  Raises
    ``InvalidNamespace`` naming the problem."""
    if not ns:
        if allow_empty:
            return ns
        raise InvalidNamespace("a namespace must not be empty")
    try:
        size = len(ns.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidNamespace("a namespace must be valid Unicode text") from None
    if size > MAX_NAMESPACE_BYTES:
        raise InvalidNamespace(
            f"a namespace is at most {MAX_NAMESPACE_BYTES} bytes, not {size}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ns):
        raise InvalidNamespace("a namespace must not contain control characters")
    return ns


# -- encoding -------------------------------------------------------------------


def _fill_register(target: rendezvous_pb2.Message.Register, reg: Register) -> None:
    target.ns = reg.ns.encode("utf-8")
    target.signedPeerRecord = reg.signed_peer_record
    if reg.ttl is not None:
        target.ttl = reg.ttl


def encode_message(message: RendezvousMessage) -> bytes:
    """The protobuf body (without its length prefix)."""
    pb = rendezvous_pb2.Message()
    if isinstance(message, Register):
        pb.type = MessageType.REGISTER
        _fill_register(pb.register, message)
    elif isinstance(message, RegisterResponse):
        pb.type = MessageType.REGISTER_RESPONSE
        pb.registerResponse.status = message.status
        if message.status_text:
            pb.registerResponse.statusText = message.status_text.encode("utf-8")
        pb.registerResponse.ttl = message.ttl
    elif isinstance(message, Unregister):
        pb.type = MessageType.UNREGISTER
        pb.unregister.ns = message.ns.encode("utf-8")
        if message.peer:
            pb.unregister.id = message.peer
    elif isinstance(message, Discover):
        pb.type = MessageType.DISCOVER
        pb.discover.ns = message.ns.encode("utf-8")
        if message.limit is not None:
            pb.discover.limit = message.limit
        if message.cookie:
            pb.discover.cookie = message.cookie
    else:
        pb.type = MessageType.DISCOVER_RESPONSE
        body = pb.discoverResponse
        body.SetInParent()
        for reg in message.registrations:
            _fill_register(body.registrations.add(), reg)
        if message.cookie:
            body.cookie = message.cookie
        body.status = message.status
        if message.status_text:
            body.statusText = message.status_text.encode("utf-8")
    return pb.SerializeToString()


# -- decoding -------------------------------------------------------------------


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RendezvousDecodeError(f"{what} is not UTF-8") from None


def _register(pb: rendezvous_pb2.Message.Register) -> Register:
    return Register(
        ns=_text(pb.ns, "the namespace"),
        signed_peer_record=bytes(pb.signedPeerRecord),
        ttl=pb.ttl if pb.HasField("ttl") and pb.ttl else None,
    )


def decode_message(data: bytes, limit: int = MAX_RESPONSE_SIZE) -> RendezvousMessage:
    """Parse one message body.  Raises ``RendezvousMessageTooLarge`` before
    parsing anything over ``limit`` and ``RendezvousDecodeError`` for
    malformed protobuf, an unknown type or a type without its body."""
    if len(data) > limit:
        raise RendezvousMessageTooLarge(len(data), limit)
    pb = rendezvous_pb2.Message()
    try:
        pb.ParseFromString(bytes(data))
    except _PbDecodeError as exc:
        raise RendezvousDecodeError(f"malformed rendezvous message: {exc}") from None
    try:
        kind = MessageType(pb.type)
    except ValueError:
        raise RendezvousDecodeError(f"unknown rendezvous message type {pb.type}") from None
    # proto3 senders omit an all-default body (an OK response with ttl 0,
    # DISCOVER of everything); only REGISTER and UNREGISTER need theirs.
    if ((kind is MessageType.REGISTER and not pb.HasField("register"))
            or (kind is MessageType.UNREGISTER and not pb.HasField("unregister"))):
        raise RendezvousDecodeError(f"a {kind.name} message without its body")
    if kind is MessageType.REGISTER:
        return _register(pb.register)
    if kind is MessageType.REGISTER_RESPONSE:
        r = pb.registerResponse
        return RegisterResponse(r.status, bytes(r.statusText).decode("utf-8", "replace"), r.ttl)
    if kind is MessageType.UNREGISTER:
        return Unregister(_text(pb.unregister.ns, "the namespace"), bytes(pb.unregister.id))
    if kind is MessageType.DISCOVER:
        d = pb.discover
        return Discover(_text(d.ns, "the namespace"),
                        d.limit if d.HasField("limit") and d.limit else None, bytes(d.cookie))
    body = pb.discoverResponse
    return DiscoverResponse(
        tuple(_register(reg) for reg in body.registrations),
        bytes(body.cookie),
        body.status,
        bytes(body.statusText).decode("utf-8", "replace"),
    )
