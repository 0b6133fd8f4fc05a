"""Errors of the circuit relay subsystem, as branches of overlay's one error tree.

A remote peer's bad bytes (``RelayDecodeError``, ``InvalidVoucher``,
``UnexpectedRelayMessage``) cost that stream; a relay's refusal is a
``RelayRefused`` subclass named after the spec's status so a caller can
tell "no reservation" from "over a limit" without comparing numbers.
"""

from __future__ import annotations

from overlay.errors import (
    DecodeError,
    DialError,
    InvalidSignature,
    LimitExceeded,
    LocalProtocolError,
    MessageTooLarge,
    OverlayError,
    RemoteProtocolError,
)

__all__ = [
    "RelayError",
    "RelayDecodeError",
    "RelayMessageTooLarge",
    "UnexpectedRelayMessage",
    "InvalidVoucher",
    "RelayRefused",
    "ReservationRefused",
    "ResourceLimitExceeded",
    "PermissionDenied",
    "ConnectionFailed",
    "NoReservation",
    "RelayMalformedMessage",
    "RelayUnexpectedMessage",
    "refusal_for_status",
    "NoRelay",
]


class RelayError(OverlayError):
    """Root of the errors the relay subsystem raises on purpose."""


class RelayDecodeError(DecodeError, RelayError):
    """A hop or stop message is malformed (bad protobuf, unknown type,
    a required field missing, a bad peer ID).  Costs the sender its stream."""


class RelayMessageTooLarge(MessageTooLarge, RelayError):
    """A hop or stop message is over the limit; refused before parsing."""


class UnexpectedRelayMessage(RemoteProtocolError, RelayError):
    """A well-formed message of the wrong type for this point of the exchange."""


class InvalidVoucher(InvalidSignature, RelayError):
    """A reservation voucher does not verify, or names another relay, another
    peer, or an expiration that disagrees with the reservation."""


class RelayRefused(RelayError):
    """The relay (or the target, through the relay) answered with an error
    status: ``status`` is the spec's code, ``name`` its name."""

    def __init__(self, status: int, name: str, detail: str = "") -> None:
        super().__init__(f"{detail + ': ' if detail else ''}the relay refused ({name})")
        self.status = status
        self.name = name


class ReservationRefused(RelayRefused):
    """RESERVATION_REFUSED (200)."""


class ResourceLimitExceeded(RelayRefused, LimitExceeded):
    """RESOURCE_LIMIT_EXCEEDED (201)."""


class PermissionDenied(RelayRefused):
    """PERMISSION_DENIED (202)."""


class ConnectionFailed(RelayRefused, DialError):
    """CONNECTION_FAILED (203): the relay could not reach the target, or the
    target refused the stop CONNECT.  A ``DialError``: the target is not
    reachable this way."""


class NoReservation(RelayRefused, DialError):
    """NO_RESERVATION (204): the target holds no reservation on that relay,
    so it cannot be found there (a ``DialError``, as for an address nobody
    answers at)."""


class RelayMalformedMessage(RelayRefused):
    """MALFORMED_MESSAGE (400): the relay could not parse what we sent."""


class RelayUnexpectedMessage(RelayRefused):
    """UNEXPECTED_MESSAGE (401)."""


_BY_STATUS: dict[int, type[RelayRefused]] = {
    200: ReservationRefused,
    201: ResourceLimitExceeded,
    202: PermissionDenied,
    203: ConnectionFailed,
    204: NoReservation,
    400: RelayMalformedMessage,
    401: RelayUnexpectedMessage,
}


def refusal_for_status(status: int, name: str, detail: str = "") -> RelayRefused:
    """The typed refusal for a status code (``RelayRefused`` for unknown ones)."""
    return _BY_STATUS.get(status, RelayRefused)(status, name, detail)


class NoRelay(LocalProtocolError, RelayError):
    """Nothing to relay through: no reservation, or a bad relay address."""
