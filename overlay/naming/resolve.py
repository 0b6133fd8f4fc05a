"""Resolver logic: settle what the closest storage nodes answered (pure).

A resolver asks the k nodes closest to the name's key (closest first) and
feeds each answer to a ``QuorumCollector``.  Votes go to owners, not to
exact records: a responder holding an older record of the right owner
still supports that owner, and is listed for correction.  An owner whose
records are superseded by another owner's (a transfer or a release) hands
its votes to that owner.

``status()`` is ``Done`` as soon as the leading owner has ``quorum`` votes
and leads every other owner by at least ``quorum``.  Without dissent that
is the first ``quorum`` agreeing answers, so a resolve costs the fastest
few round trips rather than waiting for all k.  When every responder has
answered or failed, the plurality owner wins (ties go to the owner
supported by the closest responder).  The collector keeps accepting
answers after ``Done``, so the driver can keep verifying in the background
and correct its cache and the stale nodes if the decision changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from overlay.errors import LocalProtocolError
from overlay.naming.config import NamingConfig
from overlay.naming.errors import RecordRejected
from overlay.naming.pins import released_from, transferred_from
from overlay.naming.policy import Reason, decide, select_index
from overlay.naming.record import NameRecord
from overlay.naming.validate import DEFAULT_CONFIG, validate

__all__ = ["Done", "NeedMore", "NotFound", "QuorumCollector", "Status"]


@dataclass(frozen=True, slots=True)
class Done:
    """A decision: the best record of the winning owner."""

    record: NameRecord
    supporters: tuple[bytes, ...]
    """Responders whose valid record backs the winning owner."""
    to_correct: tuple[bytes, ...]
    """Responders that answered anything but exactly ``record`` (nothing,
    invalid, stale or another owner's record): send them ``record``."""
    final: bool
    """True once every responder answered or failed (``AnswerTracker``
    also when the missing ones cannot change the winner)."""
    lead: int = 0
    """Votes of the winning owner minus those of the runner-up."""


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Keep waiting: no owner has a safe lead yet."""

    leading_votes: int
    needed: int
    pending: int


@dataclass(frozen=True, slots=True)
class NotFound:
    """No responder held a valid record."""

    answered: int
    invalid: tuple[bytes, ...]
    """Responders that served records which failed validation."""
    definite: bool = True
    """Enough of the closest peers answered to say the name has no record
    (always true from ``QuorumCollector``, where every responder answered;
    ``AnswerTracker`` judges a lookup cut short)."""
    missing: int = 0
    """Closest peers whose answer never came (``AnswerTracker``)."""


Status = Done | NeedMore | NotFound


class QuorumCollector:
    """Collects the answers of the closest responders for one name."""

    def __init__(
        self,
        name: str,
        responders: Sequence[bytes],
        quorum: int,
        config: NamingConfig = DEFAULT_CONFIG,
        *,
        pinned_owner: bytes | None = None,
    ) -> None:
        """``responders`` are the queried peers, closest first (binary peer
        IDs); ``name`` is normalized.  With ``pinned_owner`` (from the
        resolver's ``OwnerPins``), only that owner, or one it transferred
        or released the name to, can win early; any other answer waits for every
        responder, and the driver's pin check then decides."""
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        if len(set(responders)) != len(responders):
            raise ValueError("responders must be distinct")
        self.name = name
        self.quorum = quorum
        self.pinned_owner = pinned_owner
        self._config = config
        self._rank = {peer: index for index, peer in enumerate(responders)}
        self._valid: dict[bytes, NameRecord] = {}
        self._invalid: dict[bytes, RecordRejected | None] = {}
        self._failed: set[bytes] = set()

    # --- input ---------------------------------------------------------------

    def on_response(self, responder: bytes, value: bytes | None, now: float) -> Status:
        """Record what ``responder`` answered: record bytes, or None for "I
        hold nothing".  Answers from unknown or repeated responders are
        ignored."""
        if responder in self._rank and not self._answered(responder):
            if value is None:
                self._invalid[responder] = None
            else:
                try:
                    record = validate(value, now, self._config, expected_name=self.name)
                except RecordRejected as exc:
                    self._invalid[responder] = exc
                else:
                    self._valid[responder] = record
        return self.status()

    def on_failure(self, responder: bytes) -> Status:
        """``responder`` timed out or its stream failed."""
        if responder in self._rank and not self._answered(responder):
            self._failed.add(responder)
        return self.status()

    def _answered(self, responder: bytes) -> bool:
        return responder in self._valid or responder in self._invalid or responder in self._failed

    @property
    def pending(self) -> tuple[bytes, ...]:
        """Responders yet to answer, closest first."""
        ordered = sorted(self._rank, key=self._rank.__getitem__)
        return tuple(p for p in ordered if not self._answered(p))

    def rejection(self, responder: bytes) -> RecordRejected | None:
        """Why ``responder``'s record was refused (None if it held nothing)."""
        if responder not in self._invalid:
            raise LocalProtocolError("responder did not serve an invalid record")
        return self._invalid[responder]

    # --- decision ------------------------------------------------------------

    def _owner_groups(self) -> dict[bytes, list[bytes]]:
        """Owner key → supporting responders, after handing the votes of
        superseded owners to the owner that superseded them."""
        groups: dict[bytes, list[bytes]] = {}
        for responder, record in self._valid.items():
            groups.setdefault(record.owner, []).append(responder)
        # Each merge removes a group, so this ends after len(groups) rounds.
        for _ in range(len(groups)):
            best = {owner: self._group_best(peers) for owner, peers in groups.items()}
            merge = next(
                (
                    (loser, winner)
                    for loser in best
                    for winner in best
                    if loser != winner
                    and decide(best[winner], best[loser]) in (Reason.TRANSFERRED, Reason.RELEASED)
                ),
                None,
            )
            if merge is None:
                break
            loser, winner = merge
            groups[winner].extend(groups.pop(loser))
        return groups

    def _group_best(self, peers: list[bytes]) -> NameRecord:
        # After merges a group spans owners; the best record is the one that
        # supersedes the rest, i.e. the winner of a fold over all of them.
        ordered = sorted(peers, key=self._rank.__getitem__)
        records = [self._valid[p] for p in ordered]
        return records[select_index(records)]

    def status(self) -> Status:
        groups = self._owner_groups()
        pending = len(self.pending)
        if not groups:
            if pending:
                return NeedMore(0, self.quorum, pending)
            return NotFound(
                answered=len(self._invalid),
                invalid=tuple(p for p, e in self._invalid.items() if e is not None),
            )
        ranked = sorted(
            groups.values(),
            key=lambda peers: (-len(peers), min(self._rank[p] for p in peers)),
        )
        leader = ranked[0]
        runner_up = len(ranked[1]) if len(ranked) > 1 else 0
        safe = len(leader) >= self.quorum and len(leader) - runner_up >= self.quorum
        record = self._group_best(leader)
        if safe and self.pinned_owner is not None:
            safe = self.pinned_owner in (record.owner, transferred_from(record),
                                         released_from(record))
        if not safe and pending:
            return NeedMore(len(leader), self.quorum, pending)
        encoded = record.to_bytes()
        answered = [p for p in self._rank if p in self._valid or p in self._invalid]
        wrong = (
            p for p in answered if p not in self._valid or self._valid[p].to_bytes() != encoded
        )
        to_correct = tuple(sorted(wrong, key=self._rank.__getitem__))
        supporters = tuple(sorted(leader, key=self._rank.__getitem__))
        return Done(record, supporters, to_correct, final=not pending,
                    lead=len(leader) - runner_up)
