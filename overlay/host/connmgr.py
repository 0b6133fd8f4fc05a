"""Connection bookkeeping: reuse, limits and merged dials; inbound stream
caps per peer, source and protocol (``InboundStreams``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from overlay.errors import LimitExceeded
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.limits import ScopedCounter
from overlay.supervisor import Supervisor

__all__ = ["ConnectionManager", "InboundStreams", "StreamSlot"]


class ConnectionManager:
    """Live connections per peer, capped in total and per peer.

    ``add`` refuses a connection beyond a cap (the caller closes it: the
    newest loses, so established sessions survive a connection flood).
    ``dial`` merges concurrent dials with the same key into one attempt.
    """

    def __init__(self, max_connections: int, max_per_peer: int) -> None:
        if min(max_connections, max_per_peer) < 1:
            raise ValueError("connection limits must be positive")
        self._max_total = max_connections
        self._max_per_peer = max_per_peer
        self._by_peer: dict[PeerId, list[Connection]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def connections(self) -> list[Connection]:
        return [conn for conns in self._by_peer.values() for conn in conns]

    def peers(self) -> list[PeerId]:
        return list(self._by_peer)

    def get(self, peer_id: PeerId) -> Connection | None:
        """The connection new streams to ``peer_id`` use: the oldest live
        direct one, else the oldest live relayed one (a relayed connection
        is never chosen over a live direct one).  Prunes closed ones."""
        conns = self._by_peer.get(peer_id)
        if not conns:
            return None
        fallback: Connection | None = None
        for conn in list(conns):
            if conn.is_closed:
                self.remove(conn)
            elif conn.path == "direct":
                return conn
            elif fallback is None:
                fallback = conn
        return fallback

    def has_room(self, peer_id: PeerId | None, path: str = "direct") -> bool:
        """Room for one more connection to ``peer_id`` on ``path``.  The cap
        per peer counts direct and relayed connections apart: a hole punch
        dials both ways at once while the relayed connection still lives,
        and neither direct result may be refused for the relayed one."""
        if self._count >= self._max_total:
            return False
        if peer_id is None:
            return True
        same = sum(1 for conn in self._by_peer.get(peer_id, ()) if conn.path == path)
        return same < self._max_per_peer

    def check_room(self, peer_id: PeerId | None, path: str = "direct") -> None:
        """Raise ``LimitExceeded`` if a new connection to ``peer_id`` would be refused."""
        if not self.has_room(peer_id, path):
            raise LimitExceeded(
                f"connection limit reached ({self._count}/{self._max_total} total, "
                f"{self._max_per_peer} per peer)"
            )

    def add(self, conn: Connection) -> bool:
        """Track ``conn``; False if a cap refuses it (the caller closes it)."""
        peer = conn.remote_peer
        if peer in self._by_peer:
            self.get(peer)  # prune closed ones before counting
        if not self.has_room(peer, conn.path):
            return False
        self._by_peer.setdefault(peer, []).append(conn)
        self._count += 1
        return True

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; True if that was the peer's last connection."""
        conns = self._by_peer.get(conn.remote_peer)
        if not conns or conn not in conns:
            return False
        conns.remove(conn)
        self._count -= 1
        if conns:
            return False
        del self._by_peer[conn.remote_peer]
        return True

    async def dial(
        self, key: Hashable, attempt: Callable[[], Coroutine[Any, Any, Connection]],
        sup: Supervisor,
    ) -> Connection:
        """Run ``attempt`` unless a dial with ``key`` is in flight; then share it.

        The dial is a task of ``sup`` that every caller awaits through
        ``shield``: a caller that is cancelled costs only itself, the others
        still get the connection or the dial's error.  A dial whose callers
        all left still completes, since the connection serves the next one
        (and the dial is bounded by the host's dial timeout)."""
        return await sup.shared(("dial", key), attempt)


class StreamSlot:
    """What one admitted inbound stream holds; ``InboundStreams.release``
    gives it back (once, however often it is called)."""

    __slots__ = ("peer", "source", "protocol", "released")

    def __init__(self, peer: PeerId, source: str | None) -> None:
        self.peer = peer
        self.source = source
        self.protocol: str | None = None
        self.released = False


class InboundStreams:
    """Inbound streams open at once, counted in several scopes (STYLE rule
    17, as go-libp2p's resource manager): in total, per source (IP prefix;
    None = exempt), per peer across all its connections, and, once
    negotiated, per protocol.  A stream is admitted only when every scope
    has room; the refusal names the scope that had none, as a ``LimitHits``
    cause.  Pure: no I/O, no clock."""

    __slots__ = ("_total", "_max_total", "_per_source", "_per_peer", "_per_protocol")

    def __init__(self, total: int, per_source: int, per_peer: int, per_protocol: int) -> None:
        if min(total, per_source, per_peer, per_protocol) < 1:
            raise ValueError("stream limits must be at least 1")
        self._total = 0
        self._max_total = total
        self._per_source = ScopedCounter(per_source)
        self._per_peer = ScopedCounter(per_peer)
        self._per_protocol = ScopedCounter(per_protocol)

    def __len__(self) -> int:
        return self._total

    def held_by(self, peer: PeerId) -> int:
        return self._per_peer.held(peer)

    def held_from(self, source: str) -> int:
        return self._per_source.held(source)

    def held_for(self, protocol: str) -> int:
        return self._per_protocol.held(protocol)

    def admit(self, peer: PeerId, source: str | None) -> StreamSlot | str:
        """A slot for a new inbound stream, or the cause of its refusal
        (``host.streams_total``, ``…_per_source``, ``…_per_peer``)."""
        if self._total >= self._max_total:
            return "host.streams_total"
        if source is not None and not self._per_source.has_room(source):
            return "host.streams_per_source"
        if not self._per_peer.has_room(peer):
            return "host.streams_per_peer"
        self._total += 1
        if source is not None:
            self._per_source.acquire(source)
        self._per_peer.acquire(peer)
        return StreamSlot(peer, source)

    def negotiated(self, slot: StreamSlot, protocol: str) -> str | None:
        """Count ``slot`` under ``protocol`` now that it is negotiated; the
        cause of refusal (``host.streams_per_protocol``) if that scope is full."""
        if slot.released or slot.protocol is not None:
            raise ValueError("a slot is negotiated once, before it is released")
        if not self._per_protocol.acquire(protocol):
            return "host.streams_per_protocol"
        slot.protocol = protocol
        return None

    def release(self, slot: StreamSlot) -> None:
        if slot.released:
            return
        slot.released = True
        self._total -= 1
        if slot.source is not None:
            self._per_source.release(slot.source)
        self._per_peer.release(slot.peer)
        if slot.protocol is not None:
            self._per_protocol.release(slot.protocol)
