"""STUN binding (RFC 5389/8489) over the node's own socket: codec and client
transaction, without I/O.

The codec is aioice's ``aioice.stun`` (sans-IO); this module adds what a
live, shared socket needs around it: a size limit checked before parsing,
typed errors instead of whatever the parser raises, the magic-cookie check
(aioice accepts RFC 3489 headers), and the choice of XOR-MAPPED-ADDRESS with
MAPPED-ADDRESS as the fallback for servers that send only the latter.

``BindingTransaction`` is one request's life: it takes ``now`` and returns
actions (send this datagram, here is the mapping, it timed out); the
transaction ID comes from an injected ``random.Random``.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Final

from aioice import stun as _stun

from overlay.nat.errors import StunDecodeError, StunMessageTooLarge

__all__ = [
    "Address",
    "MAX_STUN_MESSAGE",
    "STUN_MAGIC_COOKIE",
    "RetransmitConfig",
    "BindingRequest",
    "BindingResponse",
    "BindingErrorResponse",
    "StunMessage",
    "decode_stun",
    "encode_binding_request",
    "encode_binding_response",
    "SendDatagram",
    "BindingSucceeded",
    "BindingFailed",
    "BindingTimedOut",
    "BindingAction",
    "BindingTransaction",
]

Address = tuple[str, int]

MAX_STUN_MESSAGE: Final = 1280
"""Bytes; larger datagrams are refused before parsing.  A binding response
with every attribute a server may add (SOFTWARE, RESPONSE-ORIGIN,
OTHER-ADDRESS, FINGERPRINT) is about 100 bytes; RFC 8489 section 6.1 keeps
messages within the path MTU, and 1280 is IPv6's minimum."""
STUN_MAGIC_COOKIE: Final = 0x2112A442
_HEADER: Final = 20
_CHANGE_IP: Final = 0x4
_CHANGE_PORT: Final = 0x2


@dataclass(frozen=True, slots=True)
class RetransmitConfig:
    """RFC 8489 section 6.2.1's schedule, shortened for a daemon.

    Requests go out at 0, RTO, 3·RTO, 7·RTO … (the wait doubles) and the
    transaction times out one more doubled wait after the last one.  With
    the defaults: sends at 0, 0.5, 1.5 and 3.5 s, timeout at 7.5 s.  The
    RFC's Rc=7 gives up after 39.5 s, which only delays a daemon's view of
    a dead server; four tries still ride out three lost datagrams."""

    initial_rto: float = 0.5
    """Seconds before the first retransmission (RFC 8489's default RTO)."""
    max_transmissions: int = 4
    """Requests sent in all, the first included."""

    def __post_init__(self) -> None:
        if not self.initial_rto > 0:
            raise ValueError("initial_rto must be positive")
        if not 1 <= self.max_transmissions <= 16:
            raise ValueError("max_transmissions must be between 1 and 16")

    @property
    def timeout(self) -> float:
        """Seconds from the first request until the transaction gives up."""
        return self.initial_rto * float((1 << self.max_transmissions) - 1)


# -- decoded messages ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindingRequest:
    transaction_id: bytes
    change_ip: bool = False
    """RFC 5780 CHANGE-REQUEST flags; a server with one address ignores
    them, as ours does."""
    change_port: bool = False


@dataclass(frozen=True, slots=True)
class BindingResponse:
    transaction_id: bytes
    mapped: Address
    """Where the server saw the request come from."""
    from_xor: bool
    """True if read from XOR-MAPPED-ADDRESS, False for the MAPPED-ADDRESS
    fallback (which NATs that rewrite payloads can corrupt)."""
    other_address: Address | None = None
    """RFC 5780 OTHER-ADDRESS (or RFC 3489 CHANGED-ADDRESS): where the
    server answers change requests from; None if it cannot."""
    response_origin: Address | None = None


@dataclass(frozen=True, slots=True)
class BindingErrorResponse:
    transaction_id: bytes
    code: int
    reason: str


StunMessage = BindingRequest | BindingResponse | BindingErrorResponse


def decode_stun(data: bytes) -> StunMessage:
    """Decode a binding request or (error) response.

    Raises ``StunMessageTooLarge`` before parsing anything over
    ``MAX_STUN_MESSAGE``, and ``StunDecodeError`` for anything else that is
    not a well-formed RFC 5389 binding message."""
    if len(data) > MAX_STUN_MESSAGE:
        raise StunMessageTooLarge(len(data), MAX_STUN_MESSAGE)
    if len(data) < _HEADER or data[0] & 0xC0:
        raise StunDecodeError("not a STUN message")
    if int.from_bytes(data[4:8], "big") != STUN_MAGIC_COOKIE:
        raise StunDecodeError("STUN message without the RFC 5389 magic cookie")
    try:
        message = _stun.parse_message(data)
    except (ValueError, struct.error, IndexError) as exc:
        # aioice raises ValueError for most faults, struct.error for short
        # fixed-size attributes; both mean the same to us.
        raise StunDecodeError(f"malformed STUN message: {exc}") from None
    if message.message_method != _stun.Method.BINDING:
        raise StunDecodeError(f"STUN method {message.message_method.name} is not binding")
    tid = message.transaction_id
    attrs = message.attributes
    if message.message_class == _stun.Class.REQUEST:
        flags = attrs.get("CHANGE-REQUEST", 0)
        return BindingRequest(tid, bool(flags & _CHANGE_IP), bool(flags & _CHANGE_PORT))
    if message.message_class == _stun.Class.ERROR:
        code, reason = attrs.get("ERROR-CODE", (0, ""))
        return BindingErrorResponse(tid, int(code), str(reason))
    if message.message_class != _stun.Class.RESPONSE:
        raise StunDecodeError("STUN binding indication carries no mapping")
    mapped = attrs.get("XOR-MAPPED-ADDRESS")
    from_xor = mapped is not None
    if mapped is None:
        mapped = attrs.get("MAPPED-ADDRESS")
    if mapped is None:
        raise StunDecodeError("binding response without a mapped address")
    other = attrs.get("OTHER-ADDRESS") or attrs.get("CHANGED-ADDRESS")
    origin = attrs.get("RESPONSE-ORIGIN")
    return BindingResponse(
        tid, _address(mapped), from_xor,
        _address(other) if other is not None else None,
        _address(origin) if origin is not None else None,
    )


def _address(value: tuple[str, int]) -> Address:
    return (str(value[0]), int(value[1]))


def encode_binding_request(transaction_id: bytes, *, change_ip: bool = False,
                           change_port: bool = False) -> bytes:
    """A binding request with FINGERPRINT (which lets a shared socket tell
    STUN from other traffic) and, for RFC 5780 tests, CHANGE-REQUEST."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction ID is 12 bytes")
    message = _stun.Message(_stun.Method.BINDING, _stun.Class.REQUEST, transaction_id)
    flags = (_CHANGE_IP if change_ip else 0) | (_CHANGE_PORT if change_port else 0)
    if flags:
        message.attributes["CHANGE-REQUEST"] = flags
    message.add_fingerprint()
    return bytes(message)


def encode_binding_response(transaction_id: bytes, source: Address) -> bytes:
    """The server's answer: the request's source as XOR-MAPPED-ADDRESS, then
    FINGERPRINT.  40 bytes for IPv4, 52 for IPv6: at most 2.6 times the
    smallest request, and the responder rate-limits per source besides."""
    message = _stun.Message(_stun.Method.BINDING, _stun.Class.RESPONSE, transaction_id)
    message.attributes["XOR-MAPPED-ADDRESS"] = source
    message.add_fingerprint()
    return bytes(message)


# -- the client transaction ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendDatagram:
    data: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class BindingSucceeded:
    server: Address
    response: BindingResponse
    source: Address
    """Where the response came from (differs from ``server`` when a change
    request was honoured)."""
    rtt: float
    """Seconds since the first transmission (retransmission waits included)."""
    change_ip: bool = False
    change_port: bool = False


@dataclass(frozen=True, slots=True)
class BindingFailed:
    server: Address
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class BindingTimedOut:
    server: Address
    transmissions: int
    change_ip: bool = False
    change_port: bool = False


BindingAction = SendDatagram | BindingSucceeded | BindingFailed | BindingTimedOut


class BindingTransaction:
    """One binding request to ``server`` with retransmissions.

    Drive it with ``on_timer(now)`` at ``next_deadline()`` (the first call
    sends) and feed it matching responses with ``on_response``; it is
    ``done`` after the first result.  A plain request only accepts answers
    from ``server`` (a spoofer would also have to guess the 96-bit ID); a
    change request accepts them from anywhere, since answering from another
    address is the point."""

    def __init__(self, server: Address, rng: random.Random, now: float,
                 config: RetransmitConfig | None = None, *,
                 change_ip: bool = False, change_port: bool = False) -> None:
        self.server = server
        self.config = config or RetransmitConfig()
        self.change_ip = change_ip
        self.change_port = change_port
        self.transaction_id = rng.getrandbits(96).to_bytes(12, "big")
        self.request = encode_binding_request(
            self.transaction_id, change_ip=change_ip, change_port=change_port)
        self.started = now
        self._sent = 0
        self._next: float | None = now
        self.done = False

    @property
    def transmissions(self) -> int:
        return self._sent

    def next_deadline(self) -> float | None:
        return None if self.done else self._next

    def on_timer(self, now: float) -> list[BindingAction]:
        if self.done or self._next is None or now < self._next:
            return []
        if self._sent >= self.config.max_transmissions:
            self.done = True
            return [BindingTimedOut(self.server, self._sent, self.change_ip, self.change_port)]
        self._sent += 1
        self._next = self.started + self.config.initial_rto * float((1 << self._sent) - 1)
        return [SendDatagram(self.request, self.server)]

    def on_response(self, message: BindingResponse | BindingErrorResponse,
                    source: Address, now: float) -> list[BindingAction]:
        """Use a response carrying our transaction ID; one from elsewhere
        (for a plain request) is ignored."""
        if self.done or message.transaction_id != self.transaction_id or self._sent == 0:
            return []
        changed = self.change_ip or self.change_port
        if not changed and source != self.server:
            return []
        self.done = True
        if isinstance(message, BindingErrorResponse):
            return [BindingFailed(self.server, message.code, message.reason)]
        return [BindingSucceeded(self.server, message, source, now - self.started,
                                 self.change_ip, self.change_port)]
