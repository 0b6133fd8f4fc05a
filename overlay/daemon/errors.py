"""Errors of the daemon, its control API and the client side of that API."""

from __future__ import annotations

from pathlib import Path

from overlay.errors import LocalProtocolError, OverlayError, RemoteProtocolError

__all__ = [
    "DaemonError",
    "DaemonNotRunning",
    "DaemonAlreadyRunning",
    "ListenFailed",
    "IdentityError",
    "ApiError",
    "BadRequest",
    "ApiProtocolError",
    "MalformedMessage",
]


class DaemonError(OverlayError):
    """The daemon could not start or keep running; the message says why."""


class DaemonNotRunning(DaemonError):
    """Nothing answers on the API socket."""

    def __init__(self, socket_path: Path | str) -> None:
        super().__init__(
            f"no daemon is running at {socket_path}; start one with "
            "`overlay daemon` (or `overlay --home DIR daemon`)"
        )
        self.socket_path = str(socket_path)


class DaemonAlreadyRunning(DaemonError):
    """Another daemon already serves the API socket of this data directory."""

    def __init__(self, socket_path: Path | str) -> None:
        super().__init__(
            f"another daemon is already running at {socket_path}; stop it first "
            "or use another data directory (--home DIR)"
        )
        self.socket_path = str(socket_path)


class ListenFailed(DaemonError):
    """A listen address could not be bound (busy port, unknown address)."""


class IdentityError(DaemonError):
    """The identity key file exists but cannot be used; it is never replaced."""


class ApiError(OverlayError):
    """A request failed with a typed error code (see docs/api.md).

    Handlers raise it to send ``{"ok": false, "error": {code, message}}``;
    the client raises it when it receives such a reply.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(ApiError, LocalProtocolError):
    """A request has a missing or ill-typed field."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(code, message)


class ApiProtocolError(RemoteProtocolError):
    """The other end of the API socket broke the framing or sent non-JSON."""


class MalformedMessage(ApiProtocolError):
    """A frame was intact but its body is not a UTF-8 JSON object."""
