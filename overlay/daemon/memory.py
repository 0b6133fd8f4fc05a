"""Give memory back to the system after a burst (issue #10: "RSS returned
within a minute after" an attack).

A flood of connections and streams grows the heap; when they are gone,
CPython frees the objects but glibc's allocator keeps the pages, so the
daemon's resident size stays at its peak for good.  ``TrimPolicy`` decides,
from resident-size samples alone, when a trim is worth its few milliseconds:
the process is well above the smallest size it has been seen at, and it has
stopped growing (trimming in the middle of a burst only hands pages back
that are needed again at once).  ``MemoryReturner`` is the thin shell that
samples ``/proc/self/statm`` and calls ``malloc_trim(0)``.

Trimming alone is not enough: CPython's small-object allocator takes memory
in 1 MiB arenas and can only give an arena back when every object in it is
dead.  A burst of 50,000 streams spreads the few objects that outlive it
(peer-store entries, routing-table RTTs) over most arenas, and measured
(bench/attack.py ``idle_streams``) 56 of 82 arenas stayed pinned: 47-65 MiB
over the pre-attack size, for good.  Under the system allocator the same
objects pin 4 KiB pages instead and ``malloc_trim`` hands the rest back
(84 MiB after the attack against 70 MiB before; it peaks at the same size).
It costs 3-8% more CPU per transferred MB, so ``overlay daemon`` re-executes
itself with ``PYTHONMALLOC=malloc`` (``use_system_allocator``) unless the
user chose an allocator (``PYTHONMALLOC`` set) or opted out with
``OVERLAY_ALLOCATOR=pymalloc``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from overlay.supervisor import RestartPolicy, Supervisor

__all__ = ["TrimPolicy", "MemoryReturner", "resident_bytes", "malloc_trim",
           "use_system_allocator"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass
class TrimPolicy:
    """When to hand freed heap back: a pure function of (now, rss) samples."""

    slack: int = 32 * MIB
    """Growth over the floor that is worth returning."""
    settle: float = 5.0
    """Seconds without growth before trimming: the burst is over."""
    min_interval: float = 10.0
    """At most one trim per this many seconds."""
    floor: int | None = field(default=None, init=False)
    _peak_since_trim: int = field(default=0, init=False)
    _last_growth: float = field(default=float("-inf"), init=False)
    _last_trim: float = field(default=float("-inf"), init=False)

    def sample(self, now: float, rss: int) -> bool:
        """Record one sample; True when a trim should run now."""
        if self.floor is None or rss < self.floor:
            self.floor = rss
        if rss > self._peak_since_trim + self.slack // 4:
            # Still climbing: a trim now would be undone by the next burst.
            self._last_growth = now
        self._peak_since_trim = max(self._peak_since_trim, rss)
        if rss < self.floor + self.slack:
            return False
        if now - self._last_growth < self.settle or now - self._last_trim < self.min_interval:
            return False
        self._last_trim = now
        self._peak_since_trim = 0
        return True

    def trimmed(self, rss: int) -> None:
        """The size after a trim: what is left is in use, so it is the new
        reference for growth (the floor stays the smallest size seen)."""
        self._peak_since_trim = rss


def resident_bytes() -> int:
    """This process's resident set size, from ``/proc/self/statm``."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read(256).split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def use_system_allocator() -> None:
    """Re-execute this process under the system allocator when it was
    started as ``overlay daemon`` and nobody chose an allocator.  Returns
    (without exec) in every other case: an allocator already chosen, the
    opt-out, no ``malloc_trim`` to pair it with, or a daemon command run
    inside another program (a test calling ``main([...])``), which must not
    be replaced."""
    if os.environ.get("PYTHONMALLOC") or os.environ.get("OVERLAY_ALLOCATOR") == "pymalloc":
        return
    if _TRIM is None:
        return
    args = sys.argv[1:]
    if "daemon" not in args or sys.orig_argv[len(sys.orig_argv) - len(args):] != args:
        return
    env = dict(os.environ, PYTHONMALLOC="malloc")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def malloc_trim() -> bool:
    """Collect cycles, then return free heap pages to the system.
    False where the C library has no ``malloc_trim``."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class MemoryReturner:
    """Samples the resident size every ``interval`` seconds and trims when
    ``TrimPolicy`` says so; counts trims and bytes returned for stats."""

    def __init__(self, interval: float = 2.0, policy: TrimPolicy | None = None,
                 read_rss: Callable[[], int] = resident_bytes,
                 trim: Callable[[], bool] = malloc_trim,
                 clock: Callable[[], float] | None = None) -> None:
        self.interval = interval
        self.policy = policy or TrimPolicy()
        self._read_rss = read_rss
        self._trim = trim
        self._clock = clock
        self.trims = 0
        self.returned_bytes = 0
        self.trimmed = asyncio.Event()
        """Set after each trim (tests wait on it)."""
        self._sup = Supervisor("memory", log)

    def stats(self) -> dict[str, int]:
        return {"trims": self.trims, "returned_bytes": self.returned_bytes,
                "rss_bytes": self._read_rss()}

    def check(self) -> bool:
        """One sampling step; True when it trimmed."""
        now = self._clock() if self._clock else asyncio.get_running_loop().time()
        before = self._read_rss()
        if not self.policy.sample(now, before):
            return False
        if not self._trim():
            return False
        after = self._read_rss()
        self.policy.trimmed(after)
        self.trims += 1
        self.returned_bytes += max(0, before - after)
        log.info("returned %.1f MiB of freed heap to the system (%.1f -> %.1f MiB)",
                 (before - after) / MIB, before / MIB, after / MIB)
        self.trimmed.set()
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    async def __aenter__(self) -> MemoryReturner:
        await self._sup.__aenter__()
        self._sup.spawn(self._loop, "memory returner", restart=RestartPolicy())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._sup.__aexit__(exc_type, exc, tb)
