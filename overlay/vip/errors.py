"""Errors of the virtual-IP subsystem."""

from __future__ import annotations

from overlay.errors import DecodeError, LimitExceeded, RemoteProtocolError

__all__ = ["BadPacket", "ForgedSource", "AllocatorFull"]


class BadPacket(DecodeError):
    """An IP packet that cannot be parsed: too short, too long, an unknown
    version or a header length that does not fit."""


class ForgedSource(RemoteProtocolError):
    """A packet whose source or destination address does not belong to the
    peer it came from (or to us)."""


class AllocatorFull(LimitExceeded):
    """Every IPv4 virtual address is held by a peer still in use."""
