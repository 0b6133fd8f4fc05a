"""The supervisor: jobs fail alone, restart with back-off, cancellation
propagates, and shared operations survive a waiter's cancellation.

No test sleeps: the supervisor's clock and sleep are injected, and jobs
synchronise on events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from overlay.errors import DialError
from overlay.supervisor import (
    RestartPolicy,
    SharedCancelled,
    Supervisor,
    SupervisorClosed,
    run_supervised,
)
from tests.waiting import wait_until

log = logging.getLogger("test.supervisor")


class FakeTime:
    """A clock the test moves, and a sleep that records and returns."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


async def test_a_crashing_job_ends_alone() -> None:
    other_ran = asyncio.Event()
    crashed = asyncio.Event()

    async def crash() -> None:
        crashed.set()
        raise KeyError("bug")

    async def other() -> None:
        await crashed.wait()
        other_ran.set()

    async with Supervisor("t", log) as sup:
        crash_task = sup.spawn(crash, "crasher")
        sup.spawn(other, "other")
        await crash_task
        await other_ran.wait()
        assert sup.running
        assert sup.failures == 1
        # The supervisor still takes new jobs after a crash.
        done = asyncio.Event()

        async def later() -> None:
            done.set()

        await sup.spawn(later, "later")
        assert done.is_set()


async def test_a_bug_is_logged_with_what(caplog: pytest.LogCaptureFixture) -> None:
    async def crash() -> None:
        raise ZeroDivisionError

    async with Supervisor("t", log) as sup:
        await sup.spawn(crash, "the naming flusher")
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["the naming flusher failed"]
    assert failures[0].exc_info is not None


async def test_restart_backs_off_and_gives_up_within_the_window() -> None:
    fake = FakeTime()
    attempts = 0

    async def disk_full() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError(28, "No space left on device")

    policy = RestartPolicy(max_restarts=3, window=100.0, initial_backoff=1.0, max_backoff=3.0)
    async with Supervisor("t", log, clock=fake.clock, sleep=fake.sleep) as sup:
        await sup.spawn(disk_full, "flusher", restart=policy)
        assert attempts == 4  # the first run and three restarts
        assert fake.sleeps == [1.0, 2.0, 3.0]
        assert sup.gave_up == ["flusher"]
        assert sup.running


async def test_restart_recovers_and_the_window_forgives() -> None:
    fake = FakeTime()
    attempts = 0
    finished = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts in (1, 2):
            raise OSError("transient")
        if attempts == 3:
            fake.now += 1000.0  # a long healthy run before the next failure
            raise OSError("again, much later")
        finished.set()

    policy = RestartPolicy(max_restarts=2, window=10.0, initial_backoff=1.0, max_backoff=8.0)
    async with Supervisor("t", log, clock=fake.clock, sleep=fake.sleep) as sup:
        await sup.spawn(flaky, "flaky", restart=policy)
    assert finished.is_set()
    # The third failure came after the window: the streak starts over.
    assert fake.sleeps == [1.0, 2.0, 1.0]
    assert sup.gave_up == []


async def test_leaving_the_block_cancels_and_awaits_every_job() -> None:
    started = asyncio.Event()
    cleaned = asyncio.Event()

    async def forever() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async with Supervisor("t", log) as sup:
        task = sup.spawn(forever, "forever")
        await started.wait()
    assert task.cancelled()
    assert cleaned.is_set()
    assert len(sup) == 0
    with pytest.raises(SupervisorClosed):
        sup.spawn(forever, "too late")


async def test_a_job_cancelled_before_it_runs_leaves_no_coroutine() -> None:
    # pytest turns "coroutine ... was never awaited" into an error; the
    # factory is only called when the job first runs.
    calls = 0

    async def job() -> None:
        nonlocal calls
        calls += 1

    async with Supervisor("t", log) as sup:
        sup.spawn(job, "never runs").cancel()
    assert calls == 0


async def test_cancellation_of_a_job_is_not_swallowed() -> None:
    inside = asyncio.Event()

    async def waits() -> None:
        inside.set()
        await asyncio.Event().wait()

    policy = RestartPolicy(max_restarts=5)
    async with Supervisor("t", log) as sup:
        task = sup.spawn(waits, "waits", restart=policy)
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sup.failures == 0  # cancellation is neither a failure nor a restart


async def test_the_body_error_propagates_and_jobs_end() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="body"):
        async with Supervisor("t", log) as sup:
            task = sup.spawn(forever, "forever")
            await started.wait()
            raise RuntimeError("body")
    assert task.cancelled()


async def test_cancelling_the_owner_propagates_and_ends_the_jobs() -> None:
    started = asyncio.Event()
    ended = asyncio.Event()

    async def forever() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            ended.set()

    async def owner() -> None:
        async with Supervisor("t", log) as sup:
            sup.spawn(forever, "forever", restart=RestartPolicy())
            await asyncio.Event().wait()

    task = asyncio.create_task(owner())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()


async def test_spawn_refuses_a_coroutine_object() -> None:
    async def job() -> None:
        return None

    async with Supervisor("t", log) as sup:
        coro = job()
        with pytest.raises(TypeError):
            sup.spawn(coro, "wrong")  # type: ignore[arg-type]
        coro.close()


async def test_run_supervised_logs_instead_of_raising() -> None:
    async def bad() -> None:
        raise ValueError("bug")

    await run_supervised(bad(), "one round", log)  # no exception


# -- shared operations --------------------------------------------------


async def test_three_callers_the_first_cancelled_the_others_get_the_result() -> None:
    release = asyncio.Event()
    runs = 0

    async def resolve() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "answer"

    async with Supervisor("t", log) as sup:
        joins = _Joins(sup)
        callers = [joins.call("name", resolve) for _ in range(3)]
        await joins.entered(3)  # all three wait on the one operation
        assert sup.shared_running("name") and _waiters(sup, "name") == 3
        callers[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await callers[0]
        assert sup.shared_running("name")
        release.set()
        assert [await callers[1], await callers[2]] == ["answer", "answer"]
    assert runs == 1


async def test_the_error_reaches_every_waiter() -> None:
    release = asyncio.Event()

    async def dial() -> str:
        await release.wait()
        raise DialError("unreachable")

    async with Supervisor("t", log) as sup:
        joins = _Joins(sup)
        callers = [joins.call("peer", dial) for _ in range(3)]
        await joins.entered(3)
        assert _waiters(sup, "peer") == 3
        callers[0].cancel()
        release.set()
        results = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, DialError) for r in results[1:])
    assert not sup.shared_running("peer")


async def test_a_lingering_operation_outlives_its_last_waiter() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def dial() -> str:
        await release.wait()
        finished.set()
        return "conn"

    async with Supervisor("t", log) as sup:
        joins = _Joins(sup)
        caller = joins.call("peer", dial)
        await joins.entered(1)
        assert _waiters(sup, "peer") == 1
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert sup.shared_running("peer")
        release.set()
        # A later caller joins the same operation instead of starting another.
        assert await sup.shared("peer", dial) == "conn"
    assert finished.is_set()


async def test_a_non_lingering_operation_ends_with_its_last_waiter() -> None:
    cancelled = asyncio.Event()

    async def lookup() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    async with Supervisor("t", log) as sup:
        joins = _Joins(sup)
        caller = joins.call("key", lookup, linger=False)
        await joins.entered(1)
        assert _waiters(sup, "key") == 1
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await cancelled.wait()
        assert not sup.shared_running("key")


async def test_closing_the_supervisor_fails_waiters_with_a_typed_error() -> None:
    async def forever() -> str:
        await asyncio.Event().wait()
        return "never"

    sup = Supervisor("t", log)
    await sup.__aenter__()
    joins = _Joins(sup)
    caller = joins.call("k", forever)
    await joins.entered(1)
    assert _waiters(sup, "k") == 1
    await sup.aclose()
    with pytest.raises(SharedCancelled):
        await caller


async def test_a_failed_operation_nobody_awaits_is_logged_not_unretrieved(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def crash() -> str:
        await release.wait()
        raise KeyError("bug")

    logged = _Logged("shared 'k' failed")
    log.addHandler(logged)
    try:
        async with Supervisor("t", log) as sup:
            joins = _Joins(sup)
            caller = joins.call("k", crash)
            await joins.entered(1)
            assert _waiters(sup, "k") == 1
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            release.set()
            async with asyncio.timeout(5):
                await logged.seen.wait()  # logged once the operation is forgotten
            assert not sup.shared_running("k")
    finally:
        log.removeHandler(logged)
    assert any(r.getMessage() == "shared 'k' failed" for r in caplog.records)


class _Joins:
    """Callers of ``sup.shared``, each in a task of its own, counted as they
    enter it.  ``shared`` counts its waiter before it first suspends, so once
    ``entered(n)`` returns, n callers are waiting (the tests assert it)."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._count = 0
        self._joined = asyncio.Event()

    def call(self, key: str, factory: Callable[[], Coroutine[Any, Any, str]],
             **kwargs: Any) -> asyncio.Task[str]:
        async def caller() -> str:
            self._count += 1
            self._joined.set()
            return await self._sup.shared(key, factory, **kwargs)

        return asyncio.create_task(caller())

    async def entered(self, count: int) -> None:
        await wait_until(lambda: self._count >= count, self._joined, timeout=5)


class _Logged(logging.Handler):
    """Sets ``seen`` when ``message`` is logged."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.seen.set()


def _waiters(sup: Supervisor, key: str) -> int:
    return sup.waiters(key)
