"""Resolving names over the DHT: fast answers, background verification.

``Resolver.resolve(name)`` returns a ``Resolution``: the verified record,
where it came from (``cache`` or ``network``) and the time taken.

- A fresh resource-map entry answers at once; a cached "no such name"
  raises ``NameNotFound`` until its short TTL ends.
- Otherwise one GET_VALUE lookup runs for the name's key and every answer
  goes to an ``AnswerTracker``.  The caller gets the record as soon as the
  answers are safe (``quorum`` agreeing records with a lead of ``quorum``),
  typically after the first few closest storage nodes answered.
- A resolve has one deadline, ``ResolverConfig.timeout``: the lookup ends
  by then, converged or not, and the decision is taken on what it
  gathered (``AnswerTracker.finish``): records decide by majority; no
  record is a definite ``NameNotFound`` when enough of the closest peers
  answered "nothing" (at least ``quorum`` of the window, outnumbering the
  silent ones); ``ResolveFailed`` only when too few answered.  Dead peers
  therefore cost at most the deadline, never a request timeout each.
- After an early answer the lookup goes on in the background (within the
  same deadline), in a task owned by the resolver.  When it ends the final
  decision is taken over the closest responders: if it differs from the
  early one the cache and the pin are corrected, and every responder that
  served something else (nothing, a forged, stale or foreign record) is
  sent the chosen record; its storage policy decides whether to take it.
- Trust on first use: an owner change before the pinned expiry, without a
  transfer or release by the pinned owner, raises ``OwnerChanged``.  The
  next owner after a release carries that RELEASE as proof, so a resolver
  that never saw the release still lets it in (``overlay.naming.pins``).

The resolver talks to the DHT through ``DhtClient``, a small protocol the
kad service satisfies through an adapter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Protocol

from overlay.errors import LocalProtocolError, OverlayError
from overlay.naming.cache import CachedName, CachedNegative
from overlay.naming.config import NamingConfig
from overlay.naming.dht_namespace import NameNamespace
from overlay.naming.net_errors import NameNotFound, ResolveFailed
from overlay.naming.record import NameRecord, RecordKind
from overlay.naming.resolve import Done, NeedMore, NotFound, Status
from overlay.naming.resource_map_store import ResolverState
from overlay.naming.tracker import Answer, AnswerTracker
from overlay.supervisor import Supervisor

__all__ = ["DhtClient", "Resolution", "Resolver", "ResolverConfig"]

log = logging.getLogger(__name__)


class DhtClient(Protocol):
    """What naming needs from the Kademlia service."""

    async def get_value_answers(self, key: bytes, on_answer: Callable[[Answer], None], *,
                                timeout: float) -> None:
        """Run a GET_VALUE lookup for ``key`` until it converges or
        ``timeout`` seconds have passed, calling ``on_answer`` with
        ``Answer(pending=True)`` for every peer the lookup learns of or
        asks, then with its answer (record bytes, "nothing", or failure) as
        it arrives.  Raises a transport error only when no lookup can start
        (for example no known peers)."""
        ...

    async def put_value(self, key: bytes, value: bytes, *, timeout: float,
                        peers: Sequence[bytes] | None = None) -> int:
        """Store ``value`` here and at the closest peers within ``timeout``
        seconds; the number of peers that accepted.  ``peers`` (binary peer
        IDs, closest first) are the responders of a lookup that just ran;
        without them a lookup finds the closest peers first."""
        ...

    async def store_at(self, peer: bytes, key: bytes, value: bytes) -> bool:
        """PUT_VALUE to one peer (binary peer ID); whether it accepted."""
        ...

    async def wait_ready(self) -> None:
        """Until the DHT has bootstrapped (at once if it has nothing to do)."""
        ...

    def round_trip(self) -> float | None:
        """The smoothed round-trip time to DHT peers in seconds, or None
        before anything was measured."""
        ...


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """How names are resolved over the network."""

    quorum: int = 4
    """Agreeing records (and lead over any other owner) that settle a name
    early.  4 keeps early answers right with 20% lying nodes in the
    simulator at N=10,000 (3 let 2% of them through until background
    verification fixed them)."""
    k: int = 20
    """Closest responders the decision is taken over."""
    timeout: float = 1.5
    """The deadline of a network resolve, in seconds: its lookup ends by
    then and the decision is taken on the answers gathered (see the module
    docstring).  Loopback and LAN lookups converge in tens of
    milliseconds; the margin covers a dead peer's request timeout.  On
    slower paths the deadline stretches with the measured round trip (see
    ``rtt_factor``)."""
    rtt_factor: float = 12.0
    """The deadline is at least this many measured round trips to DHT
    peers: a lookup is a few hops, each of which may first dial (two round
    trips) or wait out one dead peer's timeout (a few round trips)."""
    max_timeout: float = 8.0
    """Stretching by round trips stops at this many seconds (a larger
    ``timeout`` still holds)."""
    max_corrections: int = 20
    """Responders corrected after one resolve."""
    correction_timeout: float = 5.0
    """Seconds one correcting PUT may take."""

    def __post_init__(self) -> None:
        if self.quorum < 1 or self.k < 1 or self.max_corrections < 0:
            raise ValueError("quorum and k must be at least 1, max_corrections not negative")
        if not self.timeout > 0 or not self.correction_timeout > 0:
            raise ValueError("timeouts must be positive")
        if not self.rtt_factor >= 0 or not self.max_timeout > 0:
            raise ValueError("rtt_factor must not be negative, max_timeout must be positive")


@dataclass(frozen=True, slots=True)
class Resolution:
    name: str
    """The normalized name."""
    record: NameRecord
    source: str
    """``cache`` or ``network``."""
    elapsed: float
    """Seconds the resolve took."""
    fresh_until: float
    """Unix time until which the answer may be served from cache."""
    supporters: int = 0
    """Responders whose records backed the owner (0 from cache)."""
    final: bool = False
    """The network decision covers the closest responders: every one
    answered, or those that did not cannot change the winner."""
    closest: tuple[bytes, ...] = ()
    """Responders of the lookup, closest first (network answers only)."""


class Resolver:
    """Use as ``async with Resolver(...) as resolver``; background
    verification tasks end with it."""

    def __init__(
        self,
        dht: DhtClient,
        state: ResolverState,
        naming: NamingConfig,
        config: ResolverConfig = ResolverConfig(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dht = dht
        self.state = state
        self.naming = naming
        self.config = config
        self.namespace = NameNamespace(naming)
        self._clock = clock
        self._sup: Supervisor | None = None
        self._background = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.corrections_sent = 0
        """Correcting PUTs that a responder accepted."""
        self.background_fixes = 0
        """Times background verification replaced the early answer."""

    async def __aenter__(self) -> Resolver:
        if self._sup is not None:
            raise LocalProtocolError("a resolver can be started once")
        self._sup = await Supervisor("resolver", log).__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sup, self._sup = self._sup, None
        if sup is None:
            raise LocalProtocolError("the resolver was not started")
        # Background verification is best effort: stop it rather than wait.
        await sup.aclose()

    async def wait_idle(self) -> None:
        """Until no background verification runs (tests, benchmarks)."""
        await self._idle.wait()

    # -- cache ------------------------------------------------------------------

    def normalize(self, name: str) -> str:
        return self.namespace.key_for(name)[len(self.namespace.namespace):].decode("ascii")

    def cached(self, name: str, started: float | None = None) -> Resolution | None:
        """The cached answer, without touching the network; raises
        ``NameNotFound`` for a cached negative answer."""
        t0 = time.perf_counter() if started is None else started
        norm = self.normalize(name)
        entry = self.state.cache.get(norm, self._clock())
        if isinstance(entry, CachedName):
            return Resolution(norm, entry.record, "cache", time.perf_counter() - t0,
                              entry.fresh_until)
        if isinstance(entry, CachedNegative):
            raise NameNotFound(norm, cached=True)
        return None

    def forget(self, name: str) -> None:
        """Drop the cached answer for ``name`` (the pin stays)."""
        self.state.cache.invalidate(self.normalize(name))
        self.state.mark_dirty()

    def remember(self, record: NameRecord) -> None:
        """Cache a record this node just published (it validated it)."""
        now = self._clock()
        self.state.pins.observe(record, now)
        if record.kind is RecordKind.RELEASE:
            self.state.cache.put_negative(record.name, now)
        else:
            self.state.cache.put(record, now)
        self.state.mark_dirty()

    # -- resolve ------------------------------------------------------------------

    async def resolve(self, name: str, *, use_cache: bool = True,
                      wait_final: bool = False) -> Resolution:
        """``wait_final`` waits for the whole lookup (until it converges or
        the deadline) instead of the first safe answer: an early answer may
        be an older record of the right owner, which is fine for connecting
        but not for deciding who owns a name (registration does this)."""
        t0 = time.perf_counter()
        if use_cache:
            hit = self.cached(name, t0)
            if hit is not None:
                return hit
        norm = self.normalize(name)
        if wait_final:
            return await self._resolve_network(norm, t0, wait_final=True)
        # Concurrent resolves of one name share one supervisor-owned lookup,
        # awaited through ``shield``: a caller that goes away (its API client
        # hung up) costs only itself.  The lookup goes on without waiters,
        # since its answer fills the cache for the next caller.
        resolution = await self._supervisor().shared(
            ("resolve", norm), partial(self._resolve_network, norm, t0))
        return Resolution(resolution.name, resolution.record, resolution.source,
                          time.perf_counter() - t0, resolution.fresh_until,
                          resolution.supporters, resolution.final, resolution.closest)

    def _supervisor(self) -> Supervisor:
        sup = self._sup
        if sup is None:
            raise LocalProtocolError("the resolver is not running (use `async with`)")
        return sup

    async def _resolve_network(self, norm: str, t0: float, *,
                               wait_final: bool = False) -> Resolution:
        sup = self._supervisor()
        key = self.namespace.key_for(norm)
        now = self._clock()
        pin = self.state.pins.get(norm)
        pinned_owner = pin.owner if pin is not None and pin.pinned_until > now else None
        tracker = AnswerTracker(norm, self.config.quorum, self.naming,
                                pinned_owner=pinned_owner, max_responders=self.config.k)
        decided: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        deadline = self.deadline()
        task = sup.spawn(partial(self._lookup, norm, key, tracker, decided, wait_final, deadline),
                         f"resolve lookup {norm}")
        # Counted by the task's end, so a lookup cancelled before it ran
        # still leaves the resolver idle.
        self._background += 1
        self._idle.clear()
        task.add_done_callback(self._lookup_ended)
        try:
            async with asyncio.timeout(deadline):
                status = await asyncio.shield(decided)
        except TimeoutError:
            # The DHT client ends its lookup at the same deadline; whatever
            # it has not reported by now cannot count.  Nobody waits for
            # ``decided`` any more, so the lookup must not set it.
            if decided.done():
                status = decided.result()
            else:
                decided.cancel()
                status = self._conclude(norm, tracker, deadline)
                if isinstance(status, Done) and tracker.early is None and not wait_final:
                    tracker.early = status  # verified when the lookup ends
        return self._accept(norm, status, tracker, t0)

    def deadline(self) -> float:
        """Seconds a network resolve may take now: ``timeout``, stretched
        to ``rtt_factor`` measured round trips on slow paths, at most
        ``max_timeout``."""
        rtt = self.dht.round_trip()
        stretched = 0.0 if rtt is None else self.config.rtt_factor * rtt
        return max(self.config.timeout, min(self.config.max_timeout, stretched))

    def _conclude(self, norm: str, tracker: AnswerTracker, deadline: float) -> Status:
        """The decision at the end of a lookup; ``ResolveFailed`` when too
        few of the closest peers answered to tell."""
        final = tracker.finish(self._clock())
        if isinstance(final, NotFound) and not final.definite:
            window = tracker.window()
            if window.answered == 0 and window.missing == 0:
                raise ResolveFailed(f"no DHT peer answered for {norm} "
                                    f"({window.failed} failed)")
            raise ResolveFailed(
                f"resolving {norm}: only {window.answered} of the "
                f"{window.answered + window.missing} closest peers answered within "
                f"{deadline:.3g} s ({window.failed} failed), too few to tell")
        return final

    def _accept(self, norm: str, status: Status, tracker: AnswerTracker, t0: float) -> Resolution:
        now = self._clock()
        closest = tracker.closest()
        if isinstance(status, NeedMore):  # cannot come out of finish()
            raise ResolveFailed(f"resolving {norm} ended undecided")
        if isinstance(status, NotFound):
            self.state.cache.put_negative(norm, now)
            self.state.mark_dirty()
            raise NameNotFound(norm, closest=closest)
        record = status.record
        self.state.pins.check(record, now)  # OwnerChanged propagates, nothing cached
        self.state.pins.observe(record, now)
        if record.kind is RecordKind.RELEASE:
            self.state.cache.put_negative(norm, now)
            self.state.mark_dirty()
            raise NameNotFound(norm, release=record, closest=closest)
        entry = self.state.cache.put(record, now)
        self.state.mark_dirty()
        fresh_until = entry.fresh_until if entry is not None else now
        return Resolution(norm, record, "network", time.perf_counter() - t0, fresh_until,
                          len(status.supporters), status.final, closest)

    async def _lookup(
        self, norm: str, key: bytes, tracker: AnswerTracker, decided: asyncio.Future[Status],
        wait_final: bool, deadline: float,
    ) -> None:
        try:
            def on_answer(answer: Answer) -> None:
                early = tracker.add(answer, self._clock())
                if early is not None and not wait_final and not decided.done():
                    decided.set_result(early)

            def fail(error: ResolveFailed) -> None:
                if not decided.done():
                    decided.set_exception(error)
                    if tracker.early is not None:
                        decided.exception()  # the caller already has an answer

            try:
                await self.dht.get_value_answers(key, on_answer, timeout=deadline)
            except (OverlayError, OSError) as exc:
                fail(ResolveFailed(f"cannot resolve {norm}: {exc}"))
                return
            try:
                final = self._conclude(norm, tracker, deadline)
            except ResolveFailed as exc:
                fail(exc)
                return
            if not decided.done():
                decided.set_result(final)
            if tracker.early is not None and not wait_final:
                # The caller got an early (or deadline) answer.
                self._verify(norm, tracker.early, final)
            if isinstance(final, Done):
                await self._correct(key, final)
        finally:
            if not decided.done():
                # The lookup failed unexpectedly: the caller learns now, not
                # at its deadline.
                decided.set_exception(ResolveFailed(f"the lookup for {norm} ended early"))
                decided.exception()

    def _lookup_ended(self, _task: asyncio.Task[None]) -> None:
        self._background -= 1
        if self._background == 0:
            self._idle.set()

    def _verify(self, norm: str, early: Done | None, final: Status) -> None:
        """Background check: fix the cache and pin if the final decision
        differs from the early answer the caller already got."""
        if early is None or not isinstance(final, Done):
            return
        if final.record.to_bytes() == early.record.to_bytes():
            return
        now = self._clock()
        if final.record.owner != early.record.owner:
            log.warning("%s: background verification chose another owner than the early "
                        "answer (%d supporters); correcting the cache", norm, len(final.supporters))
            pin = self.state.pins.get(norm)
            if pin is not None and pin.owner == early.record.owner:
                self.state.pins.forget(norm)
        self.background_fixes += 1
        try:
            self.state.pins.observe(final.record, now)
        except OverlayError as exc:
            log.warning("%s: final record contradicts a pin: %s", norm, exc)
            self.state.cache.invalidate(norm)
        else:
            if final.record.kind is RecordKind.RELEASE:
                self.state.cache.put_negative(norm, now)
            else:
                self.state.cache.put(final.record, now)
        self.state.mark_dirty()

    async def _correct(self, key: bytes, decision: Done) -> None:
        targets = decision.to_correct[: self.config.max_corrections]
        if not targets:
            return
        value = decision.record.to_bytes()

        async def one(peer: bytes) -> bool:
            try:
                async with asyncio.timeout(self.config.correction_timeout):
                    return await self.dht.store_at(peer, key, value)
            except (OverlayError, OSError, TimeoutError) as exc:
                log.debug("correcting a responder failed: %r", exc)
                return False

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(peer)) for peer in targets]
        self.corrections_sent += sum(1 for t in tasks if t.result())
