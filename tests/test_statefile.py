"""The state-file module: envelope, limits, journal, stale temporary files
and the background writer's coalescing, retry and flush semantics."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overlay.errors import OverlayError
from overlay.fsutil import atomic_write
from overlay.statefile import (
    CorruptState,
    Journal,
    StateWriteFailed,
    StateWriter,
    encode_state,
    read_state,
    remove_stale_tmp,
)
from tests.waiting import wait_until


def test_envelope_versions_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert read_state(path, "fmt", (1,), 1024) is None
    path.write_bytes(encode_state("fmt", 1, {"x": 1}))
    version, doc = read_state(path, "fmt", (1, 2), 1024) or (0, {})
    assert version == 1 and doc["x"] == 1
    with pytest.raises(CorruptState, match="version"):
        read_state(path, "fmt", (2,), 1024)
    with pytest.raises(CorruptState, match="format"):
        read_state(path, "other", (1,), 1024)
    with pytest.raises(CorruptState, match="limit"):
        read_state(path, "fmt", (1,), 10)
    path.write_bytes(b"\xff{")
    with pytest.raises(CorruptState, match="JSON"):
        read_state(path, "fmt", (1,), 1024)
    # A legacy file without a format is read only where the caller allows it.
    path.write_text(json.dumps({"version": 1, "records": []}))
    with pytest.raises(CorruptState):
        read_state(path, "fmt", (1,), 1024)
    assert read_state(path, "fmt", (1,), 1024, legacy=True) is not None
    assert issubclass(CorruptState, OverlayError)


def test_stale_tmp_files_of_known_names_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".records.log.ab12_cd.tmp").write_bytes(b"x" * 100)
    (tmp_path / ".providers.log.zz9.tmp").write_bytes(b"x")
    keep = [tmp_path / ".other.json.ab1.tmp", tmp_path / "records.log", tmp_path / "x.tmp"]
    for path in keep:
        path.write_bytes(b"keep")
    assert remove_stale_tmp(tmp_path, ("records.log", "providers.log")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert remove_stale_tmp(tmp_path / "missing", ("records.log",)) == 0


def _journal(path: Path, items: list[dict[str, Any]], **kw: Any) -> Journal[dict[str, Any]]:
    return Journal(path, "j", 1, snapshot=lambda: list(items), encode=lambda item: item,
                   max_bytes=1 << 20, max_line_bytes=256, **kw)


def _run(job: Callable[[], None] | None) -> None:
    assert job is not None
    job()


def test_journal_appends_replays_compacts_and_drops_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    live: list[dict[str, Any]] = []
    journal = _journal(path, live, compact_min=4)
    live.append({"n": 0})
    journal.append({"n": 0})
    _run(journal.prepare())  # the first write compacts: header and snapshot
    for n in range(1, 4):
        live.append({"n": n})
        journal.append({"n": n})
        _run(journal.prepare())
    assert [e["n"] for e in _journal(path, live).replay()] == [0, 1, 2, 3]
    assert journal.compactions == 1
    for n in range(4, 12):  # superseded lines: the log is rewritten from the snapshot
        journal.append({"n": n})
        job = journal.prepare()
        _run(job)
    assert journal.compactions == 2
    assert len(path.read_bytes().splitlines()) <= 1 + len(live) + 4
    # A crash mid-append leaves a torn last line: dropped and cut off.
    with path.open("ab") as handle:
        handle.write(b'{"torn": 1')
    size = path.stat().st_size
    replayed = list(_journal(path, live).replay())
    assert all("torn" not in e for e in replayed)
    assert path.stat().st_size == size - len(b'{"torn": 1')
    # A broken line in the middle is corruption, not a crash artefact.
    path.write_bytes(path.read_bytes().replace(b'{"n":1}', b'{"n":1'))
    with pytest.raises(CorruptState):
        list(_journal(path, live).replay())
    path.write_bytes(b'{"format":"other","version":1}\n')
    with pytest.raises(CorruptState):
        list(_journal(path, live).replay())
    path.write_bytes(b"x" * (2 << 20))
    with pytest.raises(CorruptState, match="over"):
        list(_journal(path, live).replay())


class Target:
    """A persisted target whose writes fail while ``fail`` is set."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = 0
        self.fail = False
        self.jobs = 0

    def prepare(self) -> Callable[[], None]:
        value, fail = self.value, self.fail
        self.jobs += 1

        def job() -> None:
            if fail:
                raise OSError(28, "No space left on device")
            atomic_write(self.path, str(value).encode())

        return job


async def test_writer_coalesces_and_flush_waits_for_the_disk(tmp_path: Path) -> None:
    target = Target(tmp_path / "v")
    async with StateWriter(target, "test state", interval=60.0) as writer:
        await writer.flush()  # nothing dirty: returns at once
        for n in range(1, 50):
            target.value = n
            writer.mark_dirty()
        await writer.flush()
        assert target.path.read_text() == "49"
        assert writer.writes <= 2  # 49 marks, at most two writes
        target.value = 50
        writer.mark_dirty()
    # The exit writes what is left, although the interval has not passed.
    assert target.path.read_text() == "50" and not writer.pending


async def test_a_failing_write_is_retried_and_never_raises_into_the_owner(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = Target(tmp_path / "v")
    async with StateWriter(target, "test state", interval=0.01, max_backoff=0.05) as writer:
        target.fail, target.value = True, 7
        writer.mark_dirty()
        with pytest.raises(StateWriteFailed):
            await writer.flush()
        # Retried with back-off, the task lives on: each attempt sets ``attempted``.
        await wait_until(lambda: writer.failures >= 3, writer.attempted, timeout=10)
        assert writer.pending
        target.fail = False
        await writer.flush()
    assert target.path.read_text() == "7"
    errors = [r for r in caplog.records if "cannot write the test state" in r.getMessage()]
    assert len(errors) == 1  # once per burst


async def test_exit_gives_up_on_a_dead_disk_without_raising(tmp_path: Path) -> None:
    target = Target(tmp_path / "v")
    target.fail = True
    async with asyncio.timeout(10):
        async with StateWriter(target, "test state", interval=0.01, exit_attempts=2) as writer:
            writer.mark_dirty()
    assert writer.pending and writer.failures >= 2 and not target.path.exists()
