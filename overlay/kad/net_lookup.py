"""Drive a pure ``Lookup`` with real requests.

Each ``SendRequest`` becomes a task in a TaskGroup owned by this call;
answers come back through a queue, so the state machine is only touched
from one coroutine.  Waiting honours the lookup's own deadline (the
per-peer timeout), and whatever is still in flight when the lookup
finishes is cancelled before returning.

A request that timed out on a connection that is still open is reported
as such, with its attempt number: the lookup then asks that peer again
(``LookupConfig.retries``), since a message may have been lost.  An error
answer, a refusal, or a timeout that left no connection (the dial went
unanswered: the peer is gone, and dialing again would only wait as long
again) is final.  The failure hook only hears of
failures the lookup counts, so a peer whose retry answered is not reported
as failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import Finished, Lookup, LookupResult, SendRequest
from overlay.kad.messages import KadMessage

__all__ = ["Query", "AnswerHook", "FailureHook", "drive_lookup"]

Query = Callable[[Contact], Awaitable[KadMessage]]
"""Send the lookup's request to one peer and return its (checked) answer."""
AnswerHook = Callable[[Contact, KadMessage], Sequence[Contact]]
"""Note an answer; returns the closer peers to feed to the lookup."""
FailureHook = Callable[[Contact, BaseException], None]

_Outcome = tuple[Contact, int, KadMessage | BaseException]


async def drive_lookup(
    lookup: Lookup,
    query: Query,
    on_answer: AnswerHook,
    on_failure: FailureHook,
    clock: Callable[[], float],
    timeout: float,
    connected: Callable[[PeerId], bool] | None = None,
) -> LookupResult:
    """Run ``lookup`` to the end, or for at most ``timeout`` seconds, and
    return its result (a partial one after the timeout).  ``connected``
    tells whether a connection to a peer is open (None: always)."""
    try:
        async with asyncio.timeout(timeout):
            return await _drive(lookup, query, on_answer, on_failure, clock, connected)
    except TimeoutError:
        return lookup.finish()


async def _drive(
    lookup: Lookup,
    query: Query,
    on_answer: AnswerHook,
    on_failure: FailureHook,
    clock: Callable[[], float],
    connected: Callable[[PeerId], bool] | None,
) -> LookupResult:
    outcomes: asyncio.Queue[_Outcome] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()

    async def ask(contact: Contact, attempt: int) -> None:
        try:
            answer: KadMessage | BaseException = await query(contact)
        except (OverlayError, TimeoutError, OSError) as exc:
            answer = exc
        outcomes.put_nowait((contact, attempt, answer))

    def settle(outcome: _Outcome) -> None:
        contact, attempt, answer = outcome
        if lookup.finished:
            return
        if isinstance(answer, KadMessage):
            closer = on_answer(contact, answer)
            lookup.on_success(
                contact.peer_id,
                closer,
                clock(),
                record=answer.record,
                providers=answer.provider_peers,
            )
        elif lookup.on_failure(
            contact.peer_id,
            clock(),
            timed_out=isinstance(answer, TimeoutError)
            and (connected is None or connected(contact.peer_id)),
            attempt=attempt,
        ):
            on_failure(contact, answer)

    async with asyncio.TaskGroup() as tg:
        try:
            while True:
                action = lookup.next(clock())
                if isinstance(action, SendRequest):
                    task = tg.create_task(ask(action.peer, action.attempt))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    continue
                if isinstance(action, Finished):
                    return action.result
                if action.deadline is None and not running and outcomes.empty():
                    return lookup.finish()  # nothing in flight can wake us
                delay = None if action.deadline is None else max(0.0, action.deadline - clock())
                try:
                    async with asyncio.timeout(delay):
                        outcome = await outcomes.get()
                except TimeoutError:
                    continue  # a peer's deadline passed; next() notices
                settle(outcome)
                while not outcomes.empty():
                    settle(outcomes.get_nowait())
        finally:
            for task in running:
                task.cancel()
