"""The iterative lookup state machine for FIND_NODE, GET_VALUE and
GET_PROVIDERS.

The driver loops on ``next(now)``: it carries out every ``SendRequest``
until it gets ``Waiting`` (sleep until ``deadline`` or a response) or
``Finished``.  Answers come back through ``on_success``/``on_failure``.

- At most ``alpha`` requests per path are in flight.  A request past its
  deadline stops counting against ``alpha`` (the peer becomes
  *unresponsive*) and no longer holds the lookup open; a late answer is
  still used.  Each request's deadline is ``now + timeout_for(peer)`` (the
  driver derives it from measured round trips, see ``overlay.kad.rtt``),
  or ``now + peer_timeout`` without one.
- With ``slow_after < 1``, a request unanswered after that share of its
  timeout stops holding its alpha slot (the peer is *slow*; a dead one
  under churn otherwise stalls a slot for its whole timeout), but it still
  holds the lookup open and its answer is used until its deadline.
- A request that timed out (its deadline passed, or the driver reports
  ``on_failure(..., timed_out=True)``) is sent to the same peer again, up
  to ``retries`` times, each with a fresh timeout, when the peer's turn
  comes and an alpha slot is free: a lost message costs one more request,
  not the peer.  A retry is only sent if its whole timeout fits before the
  lookup's ``deadline``, never to a peer that answered (late answers to an
  earlier attempt count), and never after an error answer or a refusal.
  Drivers pass each ``SendRequest.attempt`` back with a failure, so the
  failure of an attempt already retried is ignored.
- With a ``deadline`` the lookup finishes at that time whatever is still
  in flight, and its result says how many of the closest peers answered.
- A path finishes when its ``k`` closest known peers have all answered, or
  when it has nothing left to ask.
- With ``disjoint_paths = d`` (S/Kademlia) the seeds are dealt out to ``d``
  paths; peers a path learns go to that path only, and a peer queried by
  one path is never queried by another, so one path captured by liars
  cannot poison the others.
- With ``adaptive_paths`` only one path starts, holding every seed, so a
  lookup nobody lies to costs what a single path costs; ``disjoint_paths``
  is then the most paths it may open.  A path showing evidence of lies
  opens one more (see ``_suspect``), seeded from routing-table seeds no
  path has asked (never from peers an answer named, which a liar chose).
- GET_VALUE stops after ``quorum`` valid records and picks the best with
  the namespace selector; GET_PROVIDERS stops after ``max_providers``.

``rounds`` is the hop depth: seeds from the routing table are depth 1 and a
peer first learned from a depth-``d`` answer is depth ``d + 1``; a lookup's
``rounds`` is the deepest peer that answered.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from overlay.identity import PeerId
from overlay.kad.errors import InvalidRecord, LookupStateError
from overlay.kad.keyspace import Contact, kad_key
from overlay.kad.messages import PeerInfo
from overlay.kad.lookup_types import (
    ADAPTIVE_MAX_PATHS,
    LOOKUP_RETRIES,
    Finished,
    LookupAction,
    LookupConfig,
    LookupKind,
    LookupResult,
    SendRequest,
    Waiting,
)
from overlay.kad.records import NamespaceRegistry, Record

__all__ = [
    "ADAPTIVE_MAX_PATHS",
    "LOOKUP_RETRIES",
    "LookupKind",
    "LookupConfig",
    "Lookup",
    "LookupResult",
    "SendRequest",
    "Waiting",
    "Finished",
    "LookupAction",
]

_NOT_CONTACTED, _WAITING, _UNRESPONSIVE, _SUCCEEDED, _FAILED, _RETRY, _SLOW = range(7)
# _RETRY: timed out, to be asked again; it holds no alpha slot meanwhile.
# _SLOW: waiting past ``slow_after``; it holds no alpha slot either.
_ASKED = (_WAITING, _SLOW)


class _Peer:
    __slots__ = ("contact", "state", "deadline", "slow_at", "depth", "path", "distance", "attempts")

    def __init__(self, contact: Contact, distance: int, depth: int) -> None:
        self.contact = contact
        self.distance = distance
        self.depth = depth
        self.state = _NOT_CONTACTED
        self.deadline = 0.0
        self.slow_at = 0.0
        self.path = -1  # the path that queried it, once one did
        self.attempts = 0  # requests sent to it


class _Path:
    __slots__ = ("index", "distances", "in_flight", "done", "suspect", "judged")

    def __init__(self, index: int) -> None:
        self.index = index
        self.distances: list[int] = []  # sorted candidate distances
        self.in_flight = 0
        self.done = False
        self.suspect = False  # it showed evidence of lies (and opened a path)
        self.judged = False  # its end was checked for evidence


class Lookup:
    def __init__(
        self,
        kind: LookupKind,
        target: bytes,
        seeds: Sequence[Contact],
        config: LookupConfig,
        *,
        local_key: int | None = None,
        registry: NamespaceRegistry | None = None,
        validation_time: float = 0.0,
        local_record: Record | None = None,
        timeout_for: Callable[[Contact], float] | None = None,
        deadline: float | None = None,
    ) -> None:
        """``target`` is the wire key (a peer ID's bytes for FIND_NODE).
        GET_VALUE needs ``registry`` and the wall-clock ``validation_time``
        for its validators; ``local_record`` counts towards the quorum.
        ``timeout_for(peer)`` gives each request's timeout in seconds
        (``config.peer_timeout`` without it); at ``deadline`` (same clock as
        ``now``) the lookup finishes with what it has."""
        if kind is LookupKind.GET_VALUE and registry is None:
            raise ValueError("a GET_VALUE lookup needs a namespace registry")
        self.kind = kind
        self.target = target
        self.key = kad_key(target)
        self.config = config
        self._local_key = local_key
        self._registry = registry
        self._validation_time = validation_time
        self._timeout_for = timeout_for
        self._deadline = deadline
        self._deadline_reached = False
        self._peers: dict[int, _Peer] = {}
        self._by_id: dict[PeerId, _Peer] = {}
        self._paths = [_Path(i) for i in range(config.disjoint_paths)]
        self._active = 1 if config.adaptive_paths else len(self._paths)
        """Paths opened so far: the first ``_active`` of ``_paths``."""
        self._providers_on: set[int] = set()  # paths that heard of a provider
        self._next_path = 0
        self._messages = 0
        self._retries = 0
        self._queried: list[PeerId] = []
        self._answered = 0
        self._failed = 0
        self._valid: list[tuple[Contact | None, bytes]] = []
        self._invalid: list[Contact] = []
        self._lacking: list[Contact] = []
        self._providers: dict[PeerId, PeerInfo] = {}
        self._target_found = False
        self._result: LookupResult | None = None
        if local_record is not None and registry is not None:
            try:
                registry.validate(local_record, validation_time)
                self._valid.append((None, local_record.value))
            except InvalidRecord:
                pass
        ordered = sorted(seeds, key=lambda c: c.key ^ self.key)
        for i, contact in enumerate(ordered):
            self._add_candidate(self._paths[i % self._active], contact, depth=1)

    # --- driver interface -----------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._result is not None

    def next(self, now: float) -> LookupAction:
        if self._result is not None:
            return Finished(self._result)
        cutoff = self._deadline if self._deadline is not None and now >= self._deadline else None
        for peer in self._peers.values():
            if peer.state in _ASKED and peer.deadline <= now:
                if cutoff is not None and peer.deadline >= cutoff:
                    continue  # cut short by the lookup's deadline: silent, not failed
                self._timed_out(peer)
            elif peer.state == _WAITING and peer.slow_at <= now:
                peer.state = _SLOW
                self._paths[peer.path].in_flight -= 1
        if cutoff is not None:
            self._deadline_reached = True
            return Finished(self._finish())
        if self._satisfied():
            return Finished(self._finish())
        while True:
            count = self._active
            for offset in range(count):
                path = self._paths[(self._next_path + offset) % count]
                action = self._step(path, now)
                if action is not None:
                    self._next_path = (path.index + 1) % count
                    return action
            if not self._judge_ended_paths():
                break  # no path opened: nothing more to send now
        if all(path.done for path in self._paths[: self._active]):
            return Finished(self._finish())
        deadlines = [p.deadline for p in self._peers.values() if p.state == _SLOW]
        deadlines.extend(min(p.slow_at, p.deadline) for p in self._peers.values() if p.state == _WAITING)
        if self._deadline is not None:
            deadlines.append(self._deadline)
        return Waiting(min(deadlines) if deadlines else None)

    def on_success(
        self,
        peer: PeerId,
        closer: Sequence[Contact],
        now: float,
        *,
        record: Record | None = None,
        providers: Sequence[PeerInfo] = (),
    ) -> None:
        """``peer`` answered with ``closer`` peers (and a record or providers)."""
        state = self._answering(peer)
        if state is None:
            return
        if state.state == _WAITING:
            self._paths[state.path].in_flight -= 1
        elif state.state == _UNRESPONSIVE:
            self._failed -= 1  # a late answer after its timeout
        state.state = _SUCCEEDED
        self._answered += 1
        if self.kind is LookupKind.FIND_NODE and state.contact.peer_id.multihash == self.target:
            self._target_found = True
        path = self._paths[state.path]
        for contact in closer:
            self._add_candidate(path, contact, depth=state.depth + 1)
        if self.kind is LookupKind.GET_VALUE and not self._take_record(state.contact, record):
            self._suspect(path)
        if providers:
            self._providers_on.add(path.index)
        for info in providers:
            self._providers.setdefault(info.peer_id, info)

    def on_failure(
        self, peer: PeerId, now: float, *, timed_out: bool = False, attempt: int | None = None
    ) -> bool:
        """The request to ``peer`` failed: ``timed_out`` if it got no answer
        in time (it may then be retried), else an error (dial error, reset,
        refusal, bad answer: never retried).  ``attempt`` is the failed
        ``SendRequest.attempt``; a failure of an attempt that was retried
        since is ignored.  Returns whether ``peer`` now counts as failed."""
        state = self._answering(peer)
        if state is None:
            return False
        if attempt is not None and attempt < state.attempts - 1:
            return False  # an earlier attempt; the retry is still out
        if state.state == _RETRY:
            if timed_out:
                return False  # this timeout was noticed already
            state.state = _FAILED  # an error answer: no retry
            self._failed += 1
            return True
        if state.state in _ASKED:
            if timed_out:
                self._timed_out(state)
                if state.state == _RETRY:
                    return False
            else:
                if state.state == _WAITING:
                    self._paths[state.path].in_flight -= 1
                self._failed += 1
        state.state = _FAILED
        return True

    def finish(self) -> LookupResult:
        """Stop now (for example on an overall deadline) and report."""
        return self._result if self._result is not None else self._finish()

    # --- internals ------------------------------------------------------------

    def _answering(self, peer: PeerId) -> _Peer | None:
        state = self._by_id.get(peer)
        if state is None or state.state == _NOT_CONTACTED:
            raise LookupStateError(f"lookup never asked {peer}")
        if self._result is not None or state.state not in (_WAITING, _SLOW, _UNRESPONSIVE, _RETRY):
            return None  # finished already, or a duplicate answer
        return state

    def _timed_out(self, peer: _Peer) -> None:
        """``peer``'s request (``_WAITING`` or ``_SLOW``) got no answer in time."""
        if peer.state == _WAITING:
            self._paths[peer.path].in_flight -= 1
        if peer.attempts <= self.config.retries:
            peer.state = _RETRY
            return
        peer.state = _UNRESPONSIVE
        self._failed += 1

    def _timeout(self, contact: Contact) -> float:
        if self._timeout_for is None:
            return self.config.peer_timeout
        return self._timeout_for(contact)

    def _add_candidate(self, path: _Path, contact: Contact, depth: int) -> None:
        if contact.key == self._local_key:
            return
        existing = self._by_id.get(contact.peer_id)
        distance = contact.key ^ self.key
        if existing is None:
            existing = _Peer(contact, distance, depth)
            self._peers[distance] = existing
            self._by_id[contact.peer_id] = existing
        elif existing.state == _NOT_CONTACTED and depth < existing.depth:
            existing.depth = depth
        index = bisect.bisect_left(path.distances, distance)
        if index == len(path.distances) or path.distances[index] != distance:
            path.distances.insert(index, distance)

    def _step(self, path: _Path, now: float) -> SendRequest | None:
        if path.done:
            return None
        succeeded = 0
        pending = 0
        k = self.config.k
        for distance in path.distances:
            peer = self._peers[distance]
            if peer.path not in (-1, path.index):
                continue  # owned by another disjoint path
            state = peer.state
            if state == _SUCCEEDED:
                succeeded += 1
                if succeeded >= k and not pending:
                    path.done = True
                    return None
                if succeeded + pending >= k:
                    return None  # the k closest are settled or being asked
            elif state == _WAITING or state == _SLOW:
                # An unanswered peer among the closest blocks the end until
                # it answers or times out.
                pending += 1
                if succeeded + pending >= k:
                    return None
            elif state == _NOT_CONTACTED or state == _RETRY:
                if path.in_flight >= self.config.alpha:
                    return None
                timeout = self._timeout(peer.contact)
                if state == _RETRY:
                    if self._deadline is not None and now + timeout > self._deadline:
                        # No time left for a whole fresh timeout: give up.
                        peer.state = _UNRESPONSIVE
                        self._failed += 1
                        continue
                    self._retries += 1
                else:
                    self._queried.append(peer.contact.peer_id)
                peer.state = _WAITING
                peer.path = path.index
                peer.deadline = now + timeout
                peer.slow_at = now + timeout * self.config.slow_after
                if self._deadline is not None:
                    peer.deadline = min(peer.deadline, self._deadline)
                path.in_flight += 1
                self._messages += 1
                peer.attempts += 1
                return SendRequest(peer.contact, path.index, peer.deadline, peer.attempts - 1)
        if path.in_flight == 0 and not pending:
            path.done = True  # (slow peers hold no slot, but may still answer)
        return None

    def _satisfied(self) -> bool:
        if self.kind is LookupKind.GET_VALUE:
            return self.config.quorum > 0 and len(self._valid) >= self.config.quorum
        if self.kind is LookupKind.GET_PROVIDERS:
            return 0 < self.config.max_providers <= len(self._providers)
        return self.config.stop_when_found and self._target_found

    def _take_record(self, contact: Contact, record: Record | None) -> bool:
        """Counts the answer's record; False if it is evidence of a lie (it
        fails validation, or differs from another valid one)."""
        if record is None:
            self._lacking.append(contact)
            return True
        assert self._registry is not None  # checked in __init__
        try:
            if record.key != self.target:
                raise InvalidRecord("record key differs from the key asked for")
            self._registry.validate(record, self._validation_time)
        except InvalidRecord:
            self._invalid.append(contact)
            return False
        conflict = any(value != record.value for _, value in self._valid)
        self._valid.append((contact, record.value))
        return not conflict

    # --- adaptive paths -------------------------------------------------------

    def _suspect(self, path: _Path) -> bool:
        """``path`` showed evidence of lies: with ``adaptive_paths`` its first
        evidence opens one more path (one each, so a liar answering many
        times cannot make the lookup open every path at once).  Returns
        whether a path opened."""
        if not self.config.adaptive_paths or path.suspect:
            return False
        path.suspect = True
        if self._active >= len(self._paths):
            return False
        opened = self._paths[self._active]
        self._active += 1
        # Seeds come from our own table, so a liar chose none of them; peers
        # an answer named may be a liar's friends.  Deal the seeds no path
        # asked among the paths still closed, this one taking its share
        # (the closest first, so each gets a near start).
        unused = sorted(
            d for d, p in self._peers.items() if p.depth == 1 and p.path == -1 and p.state == _NOT_CONTACTED
        )
        share = len(self._paths) - opened.index
        for distance in unused[::share]:
            self._add_candidate(opened, self._peers[distance].contact, depth=1)
            self._peers[distance].path = opened.index  # reserved: the others skip it
        return True

    def _judge_ended_paths(self) -> bool:
        """Checks each path that ended for the evidence only its end shows
        (no record, no provider, no target); returns whether one opened a
        path."""
        if not self.config.adaptive_paths:
            return False
        opened = False
        for path in self._paths[: self._active]:
            if not path.done or path.judged:
                continue
            path.judged = True
            if self.kind is LookupKind.GET_VALUE:
                empty = not any(c is not None and self._peers[c.key ^ self.key].path == path.index
                                for c, _ in self._valid)
            elif self.kind is LookupKind.GET_PROVIDERS:
                empty = path.index not in self._providers_on
            else:
                empty = self.config.stop_when_found and not self._target_found
            if empty and self._suspect(path):
                opened = True
        return opened

    def _window(self) -> tuple[int, int, int, int]:
        """(answered, failed, silent, unasked) of the k closest live peers."""
        k = self.config.k
        answered = failed = silent = unasked = 0
        for distance in sorted(self._peers):
            state = self._peers[distance].state
            if state in (_FAILED, _UNRESPONSIVE, _RETRY):
                failed += 1  # (a retry not sent when the lookup ended)
                continue
            if state == _SUCCEEDED:
                answered += 1
            elif state == _NOT_CONTACTED:
                unasked += 1
            else:
                silent += 1
            if answered + silent + unasked >= k:
                break
        return answered, failed, silent, unasked

    def _finish(self) -> LookupResult:
        window = self._window()
        answered = sorted(
            (p for p in self._peers.values() if p.state == _SUCCEEDED), key=lambda p: p.distance
        )
        closest = tuple(p.contact for p in answered[: self.config.k])
        rounds = max((p.depth for p in answered), default=0)
        record: Record | None = None
        outdated: list[Contact] = list(self._invalid)
        if self._valid:
            assert self._registry is not None
            values = [value for _, value in self._valid]
            best = values[self._registry.select(self.target, values)]
            record = Record(self.target, best)
            outdated.extend(c for c, v in self._valid if c is not None and v != best)
        cache_peer = None
        if record is not None and self._lacking:
            cache_peer = min(self._lacking, key=lambda c: c.key ^ self.key)
        self._result = LookupResult(
            kind=self.kind,
            target=self.target,
            closest=closest,
            messages=self._messages,
            queried=tuple(self._queried),
            answered=self._answered,
            failed=self._failed + sum(1 for p in self._peers.values() if p.state == _RETRY),
            rounds=rounds,
            record=record,
            valid_records=len(self._valid),
            outdated_peers=tuple(outdated),
            invalid_peers=tuple(self._invalid),
            cache_peer=cache_peer,
            providers=tuple(self._providers.values()),
            quorum_reached=self._satisfied() if self.kind is not LookupKind.FIND_NODE else False,
            target_found=self._target_found,
            closest_answered=window[0],
            closest_failed=window[1],
            closest_silent=window[2],
            closest_unasked=window[3],
            deadline_reached=self._deadline_reached,
            retries=self._retries,
            paths=self._active,
        )
        return self._result
