"""Notifications the host sends about peers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from overlay.errors import ConnectionClosed
from overlay.host.identify import IdentifyInfo
from overlay.host.transport_types import Connection
from overlay.identity import PeerId

__all__ = ["HostListener"]


@dataclass(frozen=True, slots=True, eq=False)
class HostListener:
    """Callbacks run synchronously inside the host; they must not block.

    ``connected`` fires for a peer's first live connection, ``disconnected``
    when its last one closed, ``identified`` after each identify or push.
    ``closed`` fires with ``disconnected`` and carries why the last
    connection ended (``None`` if the transport does not say): a
    ``overlay.transport.errors.ClosedWithCode`` whose ``going_away`` is true
    means the peer shut down on purpose and will not answer any more.
    ``opened`` fires for every connection the host adopts (the identify
    service asks each one), ``changed`` when our protocols or advertised
    addresses changed (the identify service pushes them).
    """

    connected: Callable[[PeerId, Connection], None] | None = None
    disconnected: Callable[[PeerId], None] | None = None
    identified: Callable[[PeerId, IdentifyInfo], None] | None = None
    closed: Callable[[PeerId, ConnectionClosed | None], None] | None = None
    opened: Callable[[Connection], None] | None = None
    changed: Callable[[], None] | None = None
