"""The one registry of error codes: which exception answers which API
``error.code``, and which exit status the CLI gives each code.

The API server answers every failed op with ``error_code_for(exc)``; an
exception no entry matches (and no ``ApiError``) is a bug and answers
``internal`` (overlay/daemon/api.py).  The CLI exits with
``exit_status_for(code)``.  Only the error modules of the subsystems are
imported here, so the CLI can use this without loading the subsystems.
"""

from __future__ import annotations

from collections.abc import Mapping

from overlay.daemon.errors import ApiError
from overlay.daemon.protocol import ErrorCode
from overlay.errors import (
    ConnectionClosed,
    DialError,
    HandshakeError,
    InvalidMultiaddr,
    InvalidPeerId,
    LimitExceeded,
    PeerIdMismatch,
    ProtocolNotSupported,
    StreamClosed,
    StreamReset,
)
from overlay.kad.errors import InvalidProviderKey, InvalidRecord
from overlay.kad.service_errors import NoPeersKnown, PeerNotFound, QuorumFailed, ValueNotFound
from overlay.naming.errors import InvalidName, NamingError, OwnerChanged
from overlay.naming.net_errors import NameNotFound, NameTaken, NotOwner, PublishFailed, ResolveFailed

__all__ = [
    "CODES",
    "DhtErrorCode",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "NameErrorCode",
    "RendezvousErrorCode",
    "error_code_for",
    "exit_status_for",
]


class DhtErrorCode:
    """``error.code`` strings of the dht ops, beyond the common ones."""

    NOT_FOUND = "not_found"
    """No record, peer or provider was found."""
    QUORUM_FAILED = "quorum_failed"
    """Too few peers accepted a PUT or provider announcement."""
    NO_PEERS = "no_peers"
    """The routing table is empty (no bootstrap peer reachable)."""
    INVALID_RECORD = "invalid_record"
    """The key's namespace is unknown or the value fails its validator."""


class NameErrorCode:
    """``error.code`` strings of the name ops (beyond the common ones)."""

    INVALID_NAME = "invalid_name"
    NAME_NOT_FOUND = "name_not_found"
    NAME_TAKEN = "name_taken"
    NOT_OWNER = "not_owner"
    OWNER_CHANGED = "owner_changed"
    PUBLISH_FAILED = "publish_failed"
    RESOLVE_FAILED = "resolve_failed"
    RECORD_REJECTED = "record_rejected"


class RendezvousErrorCode:
    """``error.code`` strings of the rendezvous ops."""

    NO_POINT = "no_rendezvous_point"
    """No ``at``, and no bootstrap peer serves rendezvous."""
    REFUSED = "rendezvous_refused"
    FAILED = "rendezvous_failed"
    """Every one of several points failed."""


CODES: tuple[tuple[type[BaseException], str], ...] = (
    # Most specific first: the first matching class names the code.
    (InvalidMultiaddr, ErrorCode.INVALID_MULTIADDR),
    (InvalidPeerId, ErrorCode.INVALID_PEER_ID),
    (PeerIdMismatch, ErrorCode.PEER_ID_MISMATCH),
    (HandshakeError, ErrorCode.HANDSHAKE_FAILED),
    (DialError, ErrorCode.DIAL_FAILED),
    (ProtocolNotSupported, ErrorCode.PROTOCOL_NOT_SUPPORTED),
    (ConnectionClosed, ErrorCode.CONNECTION_CLOSED),
    (StreamReset, ErrorCode.STREAM_FAILED),
    (StreamClosed, ErrorCode.STREAM_FAILED),
    (ValueNotFound, DhtErrorCode.NOT_FOUND),
    (PeerNotFound, DhtErrorCode.NOT_FOUND),
    (QuorumFailed, DhtErrorCode.QUORUM_FAILED),
    (NoPeersKnown, DhtErrorCode.NO_PEERS),
    (InvalidRecord, DhtErrorCode.INVALID_RECORD),
    (InvalidProviderKey, ErrorCode.BAD_REQUEST),
    (InvalidName, NameErrorCode.INVALID_NAME),
    (NameNotFound, NameErrorCode.NAME_NOT_FOUND),
    (NameTaken, NameErrorCode.NAME_TAKEN),
    (NotOwner, NameErrorCode.NOT_OWNER),
    (OwnerChanged, NameErrorCode.OWNER_CHANGED),
    (PublishFailed, NameErrorCode.PUBLISH_FAILED),
    (ResolveFailed, NameErrorCode.RESOLVE_FAILED),
    (NamingError, NameErrorCode.RECORD_REJECTED),
    (LimitExceeded, ErrorCode.LIMIT_EXCEEDED),
    (TimeoutError, ErrorCode.TIMEOUT),
)
"""Exception class → API error code.  An ``OverlayError`` matching none
answers ``failed``; any other exception is a bug and answers ``internal``."""

EXIT_FAILED = 1
EXIT_USAGE = 2
"""Bad usage or bad input (a malformed peer ID, name, key, range)."""
EXIT_NOT_FOUND = 4
"""The lookup answered: nothing (no record, peer, provider or name)."""

_EXIT_STATUS: Mapping[str, int] = {
    # "your input is wrong"
    ErrorCode.BAD_REQUEST: EXIT_USAGE,
    ErrorCode.INVALID_MULTIADDR: EXIT_USAGE,
    ErrorCode.INVALID_PEER_ID: EXIT_USAGE,
    ErrorCode.MESSAGE_TOO_LARGE: EXIT_USAGE,
    NameErrorCode.INVALID_NAME: EXIT_USAGE,
    DhtErrorCode.INVALID_RECORD: EXIT_USAGE,
    # "the lookup answered: nothing there"
    DhtErrorCode.NOT_FOUND: EXIT_NOT_FOUND,
    NameErrorCode.NAME_NOT_FOUND: EXIT_NOT_FOUND,
}
"""API error code → the CLI's exit status; every other code exits 1."""


def error_code_for(exc: BaseException) -> str:
    """The API error code for an exception an op raised (``failed`` when
    no entry matches)."""
    if isinstance(exc, ApiError):
        return exc.code
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return ErrorCode.FAILED


def exit_status_for(code: str) -> int:
    """The CLI's exit status for a daemon error ``code``."""
    return _EXIT_STATUS.get(code, EXIT_FAILED)
