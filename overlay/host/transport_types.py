"""The slice of the transports the host uses, as Protocols.

``overlay.transport.QuicEndpoint``/``QuicConn`` satisfy ``Endpoint`` and
``Connection``; ``overlay.host.muxed.MuxedConnection`` (a Noise + yamux
upgraded byte stream, e.g. a relayed circuit) satisfies ``Connection`` too.
A ``Transport`` is what the host dials and listens through, in the spirit
of go-libp2p's ``CanDial(ma)`` / ``Dial(ma, peer)`` / ``Listen(ma)``: the
host keeps a list and dials through the first one that can.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Literal, Protocol

from multiaddr import Multiaddr

from overlay.errors import ConnectionClosed
from overlay.identity import PeerId
from overlay.limits import LimitHits
from overlay.wire.stream import ByteStream

__all__ = [
    "DIRECT",
    "RELAYED",
    "Connection",
    "ConnectionLimit",
    "ConnectionOwner",
    "Endpoint",
    "Path",
    "Transport",
]

Path = Literal["direct", "relayed"]
DIRECT: Final[Path] = "direct"
RELAYED: Final[Path] = "relayed"


class ConnectionLimit(Protocol):
    """Limits a relay put on a connection (``overlay.relay.CircuitLimit`` fits)."""

    @property
    def duration(self) -> float | None:
        """Seconds the connection may stay open; None: no time limit."""
        ...

    @property
    def data(self) -> int | None:
        """Bytes it may carry each way; None: no data limit."""
        ...


class Connection(Protocol):
    @property
    def remote_peer(self) -> PeerId: ...

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The remote IP and port of a direct connection; None when relayed
        (the peer's own address is then unknown)."""
        ...

    @property
    def remote_multiaddr(self) -> Multiaddr:
        """Where the connection leads, without ``/p2p/<remote_peer>``: a QUIC
        address, or ``…/p2p/<relay>/p2p-circuit`` for a relayed one."""
        ...

    @property
    def path(self) -> Path:
        """``"direct"`` or ``"relayed"``."""
        ...

    @property
    def limit(self) -> ConnectionLimit | None:
        """The relay's limits; None for direct (and unlimited) connections."""
        ...

    @property
    def is_initiator(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def close_reason(self) -> ConnectionClosed | None: ...

    @property
    def smoothed_rtt(self) -> float | None: ...

    async def open_stream(self) -> ByteStream: ...

    async def accept_stream(self) -> ByteStream: ...

    def close(self, code: int = 0, reason: str = "", /) -> None: ...

    async def wait_closed(self) -> None: ...


class Endpoint(Protocol):
    """One QUIC socket (the QUIC transport's unit)."""

    @property
    def local_address(self) -> tuple[str, int]: ...

    @property
    def limit_hits(self) -> LimitHits:
        """Inbound handshakes answered by Retry, dropped or refused, by cause."""
        ...

    async def dial(
        self, address: tuple[str, int], expected_peer: PeerId | None, /
    ) -> Connection: ...

    async def accept(self) -> Connection: ...

    async def aclose(self) -> None: ...

    def abort_for_test(self) -> None: ...


class ConnectionOwner(Protocol):
    """What a transport needs from the host that owns it."""

    def adopt(self, conn: Connection) -> None:
        """Track and serve an inbound connection; raises ``LimitExceeded``
        (after closing it) beyond the caps."""
        ...

    def spawn(self, factory: Callable[[], Coroutine[Any, Any, object]], what: str) -> None:
        """Run ``factory()`` under the host's supervisor (a zero-argument
        coroutine function, so a job cancelled before it runs leaves no
        un-awaited coroutine)."""
        ...


class Transport(Protocol):
    """A way to reach peers, keyed by multiaddr."""

    @property
    def path(self) -> Path:
        """What its connections are: ``"direct"`` or ``"relayed"``."""
        ...

    def can_dial(self, addr: Multiaddr) -> bool:
        """True if ``addr`` (with or without a trailing ``/p2p``) is this
        transport's; says nothing about reachability."""
        ...

    async def dial(self, addr: Multiaddr, peer: PeerId | None) -> Connection:
        """Connect to ``addr`` (its trailing ``/p2p`` removed; ``peer`` is
        the expected peer, if known).  The host adopts what it returns."""
        ...

    def can_listen(self, addr: Multiaddr) -> bool: ...

    async def listen(self, addrs: Sequence[Multiaddr]) -> None:
        """Start accepting on ``addrs`` (all of this transport's); inbound
        connections go to the owner's ``adopt``."""
        ...

    def listen_addrs(self) -> list[Multiaddr]:
        """Dialable addresses of what it listens on, without ``/p2p``."""
        ...

    async def aclose(self) -> None:
        """Stop listening; the host has already closed the connections."""
        ...

    def abort_for_test(self) -> None:
        """Vanish without telling anyone, as a crashed process would."""
        ...
