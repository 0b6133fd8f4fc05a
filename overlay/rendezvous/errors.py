"""Errors of the rendezvous subsystem, as branches of overlay's one error tree."""

from __future__ import annotations

from overlay.errors import DecodeError, LocalProtocolError, MessageTooLarge, OverlayError

__all__ = [
    "RendezvousDecodeError",
    "RendezvousMessageTooLarge",
    "InvalidNamespace",
    "RendezvousRefused",
    "NoRendezvousPoint",
]


class RendezvousDecodeError(DecodeError):
    """A rendezvous message is malformed: bad protobuf, an unknown type, a
    missing body, invalid UTF-8 in a namespace.  Costs the sender its stream."""


class RendezvousMessageTooLarge(MessageTooLarge):
    """A rendezvous message is over the limit; refused before parsing."""


class InvalidNamespace(LocalProtocolError, ValueError):
    """A namespace we were asked to use is empty, too long or not text."""


class RendezvousRefused(OverlayError):
    """The rendezvous point answered with an error status (``status`` is
    the spec's code, ``text`` its explanation)."""

    def __init__(self, status: int, name: str, text: str) -> None:
        detail = f": {text}" if text else ""
        super().__init__(f"the rendezvous point refused ({name}){detail}")
        self.status = status
        self.name = name
        self.text = text


class NoRendezvousPoint(LocalProtocolError):
    """No peer to ask: none given and none of the known ones serves rendezvous."""
