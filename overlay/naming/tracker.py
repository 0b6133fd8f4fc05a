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
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.naming.config import NamingConfig
from overlay.naming.resolve import Done, NotFound, QuorumCollector, Status
from overlay.naming.validate import DEFAULT_CONFIG

__all__ = ["Answer", "AnswerTracker"]

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

    def finish(self, now: float) -> Status:
        """The final decision over the closest responders that answered."""
        return self._evaluate(now, still_looking=False)

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
