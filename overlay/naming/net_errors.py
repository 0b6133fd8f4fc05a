"""Errors of name resolution and publication over the network.

The record-level errors (forged, expired, pinned …) are in
``overlay.naming.errors``; these say what happened to an operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overlay.errors import LocalProtocolError, TransportError
from overlay.naming.errors import NamingError

if TYPE_CHECKING:
    from overlay.naming.record import NameRecord

__all__ = ["NameNotFound", "NameTaken", "NotOwner", "PublishFailed", "ResolveFailed"]


class NameNotFound(NamingError):
    """No valid record exists for the name (or it was released)."""

    def __init__(self, name: str, *, cached: bool = False, released: bool = False,
                 release: NameRecord | None = None, closest: tuple[bytes, ...] = ()) -> None:
        released = released or release is not None
        why = "was released" if released else "has no valid record"
        source = " (cached negative answer)" if cached else ""
        super().__init__(f"{name} {why}{source}")
        self.name = name
        self.cached = cached
        self.released = released
        self.release = release
        """The RELEASE record the network answered with, if any: the next
        owner carries it as proof to resolvers that pinned the old owner."""
        self.closest = closest
        """Responders of the lookup, closest first (where to publish)."""


class ResolveFailed(NamingError, TransportError):
    """The network could not be asked (no DHT peers, lookup timed out)."""


class PublishFailed(NamingError, TransportError):
    """No storage node accepted the record."""


class NameTaken(NamingError, LocalProtocolError):
    """Another key owns the name until its record expires."""

    def __init__(self, name: str, owner_peer: str, until: int) -> None:
        super().__init__(f"{name} is owned by {owner_peer} until {until}")
        self.name = name
        self.owner_peer = owner_peer
        self.until = until


class NotOwner(NamingError, LocalProtocolError):
    """This node does not own the name it was asked to change."""

    def __init__(self, name: str) -> None:
        super().__init__(f"this node does not own {name}")
        self.name = name
