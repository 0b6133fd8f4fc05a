"""Errors of the Kademlia subsystem, each a leaf of the overlay error tree."""

from __future__ import annotations

from overlay.errors import DecodeError, LimitExceeded, LocalProtocolError, RemoteProtocolError

__all__ = [
    "InvalidKadMessage",
    "UnsupportedMessageType",
    "TooManyPeers",
    "InvalidPeerInfo",
    "InvalidRecord",
    "UnknownNamespace",
    "RecordTooLarge",
    "StaleRecord",
    "StorageQuotaExceeded",
    "InvalidProviderKey",
    "LookupStateError",
]


class InvalidKadMessage(DecodeError):
    """A kad message is malformed: bad protobuf, missing or unknown fields."""


class UnsupportedMessageType(InvalidKadMessage):
    """A message type we never accept (unknown numbers, and the deprecated PING)."""

    def __init__(self, type_number: int) -> None:
        super().__init__(f"unsupported kad message type {type_number}")
        self.type_number = type_number


class TooManyPeers(InvalidKadMessage):
    """A closer-peer or provider list is longer than any honest server sends."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} peers in one kad message exceed the limit of {limit}")
        self.count = count
        self.limit = limit


class InvalidPeerInfo(InvalidKadMessage):
    """A peer entry carries a garbage peer ID or a malformed multiaddr."""


class InvalidRecord(RemoteProtocolError):
    """A record failed its namespace's validator."""


class UnknownNamespace(InvalidRecord):
    """No validator is registered for the record key's namespace."""

    def __init__(self, namespace: str) -> None:
        super().__init__(f"no validator registered for record namespace {namespace!r}")
        self.namespace = namespace


class RecordTooLarge(InvalidRecord):
    """A record's key or value exceeds the store's size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class StaleRecord(InvalidRecord):
    """A PUT carried a record the selector ranks below the one already held."""


class StorageQuotaExceeded(LimitExceeded):
    """A peer (or the whole store) holds as many records as it may."""


class InvalidProviderKey(RemoteProtocolError):
    """A provider key is empty or longer than the 80-byte limit."""


class LookupStateError(LocalProtocolError):
    """A lookup was fed a result it cannot accept (for example from a peer it never asked)."""
