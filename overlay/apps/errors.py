"""Errors of the application layer (services, forwards, the proxy).

Parsers raise ``ProxyProtocolError`` subclasses (a client sent bytes we
cannot serve); connecting a target raises ``TargetError`` with a
``reason`` that the proxy turns into a SOCKS5 reply code or an HTTP error
page and the API into an error code.
"""

from __future__ import annotations

import enum

from overlay.errors import OverlayError, RemoteProtocolError

__all__ = [
    "AppsError",
    "HeadTooLarge",
    "HttpRequestError",
    "ProxyProtocolError",
    "Reason",
    "ServiceHeaderError",
    "SocksError",
    "TargetError",
]


class AppsError(OverlayError):
    """Any failure of the application layer."""


class ProxyProtocolError(AppsError, RemoteProtocolError):
    """A proxy client (or a service stream's opener) sent bytes we cannot
    parse; only that connection is closed."""


class SocksError(ProxyProtocolError):
    """A malformed or unsupported SOCKS5 message.  ``reply`` is the RFC 1928
    reply code to send back when the exchange got that far (None: close)."""

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class HttpRequestError(ProxyProtocolError):
    """A malformed HTTP proxy request; ``status`` is the answer to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HeadTooLarge(HttpRequestError):
    """The request line and headers exceed the limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 431)


class ServiceHeaderError(ProxyProtocolError):
    """A malformed ``/ovl/tcp/1.0.0`` header or status."""


class Reason(enum.Enum):
    """Why a target could not be reached, as a person reads it."""

    UNKNOWN_NAME = "unknown_name"
    """No record for the name (or it was released)."""
    PEER_OFFLINE = "peer_offline"
    """The name is known but no peer it names answered."""
    NOT_EXPOSED = "not_exposed"
    """The peer does not expose that service (or the record lists none for the port)."""
    REFUSED = "refused"
    """The service's allowlist does not include us."""
    UNREACHABLE = "unreachable"
    """The exposing node could not connect to its local port, or a direct
    TCP connection failed."""
    BAD_TARGET = "bad_target"
    """A malformed host, port or name."""
    RESOLVE_FAILED = "resolve_failed"
    """The naming layer could not answer (no DHT peers, too few answers)."""


class TargetError(AppsError):
    """A target could not be connected; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
