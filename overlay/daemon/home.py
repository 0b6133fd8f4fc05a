"""The data directory: where the key, the config and the API socket live.

Chosen by ``--home DIR``, else ``$OVERLAY_HOME``, else ``~/.overlay``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HOME_ENV", "DEFAULT_HOME", "Home", "resolve_home"]

HOME_ENV = "OVERLAY_HOME"
DEFAULT_HOME = "~/.overlay"


@dataclass(frozen=True, slots=True)
class Home:
    """Paths inside one data directory."""

    root: Path
    """The data directory itself (absolute)."""

    @property
    def key_file(self) -> Path:
        """The host key: a libp2p PrivateKey protobuf, mode 0600."""
        return self.root / "identity.key"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def default_api_socket(self) -> Path:
        return self.root / "api.sock"

    def api_socket(self, configured: str = "") -> Path:
        """The API socket: the configured path (relative to the data
        directory) or ``<home>/api.sock``."""
        if not configured:
            return self.default_api_socket
        path = Path(configured).expanduser()
        return path if path.is_absolute() else self.root / path

    def ensure(self) -> None:
        """Create the directory private to its owner (keys and the socket live here)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)


def resolve_home(cli_value: str | None = None, environ: Mapping[str, str] | None = None) -> Home:
    env = os.environ if environ is None else environ
    raw = cli_value or env.get(HOME_ENV) or DEFAULT_HOME
    return Home(Path(raw).expanduser().absolute())
