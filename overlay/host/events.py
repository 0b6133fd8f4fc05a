"""Notifications the host sends about peers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from overlay.host.identify import IdentifyInfo
from overlay.host.transport_types import Connection
from overlay.identity import PeerId

__all__ = ["HostListener"]


@dataclass(frozen=True, slots=True, eq=False)
class HostListener:
    """Callbacks run synchronously inside the host; they must not block.

    ``connected`` fires for a peer's first live connection, ``disconnected``
    when its last one closed, ``identified`` after each identify or push.
    """

    connected: Callable[[PeerId, Connection], None] | None = None
    disconnected: Callable[[PeerId], None] | None = None
    identified: Callable[[PeerId, IdentifyInfo], None] | None = None
