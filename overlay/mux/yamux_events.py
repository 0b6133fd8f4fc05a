"""Errors and events of the yamux session core (``yamux_session.YamuxCore``)."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.errors import ConnectionClosed, LimitExceeded
from overlay.mux.yamux_frames import YamuxProtocolError

__all__ = [
    "Event",
    "StreamOpened",
    "DataReceived",
    "StreamEnded",
    "StreamWasReset",
    "StreamAcked",
    "StreamWritable",
    "PingRtt",
    "GoAwayReceived",
    "ConnectionTerminated",
    "PingTimedOut",
    "SessionClosed",
    "KeepaliveTimeout",
    "GoingAway",
    "TooManyStreams",
    "AckBacklogFull",
    "WindowExceeded",
    "StreamIdError",
]


# --- errors -------------------------------------------------------------------


class SessionClosed(ConnectionClosed):
    """The session ended (connection closed, or a protocol violation)."""


class KeepaliveTimeout(SessionClosed):
    """The peer sent nothing and left a keep-alive ping unanswered for
    ``ping_timeout`` seconds: the connection is presumed dead."""


class GoingAway(ConnectionClosed):
    """A Go Away was sent or received: no new streams can be opened."""


class TooManyStreams(LimitExceeded):
    """``max_outbound_streams`` of our streams are already open."""


class AckBacklogFull(LimitExceeded):
    """``max_ack_backlog`` of our streams still wait for the peer's ACK."""


class WindowExceeded(YamuxProtocolError):
    """The peer sent more Data on a stream than the window we granted."""


class StreamIdError(YamuxProtocolError):
    """A SYN reused a stream ID, used our parity, or went backwards; or a
    stream frame used the session ID 0."""


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened ``stream_id``; ``accept_stream`` acknowledges it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes for the application; report them with ``on_consumed`` once read."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed ``stream_id`` (FIN): EOF after the data before it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamWasReset:
    """The peer reset ``stream_id`` (or refused it with RST)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamAcked:
    """The peer acknowledged our stream; the ACK backlog shrank."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """``send_buffered(stream_id)`` fell from above ``send_buffer_limit`` to
    the limit or below: a blocked ``drain()`` may return."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingRtt:
    """The answer to our ping ``value`` came back after ``rtt`` seconds."""

    value: int
    rtt: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will open no more streams and accepts none (``GoAwayCode``)."""

    code: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The session is over; every open stream is gone.  ``error`` is the
    peer's violation (a Go Away with PROTOCOL_ERROR was queued), a
    ``KeepaliveTimeout``, or None when the connection simply ended."""

    error: YamuxProtocolError | KeepaliveTimeout | None


@dataclass(frozen=True, slots=True)
class PingTimedOut:
    """Our ping ``value`` got no answer within ``ping_timeout``."""

    value: int


Event = (
    StreamOpened
    | DataReceived
    | StreamEnded
    | StreamWasReset
    | StreamAcked
    | StreamWritable
    | PingRtt
    | GoAwayReceived
    | ConnectionTerminated
    | PingTimedOut
)
