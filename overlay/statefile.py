"""Every state file of the node, one way: a versioned envelope, a size
limit checked before reading, one error, atomic writes, and a background
writer so no request path waits for the disk (STYLE rule 16).

- ``encode_state`` / ``read_state``: a JSON document carrying
  ``"format"`` and ``"version"``; the loader refuses a file over its limit
  unread and raises ``CorruptState`` for anything it cannot use.  Legacy
  files of this version without ``"format"`` are accepted where a caller
  says so (``legacy=True``), so no user data is lost.
- ``Journal``: an append-only log (one JSON object per line after a header
  line) for stores whose snapshot is large: a put costs one line, and the
  log is compacted from a snapshot once it is mostly superseded lines.
  A torn last line (a crash mid-append) is dropped and cut off on load.
- ``Snapshot``: a small file rewritten whole, encoded and written off the loop.
- ``StateWriter``: an owned task that coalesces dirty marks and runs the
  writes in a worker thread at most every ``interval`` seconds, at once
  for ``await flush()``, and once more at exit.  A write error (disk full,
  EACCES) is logged once per burst and retried with back-off; it never
  ends the daemon.  ``flush()`` raises ``StateWriteFailed`` to its caller
  only (the write is still retried).
- ``remove_stale_tmp``: deletes ``.<name>.*.tmp`` files a crash left
  behind (``overlay.fsutil.atomic_write``'s pattern only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from overlay.errors import LimitExceeded, OverlayError
from overlay.fsutil import atomic_write
from overlay.supervisor import RestartPolicy, Supervisor

__all__ = [
    "CorruptState",
    "StateWriteFailed",
    "Journal",
    "Persisted",
    "Snapshot",
    "StateWriter",
    "encode_state",
    "read_bytes_limited",
    "read_state",
    "remove_stale_tmp",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class CorruptState(OverlayError):
    """A state file is unreadable, too large, of another format or version."""


class StateWriteFailed(OverlayError):
    """A state write failed (disk full, permission); it is being retried."""


def encode_state(fmt: str, version: int, body: dict[str, Any]) -> bytes:
    doc = {"format": fmt, "version": version, **body}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def read_bytes_limited(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, refused unread over ``max_bytes`` (``CorruptState``);
    None if it does not exist."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise CorruptState(f"{path} is {size} bytes, over the limit of {max_bytes}")
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptState(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise CorruptState(f"{path} is over the limit of {max_bytes} bytes")
    return data


def _check_envelope(path: Path, doc: object, fmt: str, versions: Iterable[int],
                    legacy: bool) -> tuple[int, dict[str, Any]]:
    if not isinstance(doc, dict):
        raise CorruptState(f"{path} does not hold a JSON object")
    found = doc.get("format")
    if found != fmt and not (legacy and found is None):
        raise CorruptState(f"{path} is not a {fmt} file (format {found!r})")
    version = doc.get("version")
    allowed = tuple(versions)
    if legacy and found is None and version is None:
        version = allowed[0]  # the oldest files carried neither field
    if not isinstance(version, int) or isinstance(version, bool) or version not in allowed:
        raise CorruptState(f"{path}: version {version!r} is not supported (reads {allowed})")
    return version, doc


def read_state(path: str | os.PathLike[str], fmt: str, versions: Iterable[int],
               max_bytes: int, *, legacy: bool = False) -> tuple[int, dict[str, Any]] | None:
    """``(version, document)`` of ``path``, or None if it does not exist;
    raises ``CorruptState``."""
    target = Path(path)
    data = read_bytes_limited(target, max_bytes)
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptState(f"{target} is not valid JSON: {exc}") from None
    return _check_envelope(target, doc, fmt, versions, legacy)


def remove_stale_tmp(directory: str | os.PathLike[str], names: Iterable[str]) -> int:
    """Delete the temporary files of ``atomic_write`` for ``names`` in
    ``directory`` (``.<name>.<random>.tmp``); returns how many.  Call it
    before the writers start: a live writer's file would match too."""
    root = Path(directory)
    patterns = [re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.tmp") for name in names]
    removed = 0
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file():
            try:
                entry.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        log.info("removed %d temporary files left by a crash in %s", removed, root)
    return removed


class Persisted(Protocol):
    def prepare(self) -> Callable[[], None] | None:
        """Called on the loop: capture what must be written (cheaply) and
        return the blocking job for the worker thread, or None."""
        ...


class Snapshot:
    """A file rewritten whole; ``body`` runs on the loop and must return
    data that is not mutated afterwards (encoding runs in the thread)."""

    def __init__(self, path: str | os.PathLike[str], fmt: str, version: int,
                 body: Callable[[], dict[str, Any]], mode: int = 0o600) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.version = version
        self._body = body
        self._mode = mode

    def prepare(self) -> Callable[[], None]:
        body = self._body()

        def job() -> None:
            atomic_write(self.path, encode_state(self.fmt, self.version, body), self._mode)

        return job


class Journal(Generic[T]):
    """An append-only log of JSON lines with compaction from a snapshot.

    ``snapshot`` (on the loop) returns the live items, cheaply (a list of
    immutable objects); ``encode`` turns one into its line's object in the
    worker thread.  Replay yields each line's object in order; later lines
    supersede earlier ones, which is the store's business."""

    def __init__(self, path: str | os.PathLike[str], fmt: str, version: int, *,
                 snapshot: Callable[[], list[T]], encode: Callable[[T], dict[str, Any]],
                 max_bytes: int, max_line_bytes: int, compact_min: int = 1024,
                 compact_ratio: float = 1.0,
                 on_compacted: Callable[[], None] | None = None,
                 count: Callable[[], int] | None = None) -> None:
        """``on_compacted`` runs in the worker thread after each compaction
        (a migration removes the file it replaced); ``count`` tells the live
        items cheaply, so a write does not copy the snapshot to decide."""
        self.path = Path(path)
        self.fmt = fmt
        self.version = version
        self._snapshot = snapshot
        self._encode = encode
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self._compact_min = compact_min
        self._ratio = compact_ratio
        self._pending: list[bytes] = []
        self._lines = 0
        """Lines in the file since its last compaction (plus pending)."""
        self._must_compact = not self.path.exists()
        self._on_compacted = on_compacted
        self._count = count
        self.compactions = 0

    def header(self) -> bytes:
        return encode_state(self.fmt, self.version, {}) + b"\n"

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(line) >= self.max_line_bytes:
            raise LimitExceeded(f"journal line of {len(line)} bytes over {self.max_line_bytes}")
        if self._must_compact:
            return  # the coming compaction writes the whole state anyway
        self._pending.append(line + b"\n")
        self._lines += 1

    def compact_soon(self) -> None:
        self._must_compact = True

    def replay(self) -> Iterator[dict[str, Any]]:
        """The logged objects in order; raises ``CorruptState``.  A torn
        last line is dropped and cut off the file so appends stay clean."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CorruptState(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size > self.max_bytes:
                raise CorruptState(f"{self.path} is {size} bytes, over {self.max_bytes}")
            first = handle.readline(self.max_line_bytes + 1)
            try:
                _check_envelope(self.path, json.loads(first), self.fmt, (self.version,), False)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise CorruptState(f"{self.path} has no valid header: {exc}") from None
            good = len(first)
            lines = 0
            while True:
                line = handle.readline(self.max_line_bytes + 1)
                if not line:
                    break
                torn = not line.endswith(b"\n")
                try:
                    obj = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    obj = None
                if torn or not isinstance(obj, dict):
                    if torn and good + len(line) == size:
                        log.warning("%s: dropping a torn last line (%d bytes)", self.path,
                                    len(line))
                        break
                    raise CorruptState(f"{self.path}: line {lines + 2} is corrupt")
                good += len(line)
                lines += 1
                yield obj
        if good < size:
            os.truncate(self.path, good)
        self._lines = lines

    def prepare(self) -> Callable[[], None] | None:
        pending, self._pending = self._pending, []
        live = self._count() if self._count is not None else None
        due = self._lines > self._compact_min + self._ratio * (live or 0)
        items = self._snapshot() if self._must_compact or due else None
        if items is not None and (self._must_compact
                                  or self._lines > self._compact_min + self._ratio * len(items)):
            # Everything pending is in the snapshot too; the log restarts from it.
            self._must_compact = False
            self._lines = len(items)
            encode, header, path, after = (self._encode, self.header(), self.path,
                                           self._on_compacted)

            def lines() -> Iterator[bytes]:
                yield header
                for item in items:
                    yield json.dumps(encode(item), sort_keys=True,
                                     separators=(",", ":")).encode("utf-8") + b"\n"

            def compact() -> None:
                atomic_write(path, lines(), 0o600)
                if after is not None:
                    after()

            self.compactions += 1
            return compact
        if not pending:
            return None
        path = self.path

        def append() -> None:
            with path.open("ab") as handle:
                handle.write(b"".join(pending))
                handle.flush()
                os.fsync(handle.fileno())

        return append

    def requeue(self, job: Callable[[], None]) -> None:
        """A failed job is redone whole by compacting next time."""
        self._must_compact = True


class StateWriter:
    """Writes ``target`` in a worker thread when marked dirty, coalescing
    marks within ``interval`` seconds.  ``async with`` owns the task."""

    def __init__(self, target: Persisted, what: str, *, interval: float = 0.2,
                 max_backoff: float = 30.0, exit_attempts: int = 3) -> None:
        self.target = target
        self.what = what
        self.interval = interval
        self.max_backoff = max_backoff
        self.exit_attempts = exit_attempts
        self._dirty = 0
        """Generation of the latest change."""
        self._written = 0
        """Latest generation known durable."""
        self._failed = 0
        """Latest generation whose write attempt failed."""
        self._wake = asyncio.Event()
        self._urgent = False
        self._changed = asyncio.Condition()
        self._stopping = False
        self._sup: Supervisor | None = None
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        self.failures = 0
        self.attempted = asyncio.Event()
        """Set after every write attempt, whether it succeeded (``writes``)
        or failed (``failures``), so callers can wait for it instead of polling."""
        self._burst = 0
        """Consecutive failures (one log line per burst)."""

    def mark_dirty(self) -> None:
        self._dirty += 1
        self._wake.set()

    @property
    def pending(self) -> bool:
        return self._written < self._dirty

    async def flush(self) -> None:
        """Until every change marked so far is on disk; raises
        ``StateWriteFailed`` if the write covering it failed."""
        mine = self._dirty
        if self._written >= mine:
            return
        if self._task is None or self._task.done():
            raise StateWriteFailed(f"the {self.what} writer is not running")
        self._urgent = True
        self._wake.set()
        failures = self.failures  # only a failure after this call counts
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._written >= mine or self.failures > failures)
        if self._written < mine:
            raise StateWriteFailed(f"writing the {self.what} failed; retrying in the background")

    async def __aenter__(self) -> StateWriter:
        if self._sup is not None:
            raise OverlayError("a state writer is started once")
        # A restart policy brings the writer back after a bug (anything but
        # OSError, which the loop handles itself); the supervisor logs it.
        self._sup = await Supervisor(self.what, log).__aenter__()
        self._task = self._sup.spawn(self._run, f"writing the {self.what}",
                                     restart=RestartPolicy())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        sup = self._sup
        if sup is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            # The job returns after its last write (bounded by exit_attempts);
            # cancelling the exit (a second Ctrl-C) abandons it.
            if self._task is not None:
                await asyncio.wait([self._task])
        finally:
            self._task = None
            await sup.aclose()

    async def _write_once(self) -> bool:
        gen = self._dirty
        job = self.target.prepare()
        try:
            if job is not None:
                await asyncio.to_thread(job)
        except OSError as exc:
            self.failures += 1
            requeue = getattr(self.target, "requeue", None)
            if requeue is not None and job is not None:
                requeue(job)
            self._failed = gen
            self.attempted.set()
            async with self._changed:
                self._changed.notify_all()
            return self._report(exc)
        self.writes += 1 if job is not None else 0
        self._written = max(self._written, gen)
        self.attempted.set()
        async with self._changed:
            self._changed.notify_all()
        return True

    def _report(self, exc: OSError) -> bool:
        if self._burst == 0:
            log.error("cannot write the %s: %s; retrying", self.what, exc.strerror or exc)
        self._burst += 1
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        last = -self.interval
        while True:
            if not self.pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = last + self.interval - loop.time()
            if wait > 0 and not self._urgent and not self._stopping:
                try:
                    async with asyncio.timeout(wait):
                        while not (self._urgent or self._stopping):
                            self._wake.clear()
                            await self._wake.wait()
                except TimeoutError:
                    pass
            self._urgent = False
            last = loop.time()
            if await self._write_once():
                if self._burst:
                    log.info("the %s is written again after %d failures", self.what,
                             self._burst)
                self._burst = 0
                backoff = 0.0
                continue
            if self._stopping and self._burst >= self.exit_attempts:
                log.error("giving up on writing the %s at exit", self.what)
                return
            backoff = min(self.max_backoff, max(self.interval, 0.05, backoff * 2))
            if self._stopping:
                backoff = min(backoff, 0.5)  # the exit must not hang on a full disk
            try:
                async with asyncio.timeout(backoff):
                    while not self._urgent:
                        self._wake.clear()
                        await self._wake.wait()
            except TimeoutError:
                pass
