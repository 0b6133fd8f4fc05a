"""Progress lines for long waits, on stderr and only on a terminal.

Piped output and ``--json`` stay clean: a ``ProgressLine`` that is not
enabled writes nothing.  ``SlowWait`` shows a seconds counter once a wait
passes one second (DHT lookups, resolves); proof of work shows the daemon's
estimate from its ``pow_started`` event.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from types import TracebackType
from typing import TextIO

from overlay.supervisor import Supervisor

__all__ = ["ProgressLine", "SlowWait", "pow_estimate", "stderr_is_terminal"]

log = logging.getLogger(__name__)

_TICK = 0.25


def stderr_is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


class ProgressLine:
    """One line rewritten in place; ``clear()`` removes it."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and stderr_is_terminal(self.stream)
        self._shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


class SlowWait:
    """``async with SlowWait("looking up"):`` shows ``looking up… 2.5 s``
    after ``after`` seconds, updated until the block ends.

    The ticker is a job of a ``Supervisor`` scoped to this context
    manager: it is cancelled and awaited on exit, whatever the block raised."""

    def __init__(self, what: str, *, enabled: bool = True, after: float = 1.0,
                 line: ProgressLine | None = None, estimate: float | None = None) -> None:
        self.what = what
        self.after = after
        self.line = line or ProgressLine(enabled)
        self.estimate = estimate
        """Expected seconds, shown as ``(about N s)`` when known."""
        self._sup: Supervisor | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0

    def text(self, elapsed: float) -> str:
        about = f" (expected about {self.estimate:.0f} s)" if self.estimate else ""
        return f"{self.what}… {elapsed:.1f} s{about}"

    async def _tick(self) -> None:
        await asyncio.sleep(self.after)
        while True:
            self.line.show(self.text(time.monotonic() - self._started))
            await asyncio.sleep(_TICK)

    def finish(self) -> None:
        """Stop showing progress now (output is about to be printed); the
        ticker is still awaited on exit."""
        if self._task is not None:
            self._task.cancel()
        self.line.clear()

    async def __aenter__(self) -> SlowWait:
        self._started = time.monotonic()
        if self.line.enabled:
            sup = Supervisor("progress", log)
            await sup.__aenter__()
            self._sup = sup
            self._task = sup.spawn(self._tick, f"progress line for {self.what!r}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        sup, self._sup = self._sup, None
        self._task = None
        try:
            if sup is not None:
                # Cancels the ticker and awaits it; a cancellation of the
                # caller meanwhile is passed on once the ticker has ended.
                await sup.aclose()
        finally:
            self.line.clear()


def pow_estimate(bits: int, sample: float = 0.02) -> float:
    """Expected seconds to solve ``bits`` of proof of work, from this
    machine's hash rate over ``sample`` seconds (the daemon usually runs on
    the same machine); 2^bits hashes are expected."""
    from overlay.naming.pow import pow_digest

    owner = bytes(38)
    count = 0
    started = time.perf_counter()
    deadline = started + sample
    while True:
        for nonce in range(count, count + 256):
            pow_digest("estimate.ovl", owner, nonce)
        count += 256
        now = time.perf_counter()
        if now >= deadline:
            return float(2**bits) * (now - started) / count
