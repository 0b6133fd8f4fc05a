"""Settling a name from GET_VALUE answers that arrive one by one (pure).

An iterative DHT lookup does not know its k closest responders in advance:
it discovers them as it goes.  ``AnswerTracker`` keeps every answer and,
on each one that carries a record, asks a ``QuorumCollector`` built over
the closest responders so far, with one placeholder standing for "the
lookup may still find more".  The placeholder keeps the collector from
settling on a plurality while answers are still coming, so ``Done`` before
the end of the lookup means the safe early case (``quorum`` agreeing votes
and a lead of ``quorum``).  ``finish()`` drops the placeholder and gives
the final decision.  The resolver driver and the simulator benchmark both
use this class.

A lookup also reports peers it knows of but has no answer from yet
(``Answer(pending=True)``: asked and silent, or learned and not asked).
``finish()`` judges the *window*, the ``max_responders`` closest known
peers that did not fail, so that a lookup cut short by its deadline still
gives a definite answer when the silent peers cannot change it:

- records: the plurality owner wins; the decision is ``final`` when every
  window peer answered, or when the window peers still missing are fewer
  than the winner's lead (whatever they hold, the winner stays);
- no record: "nobody holds the name" is ``definite`` when every window
  peer answered, or when at least ``quorum`` of them answered and they
  outnumber the missing ones.  Otherwise too few answered to tell.

Failed peers (errors, per-request timeouts: dead or departed nodes) leave
the window rather than holding the decision open.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from overlay.naming.config import NamingConfig
from overlay.naming.resolve import Done, NotFound, QuorumCollector, Status
from overlay.naming.validate import DEFAULT_CONFIG

__all__ = ["Answer", "AnswerTracker", "Window"]

# Never a valid binary peer ID (those start with a multihash code and length).
_STILL_LOOKING = b""


@dataclass(frozen=True, slots=True)
class Answer:
    """What one queried peer said about the name's key."""

    peer: bytes
    """Binary peer ID of the responder."""
    distance: int
    """XOR distance between the responder's key and the record key."""
    value: bytes | None = None
    """Record bytes, or None when the peer holds nothing."""
    failed: bool = False
    """The request failed or timed out."""
    pending: bool = False
    """Not an answer: the lookup knows the peer (asked it, or learned of
    it) and has no answer from it yet."""


@dataclass(frozen=True, slots=True)
class Window:
    """The closest known peers that did not fail, as a lookup ended."""

    answered: int
    """Window peers that answered (with a record or "nothing")."""
    missing: int
    """Window peers that were silent or never asked."""
    failed: int
    """Peers that failed and were left out of the window."""


class AnswerTracker:
    """Collects the answers of one lookup; decides early when it is safe."""

    def __init__(
        self,
        name: str,
        quorum: int,
        config: NamingConfig = DEFAULT_CONFIG,
        *,
        pinned_owner: bytes | None = None,
        max_responders: int = 20,
    ) -> None:
        if quorum < 1 or max_responders < 1:
            raise ValueError("quorum and max_responders must be at least 1")
        self.name = name
        self.quorum = quorum
        self.config = config
        self.pinned_owner = pinned_owner
        self.max_responders = max_responders
        self._answers: dict[bytes, Answer] = {}
        self._pending: dict[bytes, int] = {}
        self._records = 0
        self.early: Done | None = None
        """The first safe decision reached while the lookup still ran."""

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def records_seen(self) -> int:
        return self._records

    @property
    def succeeded(self) -> int:
        """Responders that answered (with or without a record)."""
        return sum(1 for a in self._answers.values() if not a.failed)

    def add(self, answer: Answer, now: float) -> Done | None:
        """Take one answer (repeats from a peer are ignored).  Returns the
        early decision the first time one is reached, else None."""
        if answer.peer == _STILL_LOOKING or answer.peer in self._answers:
            return None
        if answer.pending:
            self._pending.setdefault(answer.peer, answer.distance)
            return None
        self._pending.pop(answer.peer, None)
        self._answers[answer.peer] = answer
        if answer.value is None or answer.failed:
            return None
        self._records += 1
        if self.early is not None:
            return None
        status = self._evaluate(now, still_looking=True)
        if isinstance(status, Done):
            self.early = status
            return status
        return None

    def closest(self) -> tuple[bytes, ...]:
        """Peers that answered, closest first (at most ``max_responders``)."""
        answered = sorted((a for a in self._answers.values() if not a.failed),
                          key=lambda a: a.distance)
        return tuple(a.peer for a in answered[: self.max_responders])

    def window(self) -> Window:
        """Answered and missing peers among the closest that did not fail."""
        failed = sum(1 for a in self._answers.values() if a.failed)
        closest = sorted(
            [(a.distance, 1) for a in self._answers.values() if not a.failed]
            + [(distance, 0) for distance in self._pending.values()]
        )[: self.max_responders]
        answered = sum(flag for _, flag in closest)
        return Window(answered, len(closest) - answered, failed)

    def finish(self, now: float) -> Status:
        """The decision over the closest responders that answered, judged
        against the window (see the module docstring)."""
        status = self._evaluate(now, still_looking=False)
        window = self.window()
        if isinstance(status, Done):
            final = window.missing == 0 or status.lead > window.missing
            return replace(status, final=final)
        if isinstance(status, NotFound):
            definite = window.answered > 0 and (
                window.missing == 0
                or (window.answered >= self.quorum and window.answered > window.missing)
            )
            return replace(status, definite=definite, answered=window.answered,
                           missing=window.missing)
        return status

    def _evaluate(self, now: float, *, still_looking: bool) -> Status:
        closest = sorted(self._answers.values(), key=lambda a: a.distance)
        closest = closest[: self.max_responders]
        responders = [a.peer for a in closest]
        if still_looking:
            responders.append(_STILL_LOOKING)
        if not responders:
            return NotFound(answered=0, invalid=())
        collector = QuorumCollector(
            self.name, responders, self.quorum, self.config, pinned_owner=self.pinned_owner
        )
        status: Status = collector.status()
        for answer in closest:
            if answer.failed:
                status = collector.on_failure(answer.peer)
            else:
                status = collector.on_response(answer.peer, answer.value, now)
        return status
