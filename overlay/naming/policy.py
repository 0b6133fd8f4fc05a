"""Selection between valid records and the storage-node policy.

Both work on records that already passed ``validate``.  The one relation
they share is ``supersedes(new, old)``:

- after a TRANSFER, only the receiving owner may follow, and the old owner
  is locked out (a transfer is final where it is stored);
- the same owner: a higher sequence wins; equal sequences are broken by the
  later expiry, then by the larger canonical bytes, so every node picks the
  same record;
- a different owner wins only over a RELEASE, or with a transfer or
  release proof signed by the held record's owner at a higher sequence than
  that record (a storage node that missed the release still lets the next
  owner in).

``StoragePolicy.accept`` adds the clock: a held record that has expired
no longer pins its owner, so anyone may register the name again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from overlay.naming.config import NamingConfig
from overlay.naming.errors import OwnerPinned, RecordRejected, StaleSequence, WrongOwner
from overlay.naming.record import NameRecord, RecordKind, decode_record
from overlay.naming.validate import validate

__all__ = [
    "Decision",
    "Reason",
    "StoragePolicy",
    "decide",
    "released_by",
    "select",
    "select_index",
    "supersedes",
]


class Reason(enum.Enum):
    NEW = "new"
    """Nothing was held for the name."""
    REPLACES_EXPIRED = "replaces-expired"
    """The held record had expired; its owner is no longer pinned."""
    NEWER = "newer"
    """Same owner, higher sequence (or the deterministic tie-break)."""
    DUPLICATE = "duplicate"
    """Byte-identical to the held record."""
    TRANSFERRED = "transferred"
    """The held owner handed the name to the incoming owner."""
    RELEASED = "released"
    """The held record released the name."""
    STALE = "stale"
    """Same owner, not newer."""
    OWNER_PINNED = "owner-pinned"
    """Another owner holds the name until the held record expires."""
    TRANSFERRED_AWAY = "transferred-away"
    """The incoming owner transferred the name to someone else."""
    NAME_MISMATCH = "name-mismatch"
    """The two records are about different names."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a storage node stores ``incoming`` in place of what it holds."""

    accept: bool
    reason: Reason
    error: RecordRejected | None = None
    """For a refusal, the typed error to report to the sender."""

    def raise_if_refused(self) -> None:
        if self.error is not None:
            raise self.error


def _tiebreak_key(record: NameRecord) -> tuple[int, bytes]:
    return (record.expires, record.to_bytes())


def _proof(record: NameRecord) -> NameRecord | None:
    """The transfer that handed the name to ``record``'s owner, if carried."""
    if not record.transfer_proof:
        return None
    try:
        proof = decode_record(record.transfer_proof)
    except RecordRejected:
        return None
    if proof.kind is not RecordKind.TRANSFER or proof.new_owner != record.owner:
        return None
    return proof


def released_by(record: NameRecord) -> NameRecord | None:
    """The RELEASE ``record`` carries as proof, if it decodes as one of
    this name (``validate`` has checked its signature)."""
    if not record.release_proof:
        return None
    try:
        proof = decode_record(record.release_proof)
    except RecordRejected:
        return None
    if proof.kind is not RecordKind.RELEASE or proof.name != record.name:
        return None
    return proof


def _release_from(record: NameRecord, old: NameRecord) -> bool:
    """Whether ``record`` carries ``old``'s owner's release, newer than ``old``."""
    proof = released_by(record)
    return proof is not None and proof.owner == old.owner and proof.sequence > old.sequence


def _proof_from(record: NameRecord, old: NameRecord) -> bool:
    """Whether ``record`` carries a transfer proof from ``old``'s owner that
    is newer than ``old``."""
    proof = _proof(record)
    return proof is not None and proof.owner == old.owner and proof.sequence > old.sequence


def decide(new: NameRecord, old: NameRecord) -> Reason:
    """Why ``new`` does or does not supersede ``old`` (both valid, unexpired);
    the returned reason is accepting exactly when ``new`` may replace ``old``."""
    if new.name != old.name:
        return Reason.NAME_MISMATCH
    if new.to_bytes() == old.to_bytes():
        return Reason.DUPLICATE
    if old.kind is RecordKind.TRANSFER:
        proof = _proof(new)
        if new.owner == old.new_owner or (proof is not None and proof.owner == old.new_owner):
            # The receiver, or whoever the receiver passed the name on to.
            return Reason.TRANSFERRED
        return Reason.TRANSFERRED_AWAY if new.owner == old.owner else Reason.OWNER_PINNED
    if new.owner == old.owner:
        if new.sequence != old.sequence:
            return Reason.NEWER if new.sequence > old.sequence else Reason.STALE
        return Reason.NEWER if _tiebreak_key(new) > _tiebreak_key(old) else Reason.STALE
    if old.kind is RecordKind.RELEASE or _release_from(new, old):
        return Reason.RELEASED
    if _proof_from(new, old):
        return Reason.TRANSFERRED
    return Reason.OWNER_PINNED


_ACCEPTING = frozenset(
    {
        Reason.NEW,
        Reason.REPLACES_EXPIRED,
        Reason.NEWER,
        Reason.DUPLICATE,
        Reason.TRANSFERRED,
        Reason.RELEASED,
    }
)


def supersedes(new: NameRecord, old: NameRecord) -> bool:
    """Whether ``new`` strictly replaces ``old`` (duplicates do not)."""
    reason = decide(new, old)
    return reason in _ACCEPTING and reason is not Reason.DUPLICATE


def select(a: NameRecord, b: NameRecord) -> NameRecord:
    """The better of two valid records; ``a`` is kept unless ``b`` supersedes
    it.  Deterministic and order-independent within one owner's history;
    between unrelated owners the held one (``a``) stays, and resolvers
    settle such conflicts by majority (``overlay.naming.resolve``)."""
    return b if supersedes(b, a) else a


def select_index(records: list[NameRecord]) -> int:
    """Index of the record that wins a left fold of ``select``."""
    if not records:
        raise ValueError("select_index needs at least one record")
    best = 0
    for index in range(1, len(records)):
        if supersedes(records[index], records[best]):
            best = index
    return best


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """What a DHT storage node stores for a name (pure)."""

    config: NamingConfig = NamingConfig()

    def accept(self, existing: NameRecord | None, incoming: NameRecord, now: float) -> Decision:
        """Decide on ``incoming`` (already validated at ``now``) given the
        record held for its name, if any."""
        if existing is None:
            return Decision(True, Reason.NEW)
        if existing.expires <= now:
            if existing.name != incoming.name:
                return self._refuse(Reason.NAME_MISMATCH, existing, incoming)
            return Decision(True, Reason.REPLACES_EXPIRED)
        reason = decide(incoming, existing)
        if reason in _ACCEPTING:
            return Decision(True, reason)
        return self._refuse(reason, existing, incoming)

    def decide_bytes(
        self,
        existing: bytes | None,
        incoming: bytes,
        now: float,
        *,
        expected_name: str | None = None,
    ) -> Decision:
        """``accept`` on serialized records: ``incoming`` is validated here
        (its typed error propagates); a held value that no longer validates,
        e.g. because it expired, pins nobody."""
        new = validate(incoming, now, self.config, expected_name=expected_name)
        held: NameRecord | None = None
        if existing is not None:
            try:
                held = validate(existing, now, self.config, expected_name=expected_name)
            except RecordRejected:
                held = None
        return self.accept(held, new, now)

    @staticmethod
    def _refuse(reason: Reason, existing: NameRecord, incoming: NameRecord) -> Decision:
        error: RecordRejected
        if reason is Reason.STALE:
            error = StaleSequence(incoming.sequence, existing.sequence)
        elif reason is Reason.OWNER_PINNED:
            error = OwnerPinned(existing.name, existing.expires)
        elif reason is Reason.TRANSFERRED_AWAY:
            error = WrongOwner(f"{existing.name!r} was transferred to another key")
        else:
            error = WrongOwner(f"record for {incoming.name!r} cannot replace {existing.name!r}")
        return Decision(False, reason, error)
