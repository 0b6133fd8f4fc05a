import os
import stat
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
