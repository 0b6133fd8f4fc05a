"""Host key files: a libp2p ``PrivateKey`` protobuf, mode 0600.

The format is the one go-libp2p and js-libp2p store, so a key can move
between implementations.  Writes are atomic; creation never replaces an
existing key, because a node's key is its identity and cannot be recovered.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from overlay.errors import InvalidKeyError
from overlay.fsutil import atomic_write
from overlay.identity.errors import (
    KeyFileError,
    KeyFileExists,
    KeyFileInsecure,
    KeyFileInvalid,
    KeyFileMissing,
)
from overlay.identity.keys import (
    MAX_PRIVATE_KEY_PROTOBUF,
    Ed25519PrivateKey,
    PrivateKey,
    private_key_from_protobuf,
)

__all__ = [
    "KEY_FILE_MODE",
    "save_private_key",
    "load_private_key",
    "create_private_key_file",
]

KEY_FILE_MODE = 0o600


def save_private_key(path: str | os.PathLike[str], key: PrivateKey) -> None:
    """Write ``key`` to ``path`` atomically with mode 0600, replacing any
    file there.  Use ``create_private_key_file`` when an existing key must
    survive.  Raises ``KeyFileError`` if the file cannot be written."""
    try:
        atomic_write(path, key.to_protobuf(), mode=KEY_FILE_MODE)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise KeyFileError(os.fspath(path), f"cannot write key file: {reason}") from exc


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read a key file.  Refuses files that are missing, not regular,
    readable by group/others, too large or not a valid libp2p key."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileMissing(name, "no key file; run `overlay init` to create one") from None
    except OSError as exc:
        # ELOOP from O_NOFOLLOW: a symlink could point anywhere.
        raise KeyFileInvalid(name, f"cannot open key file: {exc.strerror}") from None
    try:
        # fstat on the open descriptor, so the checks apply to what we read.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileInvalid(name, "key file is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileInsecure(
                name,
                f"key file has mode {stat.S_IMODE(info.st_mode):04o} and is readable by "
                f"others; run `chmod 600 {name}`",
            )
        data = _read_up_to(fd, MAX_PRIVATE_KEY_PROTOBUF + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PRIVATE_KEY_PROTOBUF:
        raise KeyFileInvalid(name, f"key file is larger than {MAX_PRIVATE_KEY_PROTOBUF} bytes")
    try:
        return private_key_from_protobuf(data)
    except InvalidKeyError as exc:
        raise KeyFileInvalid(name, f"not a libp2p private key: {exc}") from None


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def create_private_key_file(
    path: str | os.PathLike[str], key: PrivateKey | None = None
) -> PrivateKey:
    """Create a key file holding ``key`` (a new Ed25519 key by default).

    Never replaces an existing file, even one created concurrently: the key
    is written atomically to a temporary name and then hard-linked into
    place, and ``link`` fails if the target exists.
    """
    target = Path(path)
    if key is None:
        key = Ed25519PrivateKey.generate()
    if os.path.lexists(target):
        raise KeyFileExists(str(target), "a key file already exists; refusing to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise KeyFileError(str(target), f"cannot create its directory: {reason}") from exc
    try:
        _link_new_file(target, key.to_protobuf())
    except FileExistsError:
        raise KeyFileExists(
            str(target), "a key file already exists; refusing to overwrite it"
        ) from None
    except OSError as exc:
        raise KeyFileError(str(target), f"cannot create key file: {exc.strerror or exc}") from exc
    return key


def _link_new_file(target: Path, data: bytes) -> None:
    staging = tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)
    tmp = Path(staging) / "key"
    try:
        atomic_write(tmp, data, mode=KEY_FILE_MODE)
        os.link(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        os.rmdir(staging)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
