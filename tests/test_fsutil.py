import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlay.fsutil import atomic_write


def test_atomic_write_sets_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secret"
    atomic_write(target, b"one", mode=0o600)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert sorted(os.listdir(target.parent)) == ["secret"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_chunks_are_written_in_order_and_a_failing_iterable_leaves_the_old_file(
        tmp_path: Path) -> None:
    target = tmp_path / "state"
    atomic_write(target, (bytes([n]) * 3 for n in range(4)), 0o600)
    assert target.read_bytes() == b"\x00" * 3 + b"\x01" * 3 + b"\x02" * 3 + b"\x03" * 3

    def broken() -> Iterator[bytes]:
        yield b"new"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, broken())
    assert target.read_bytes().startswith(b"\x00")
    assert [p.name for p in tmp_path.iterdir()] == ["state"]  # no tmp left
