"""Typed errors of the naming subsystem.

Every rejection says which rule failed: a storage node turns a
``RecordRejected`` into a refused PUT (the sender loses that request, never
the node), a resolver turns it into "this responder is wrong, correct it".
``InvalidName`` is local misuse (someone typed a bad name); a bad name inside
a record that arrived from the network is ``MalformedName``.
"""

from __future__ import annotations

from overlay import statefile
from overlay.errors import (
    DecodeError,
    InvalidSignature,
    LimitExceeded,
    LocalProtocolError,
    MessageTooLarge,
    OverlayError,
    RemoteProtocolError,
)

__all__ = [
    "NamingError",
    "InvalidName",
    "RecordRejected",
    "MalformedRecord",
    "UnsupportedVersion",
    "TooLarge",
    "MalformedName",
    "ForgedSignature",
    "Expired",
    "ValidityTooLong",
    "BadProofOfWork",
    "WrongOwner",
    "OwnerPinned",
    "StaleSequence",
    "OwnerChanged",
    "CorruptState",
    "PowNotFound",
]


class NamingError(OverlayError):
    """Root of the naming subsystem's errors."""


class InvalidName(NamingError, LocalProtocolError, ValueError):
    """A name breaks a normalization rule; ``rule`` names which one.

    Rules: ``empty``, ``name-length``, ``empty-label``, ``label-length``,
    ``ldh``, ``hyphen``, ``reserved-hyphens``, ``idna``, ``zone``,
    ``self-certifying-form``.
    """

    def __init__(self, rule: str, name: str, detail: str) -> None:
        super().__init__(f"invalid name {name!r}: {detail} (rule: {rule})")
        self.rule = rule
        self.name = name
        self.detail = detail


class RecordRejected(NamingError, RemoteProtocolError):
    """A name record from the network was refused; subclasses say why."""


class MalformedRecord(RecordRejected, DecodeError):
    """The bytes are not a well-formed, canonically encoded name record."""


class UnsupportedVersion(MalformedRecord):
    """The record's format version is not one this node understands."""

    def __init__(self, version: int, supported: int) -> None:
        super().__init__(f"record version {version} is not supported (only {supported})")
        self.version = version
        self.supported = supported


class TooLarge(RecordRejected, MessageTooLarge):
    """The serialized record exceeds the cap; refused before any parsing."""

    def __init__(self, size: int, limit: int) -> None:
        MessageTooLarge.__init__(self, size, limit)


class MalformedName(RecordRejected):
    """A record carries a name that is not in normalized form."""

    def __init__(self, name: str, rule: str, detail: str) -> None:
        super().__init__(f"record name {name!r} is invalid: {detail} (rule: {rule})")
        self.name = name
        self.rule = rule


class ForgedSignature(RecordRejected, InvalidSignature):
    """The owner's signature does not verify over the record."""


class Expired(RecordRejected):
    """The record's validity ended at or before ``now``."""

    def __init__(self, expires: int, now: float) -> None:
        super().__init__(f"record expired at {expires}, now is {now:.0f}")
        self.expires = expires
        self.now = now


class ValidityTooLong(RecordRejected):
    """The record claims validity further in the future than allowed.

    Owners are pinned until expiry, so an unbounded expiry would let a
    squatter hold a name forever without renewing it."""

    def __init__(self, expires: int, limit: float) -> None:
        super().__init__(f"record expires at {expires}, later than the limit {limit:.0f}")
        self.expires = expires
        self.limit = limit


class BadProofOfWork(RecordRejected):
    """The proof-of-work nonce does not meet the difficulty for (name, owner)."""

    def __init__(self, name: str, bits: int) -> None:
        super().__init__(f"proof of work for {name!r} does not reach {bits} leading zero bits")
        self.name = name
        self.bits = bits


class WrongOwner(RecordRejected):
    """The record's owner may not publish this name (self-certifying name
    of another key, or a transfer that does not chain)."""


class OwnerPinned(WrongOwner):
    """A storage node holds an unexpired record of another owner."""

    def __init__(self, name: str, pinned_until: int) -> None:
        super().__init__(f"{name!r} is owned by another key until {pinned_until}")
        self.name = name
        self.pinned_until = pinned_until


class StaleSequence(RecordRejected):
    """Same owner, but the sequence number is not higher than the one held."""

    def __init__(self, incoming: int, held: int) -> None:
        super().__init__(f"sequence {incoming} is not newer than the held {held}")
        self.incoming = incoming
        self.held = held


class OwnerChanged(NamingError, RemoteProtocolError):
    """A resolver saw a different owner for a name it pinned (TOFU), before
    that pin expired and without a transfer from the pinned owner."""

    def __init__(self, name: str, pinned_owner: bytes, new_owner: bytes, pinned_until: int) -> None:
        super().__init__(
            f"owner of {name!r} changed before its pin expired at {pinned_until} "
            "without a transfer signed by the pinned owner"
        )
        self.name = name
        self.pinned_owner = pinned_owner
        self.new_owner = new_owner
        self.pinned_until = pinned_until


class CorruptState(NamingError, LocalProtocolError, statefile.CorruptState):
    """A persisted naming state file (pins, cache, owned names) is unreadable."""


class PowNotFound(NamingError, LimitExceeded):
    """``solve_pow`` used its iteration budget without finding a nonce."""
