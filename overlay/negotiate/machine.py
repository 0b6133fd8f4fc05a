"""multistream-select 1.0 negotiation as pure state machines.

Both machines consume decoded messages (see ``messages.MessageReader``) and
return frozen outputs for the driver to carry out; they never do I/O.

``ls`` is answered with ``na``: listing our protocols to anyone who asks is
what identify is for, and go/rust dialers never send ``ls``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from overlay.errors import LocalProtocolError, NegotiationError, ProtocolNotSupported
from overlay.negotiate.messages import LS, MULTISTREAM_PROTOCOL, NA, encode_message

__all__ = [
    "Send",
    "Selected",
    "Output",
    "DialerNegotiation",
    "ListenerNegotiation",
    "TooManyAttempts",
    "DEFAULT_MAX_ATTEMPTS",
]

# A dialer needs one attempt per protocol it knows; a few dozen covers any
# honest peer while bounding the work a prober can make us do per stream.
DEFAULT_MAX_ATTEMPTS = 32


class TooManyAttempts(NegotiationError):
    """The dialer proposed more protocols than the listener allows per stream."""


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` to the stream."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Selected:
    """Negotiation finished; the stream now speaks ``protocol``."""

    protocol: str


Output = Send | Selected


class _DialerState(enum.Enum):
    AWAIT_HEADER = enum.auto()
    AWAIT_ANSWER = enum.auto()
    DONE = enum.auto()


class DialerNegotiation:
    """The initiator: proposes ``protocols`` in order until one is echoed."""

    __slots__ = ("_protocols", "_index", "_state")

    def __init__(self, protocols: Sequence[str]) -> None:
        if not protocols:
            raise LocalProtocolError("at least one protocol is needed")
        self._protocols = tuple(protocols)
        for proto in self._protocols:
            encode_message(proto)  # reject unsendable IDs before any I/O
            if proto in (NA, LS, MULTISTREAM_PROTOCOL):
                raise LocalProtocolError(f"{proto!r} cannot be proposed")
        self._index = 0
        self._state = _DialerState.AWAIT_HEADER

    @property
    def done(self) -> bool:
        return self._state is _DialerState.DONE

    def start(self) -> bytes:
        """The header and first proposal, sent together without waiting."""
        return encode_message(MULTISTREAM_PROTOCOL) + encode_message(self._protocols[0])

    def receive(self, message: str) -> tuple[Output, ...]:
        """Handle one message from the listener.

        Raises ``ProtocolNotSupported`` once every proposal was refused and
        ``NegotiationError`` if the listener breaks the protocol.
        """
        if self._state is _DialerState.AWAIT_HEADER:
            if message != MULTISTREAM_PROTOCOL:
                raise NegotiationError(f"expected {MULTISTREAM_PROTOCOL}, got {message[:64]!r}")
            self._state = _DialerState.AWAIT_ANSWER
            return ()
        if self._state is _DialerState.DONE:
            raise LocalProtocolError("negotiation already finished")
        proposed = self._protocols[self._index]
        if message == proposed:
            self._state = _DialerState.DONE
            return (Selected(proposed),)
        if message != NA:
            raise NegotiationError(f"proposed {proposed!r}, listener answered {message[:64]!r}")
        self._index += 1
        if self._index >= len(self._protocols):
            self._state = _DialerState.DONE
            raise ProtocolNotSupported(self._protocols)
        return (Send(encode_message(self._protocols[self._index])),)


class ListenerNegotiation:
    """The responder: echoes the first proposal ``supported`` accepts."""

    __slots__ = ("_supported", "_max_attempts", "_attempts", "_got_header", "_done")

    def __init__(
        self, supported: Callable[[str], bool], max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be positive")
        self._supported = supported
        self._max_attempts = max_attempts
        self._attempts = 0
        self._got_header = False
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def start(self) -> bytes:
        return encode_message(MULTISTREAM_PROTOCOL)

    def receive(self, message: str) -> tuple[Output, ...]:
        if self._done:
            raise LocalProtocolError("negotiation already finished")
        if not self._got_header:
            if message != MULTISTREAM_PROTOCOL:
                raise NegotiationError(f"expected {MULTISTREAM_PROTOCOL}, got {message[:64]!r}")
            self._got_header = True
            return ()
        self._attempts += 1
        if self._attempts > self._max_attempts:
            raise TooManyAttempts(f"more than {self._max_attempts} proposals on one stream")
        if message not in (NA, LS, MULTISTREAM_PROTOCOL) and self._supported(message):
            self._done = True
            return (Send(encode_message(message)), Selected(message))
        return (Send(encode_message(NA)),)
