"""Errors of the NAT subsystem, as branches of overlay's one error tree."""

from __future__ import annotations

from overlay.errors import DecodeError, LocalProtocolError, MessageTooLarge

__all__ = ["StunDecodeError", "StunMessageTooLarge", "InvalidStunServer"]


class StunDecodeError(DecodeError):
    """A datagram is not a STUN message we can use (malformed, not a binding
    message, no usable address)."""


class StunMessageTooLarge(MessageTooLarge):
    """A datagram is larger than any STUN message we accept; it is refused
    before parsing."""


class InvalidStunServer(LocalProtocolError, ValueError):
    """A STUN server was given in a form other than ``HOST:PORT``."""
