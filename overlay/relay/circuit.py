"""The hand-off between the relay client and the circuit transport.

A ``Circuit`` is what remains of a hop CONNECT (dialer side) or a stop
CONNECT (listener side) once the relay has answered OK: a raw byte stream
to the peer at the other end, plus who relays it and under which limits.
The circuit transport upgrades ``stream`` (Noise, then yamux) exactly as it
would a TCP socket; this module knows nothing about that.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.wire.stream import ByteStream

__all__ = ["Circuit", "CircuitLimit"]


@dataclass(frozen=True, slots=True)
class CircuitLimit:
    """The relay's limits on one relayed connection (``None``: unlimited)."""

    duration: float | None
    """Seconds the relay keeps the circuit open."""
    data: int | None
    """Bytes the relay forwards in each direction before it resets."""


@dataclass(frozen=True, slots=True)
class Circuit:
    """A relayed byte stream to ``remote`` through ``relay``."""

    stream: ByteStream
    """Raw bytes to and from the other end, after the hop/stop exchange."""
    relay: PeerId
    remote: PeerId
    limit: CircuitLimit | None
    """What the relay announced; ``None`` when it announced nothing."""
    initiator: bool
    """True on the side that sent the hop CONNECT."""
