"""The one supervisor for background work (STYLE rule 14).

Hosts, the DHT service, the naming service and the NAT services run many
small jobs on behalf of remote peers and timers.  Every one of them starts
through a ``Supervisor``::

    async with Supervisor("kad", log) as sup:
        sup.spawn(self._timer_loop, "kad maintenance timer",
                  restart=RestartPolicy())
        ...

A job that fails costs only itself: expected failures (a peer broke a
protocol, a timeout, a socket error) are logged quietly, anything else — a
bug, a full disk — with its traceback, and then the job either restarts with
back-off (a bounded number of times per window) or ends.  It never ends the
supervisor, its other jobs, or the daemon.  Cancellation always propagates:
``CancelledError`` is never swallowed, and leaving the block cancels and
awaits every job.

Work that several callers want at once (a dial to one peer, the resolve of
one name, one DHT lookup) runs as ONE supervisor-owned task per key through
``await sup.shared(key, factory)``.  Each caller awaits that task through
``asyncio.shield``, so a caller that is cancelled (its API client hung up)
leaves alone; the others still get the result, and the task's error reaches
every waiter.  When the last waiter leaves, the task keeps running by
default — a dial's connection is useful to the next caller and a resolve
fills the cache — unless it was started with ``linger=False``.

Jobs are zero-argument coroutine *functions*, never coroutine objects: a job
cancelled before it first runs would otherwise leave a coroutine that was
never awaited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from overlay.errors import LocalProtocolError, OverlayError

__all__ = [
    "RestartPolicy",
    "Supervisor",
    "SupervisorClosed",
    "SharedCancelled",
    "contain",
    "outcome_of",
    "run_supervised",
]

T = TypeVar("T")

Job = Callable[[], Coroutine[Any, Any, object]]
"""A zero-argument coroutine function: called once per (re)start."""

# Failures a job meets in ordinary operation: logged without a traceback.
_EXPECTED = (OverlayError, TimeoutError, OSError)


class SupervisorClosed(LocalProtocolError):
    """``spawn`` or ``shared`` was called outside the supervisor's block."""

    def __init__(self, name: str) -> None:
        super().__init__(f"supervisor {name!r} is not running")


class SharedCancelled(LocalProtocolError):
    """The shared operation this caller waited on was cancelled (its
    supervisor is closing, or its owner cancelled it) while the caller
    itself was not."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(f"shared operation {key!r} was cancelled")
        self.key = key


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a failing job is restarted."""

    max_restarts: int = 5
    """Restarts allowed within ``window`` seconds; one more failure ends the job."""
    window: float = 60.0
    """Seconds over which restarts are counted."""
    initial_backoff: float = 0.5
    """Seconds before the first restart; doubled per consecutive failure."""
    max_backoff: float = 30.0
    """Upper bound on the wait before a restart."""

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.window <= 0:
            raise ValueError("window must be > 0")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 <= initial_backoff <= max_backoff")

    def backoff(self, consecutive: int) -> float:
        """The wait before restart number ``consecutive`` (1-based)."""
        return float(min(self.max_backoff, self.initial_backoff * 2 ** max(0, consecutive - 1)))


@dataclass(slots=True)
class _Shared:
    task: asyncio.Task[Any]
    linger: bool
    waiters: int = 0


@dataclass(slots=True)
class _Restarts:
    """Failure times within the window, and the current failure streak."""

    times: list[float] = field(default_factory=list)
    consecutive: int = 0


def _log_failure(log: logging.Logger, what: str, exc: BaseException) -> None:
    if isinstance(exc, _EXPECTED):
        log.debug("%s ended: %r", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)


class Supervisor:
    """Owns background jobs and shared operations for one ``async with`` block."""

    def __init__(self, name: str, log: logging.Logger, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.name = name
        self._log = log
        self._clock = clock
        self._sleep = sleep
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shared: dict[Hashable, _Shared] = {}
        self._running = False
        self.failures = 0
        """Unexpected or expected failures of jobs so far (each restart counts)."""
        self.gave_up: list[str] = []
        """The ``what`` of each job that failed past its restart policy."""

    # -- lifetime ---------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        if self._running:
            raise LocalProtocolError(f"supervisor {self.name!r} already running")
        self._running = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every job and shared operation and wait for them to end.

        If the closing task is itself cancelled meanwhile, the jobs (already
        cancelled) are still awaited, then the cancellation is re-raised."""
        self._running = False
        cancelled = False
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                cancelled = True
        self._shared.clear()
        if cancelled:
            raise asyncio.CancelledError

    @property
    def running(self) -> bool:
        return self._running

    def __len__(self) -> int:
        """Jobs and shared operations still running."""
        return len(self._tasks)

    # -- jobs -------------------------------------------------------------

    def spawn(self, factory: Job, what: str, *,
              restart: RestartPolicy | None = None) -> asyncio.Task[None]:
        """Run ``factory()`` as a supervised job; return its task (cancel it
        to end just this job).  Without ``restart`` a failure ends the job;
        with it the job is started again after back-off."""
        if not self._running:
            raise SupervisorClosed(self.name)
        if asyncio.iscoroutine(factory):
            raise TypeError("spawn takes a coroutine function, not a coroutine")
        return self._own(self._run_job(factory, what, restart), what)

    def _own(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_job(self, factory: Job, what: str, restart: RestartPolicy | None) -> None:
        history = _Restarts()
        while True:
            try:
                await factory()
                return
            except Exception as exc:  # the supervisor boundary: a failure ends this job only
                self.failures += 1
                _log_failure(self._log, what, exc)
                if restart is None:
                    return
                delay = self._next_restart(history, restart)
                if delay is None:
                    self.gave_up.append(what)
                    self._log.error("%s: %d failures within %.0f s; not restarting it",
                                    what, len(history.times), restart.window)
                    return
            self._log.info("%s: restarting in %.1f s", what, delay)
            await self._sleep(delay)

    def _next_restart(self, history: _Restarts, policy: RestartPolicy) -> float | None:
        now = self._clock()
        if history.times and now - history.times[-1] > policy.window:
            history.consecutive = 0  # a long healthy run forgives the streak
        history.times = [t for t in history.times if now - t <= policy.window]
        history.times.append(now)
        history.consecutive += 1
        if len(history.times) > policy.max_restarts:
            return None
        return policy.backoff(history.consecutive)

    # -- shared operations ------------------------------------------------

    async def shared(self, key: Hashable, factory: Callable[[], Coroutine[Any, Any, T]], *,
                     linger: bool = True) -> T:
        """Await the one running operation for ``key``, starting it with
        ``factory()`` if none runs.

        The operation is a supervisor-owned task; this caller waits through
        ``asyncio.shield``, so cancelling this caller never cancels it.  Its
        result or error reaches every waiter.  When the last waiter leaves
        before it ends, it keeps running if ``linger`` (the default: a dial
        or resolve is useful to whoever asks next), else it is cancelled.
        The first caller's ``linger`` decides."""
        if not self._running:
            raise SupervisorClosed(self.name)
        entry = self._shared.get(key)
        if entry is None:
            task = self._own(factory(), f"shared {key!r}")
            entry = _Shared(task, linger)
            self._shared[key] = entry
            task.add_done_callback(partial(self._shared_done, key, entry))
        entry.waiters += 1
        try:
            return await asyncio.shield(entry.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if entry.task.cancelled() and (current is None or current.cancelling() == 0):
                raise SharedCancelled(key) from None
            raise
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.linger and not entry.task.done():
                entry.task.cancel()
                if self._shared.get(key) is entry:
                    del self._shared[key]  # the next caller starts afresh

    def _shared_done(self, key: Hashable, entry: _Shared, _task: asyncio.Task[Any]) -> None:
        if self._shared.get(key) is entry:
            del self._shared[key]
        if entry.task.cancelled():
            return
        exc = entry.task.exception()  # retrieved here, so a lone failure is never "unretrieved"
        if exc is not None and entry.waiters == 0:
            _log_failure(self._log, f"shared {key!r}", exc)

    def shared_running(self, key: Hashable) -> bool:
        """Whether an operation for ``key`` is under way."""
        return key in self._shared

    def waiters(self, key: Hashable) -> int:
        """How many callers await the operation for ``key`` now."""
        entry = self._shared.get(key)
        return 0 if entry is None else entry.waiters


async def run_supervised(job: Awaitable[None], what: str, log: logging.Logger) -> None:
    """Await ``job`` in the caller's own task; log instead of raising
    anything but cancellation (for one-shot work inside a job that must not
    end it, such as one round of a refresh loop)."""
    try:
        await job
    except Exception as exc:  # the supervisor boundary: a failure ends this job only
        _log_failure(log, what, exc)


def contain(call: Callable[[], object], on_error: Callable[[Exception], None]) -> bool:
    """Run a synchronous ``call`` at a boundary that must survive it — a
    datagram callback (uvloop closes a transport whose protocol raises), a
    listener a layer above registered — and hand any error to ``on_error``
    instead of raising.  True if ``call`` returned normally."""
    try:
        call()
    except Exception as exc:  # the supervisor boundary for synchronous callbacks
        on_error(exc)
        return False
    return True


async def outcome_of(job: Awaitable[T]) -> T | Exception:
    """Await ``job`` and return its result, or the exception it raised
    instead of raising it (cancellation still propagates).  For a boundary
    that must answer whatever happened: an API op with a bug still gets an
    ``internal`` error reply instead of costing its client the connection."""
    try:
        return await job
    except Exception as exc:  # the supervisor boundary for one awaited call
        return exc
