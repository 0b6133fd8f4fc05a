"""Crash-safe file writes: temporary file, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], data: bytes | Iterable[bytes],
                 mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or new file,
    never a torn one.  ``mode`` is applied before any byte is written, so a
    secret is never readable by others even briefly.  ``data`` may be an
    iterable of chunks, written as they come (a large snapshot is never
    held twice in memory).  A crash may leave the temporary file
    ``.<name>.<random>.tmp``; ``overlay.statefile.remove_stale_tmp`` removes
    those at start."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes | bytearray | memoryview):
                handle.write(data)
            else:
                for chunk in data:
                    handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
