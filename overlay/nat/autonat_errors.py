"""Errors of AutoNAT v2, as branches of overlay's one error tree.

A peer's bad bytes or a hostile request cost that stream (the handler
resets it); a server's refusal or a failed test is an ``AutoNATFailed``
subclass so the client can tell "this server will not help" from "this
address was dialled and failed".
"""

from __future__ import annotations

from overlay.errors import DecodeError, MessageTooLarge, OverlayError, RemoteProtocolError

__all__ = [
    "AutoNATError",
    "AutoNATDecodeError",
    "AutoNATMessageTooLarge",
    "UnexpectedAutoNATMessage",
    "NonceMismatch",
    "DialDataRefused",
    "AutoNATFailed",
    "RequestRejected",
    "DialRefused",
    "ServerInternalError",
    "DialBackFailed",
]


class AutoNATError(OverlayError):
    """Root of the errors AutoNAT raises on purpose."""


class AutoNATDecodeError(AutoNATError, DecodeError):
    """An AutoNAT message is malformed (bad protobuf, missing field, unknown
    status code, too many addresses)."""


class AutoNATMessageTooLarge(AutoNATDecodeError, MessageTooLarge):
    """A length prefix or data chunk exceeds AutoNAT's limits."""


class UnexpectedAutoNATMessage(AutoNATError, RemoteProtocolError):
    """A well-formed message arrived where the protocol does not allow it
    (a response sent to a server, data nobody asked for, an index out of
    range)."""


class NonceMismatch(AutoNATError, RemoteProtocolError):
    """A dial-back carried a nonce we did not send (or already used)."""


class DialDataRefused(AutoNATError, RemoteProtocolError):
    """The server asked for more dial data than we are willing to send."""


class AutoNATFailed(AutoNATError):
    """A test did not produce a result; the message says why."""


class RequestRejected(AutoNATFailed):
    """E_REQUEST_REJECTED: the server is rate limiting or not serving."""


class DialRefused(AutoNATFailed):
    """E_DIAL_REFUSED: the server would dial none of our addresses."""


class ServerInternalError(AutoNATFailed):
    """E_INTERNAL_ERROR from the server."""


class DialBackFailed(AutoNATFailed):
    """The server connected but could not deliver the nonce
    (E_DIAL_BACK_ERROR), or claimed success without us receiving it."""
