"""`overlay init`: create the host key and config in a data directory.

The key is a node's identity and cannot be recovered, so it is never
replaced: an initialized directory is reported as such, and a key file that
exists but cannot be loaded is an error that leaves the file alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.daemon.config import DaemonConfig, save_config
from overlay.daemon.errors import IdentityError
from overlay.daemon.home import Home
from overlay.identity import PeerId, PrivateKey
from overlay.identity.errors import KeyFileError, KeyFileExists, KeyFileMissing
from overlay.identity.keyfile import create_private_key_file, load_private_key

__all__ = ["InitResult", "init_home", "load_identity"]


@dataclass(frozen=True, slots=True)
class InitResult:
    peer_id: PeerId
    key: PrivateKey
    created_key: bool
    """False when the directory already had a key (which was kept)."""
    created_config: bool


def load_identity(home: Home) -> PrivateKey:
    """Load ``<home>/identity.key``; raise ``IdentityError`` saying what to do."""
    try:
        return load_private_key(home.key_file)
    except KeyFileMissing as exc:
        raise IdentityError(
            f"no identity key at {home.key_file}; run `overlay init` (or `overlay --home DIR init`)"
        ) from exc
    except KeyFileError as exc:
        raise IdentityError(f"{exc}; the file is left untouched") from exc
    except OSError as exc:
        raise IdentityError(f"cannot read {home.key_file}: {exc.strerror}") from exc


def init_home(home: Home, config: DaemonConfig | None = None) -> InitResult:
    """Create the key and config if missing; never overwrite either."""
    try:
        home.ensure()
    except OSError as exc:
        raise IdentityError(f"cannot create the data directory {home.root}: {exc.strerror}") from exc
    try:
        key = create_private_key_file(home.key_file)
        created_key = True
    except KeyFileExists:
        key = load_identity(home)
        created_key = False
    except OSError as exc:
        raise IdentityError(f"cannot create {home.key_file}: {exc.strerror}") from exc
    created_config = False
    if not home.config_file.exists():
        save_config(home.config_file, config or DaemonConfig())
        created_config = True
    return InitResult(PeerId.from_public_key(key.public_key()), key, created_key, created_config)
