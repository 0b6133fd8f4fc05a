"""Waiting on state in tests without polling: re-check a predicate each
time one of the events the code under test sets fires."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from overlay.host.events import HostListener

__all__ = ["host_changes", "wait_for_hosts", "wait_until"]


async def wait_until(predicate: Callable[[], bool], *events: asyncio.Event,
                     timeout: float) -> None:
    """Until ``predicate()`` holds, re-checking whenever one of ``events``
    is set; ``TimeoutError`` after ``timeout`` seconds.

    Each event is cleared before the wait, after the check, with no loop
    turn in between: a change after the check always wakes us."""
    if not events:
        raise ValueError("wait_until needs at least one event to wait on")
    async with asyncio.timeout(timeout):
        while not predicate():
            for event in events:
                event.clear()
            waits = [asyncio.ensure_future(event.wait()) for event in events]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


class host_changes:  # noqa: N801 - used like a function: ``with host_changes(host) as ev``
    """An event set whenever ``host`` tells its listeners anything: a
    connection adopted (``opened``, once ``best_connection`` already
    returns it), a peer connected, disconnected or identified.  Use with
    ``with`` or ``async with`` (to join other asynchronous managers)."""

    def __init__(self, host: Any) -> None:
        self._host = host
        self.event = asyncio.Event()
        fire = self._fire
        self._listener = HostListener(connected=fire, disconnected=fire, identified=fire,
                                      closed=fire, opened=fire, changed=fire)

    def _fire(self, *_: object) -> None:
        self.event.set()

    def __enter__(self) -> asyncio.Event:
        self._host.add_listener(self._listener)
        return self.event

    def __exit__(self, *_: object) -> None:
        self._host.remove_listener(self._listener)

    async def __aenter__(self) -> asyncio.Event:
        return self.__enter__()

    async def __aexit__(self, *_: object) -> None:
        self.__exit__()


async def wait_for_hosts(predicate: Callable[[], bool], *hosts: Any, timeout: float) -> None:
    """Until ``predicate()`` holds, re-checking whenever one of ``hosts``
    notifies its listeners (see ``host_changes``).  The listeners are in
    place before the first check, so no change is missed."""
    with ExitStack() as stack:
        events = [stack.enter_context(host_changes(host)) for host in hosts]
        await wait_until(predicate, *events, timeout=timeout)
