"""Moves virtual-IP packets between the TUN device and peers.

A packet goes in one QUIC DATAGRAM frame on the peer's connection when the
connection carries datagrams and the packet fits; otherwise (a relayed
connection, a peer without datagram support, a packet above the datagram
size, or no connection yet) on the peer's ``/ovl/ip/1.0.0`` stream:
uvarint-length-prefixed packets, one stream per direction, opened on demand
(dialing the peer by its ID, through the DHT if the peerstore has no
address) and closed after ``idle_timeout`` without packets.

A peer may hold two direct connections to us (a hole punch's dials from
both sides, or one of ours it adopted that we never did), and each side's
host picks its own for new streams, so the two choices can differ.  One
of them may be dead at the far end while QUIC still acknowledges it (a
connection the peer's host never adopted has no datagram handler, and
drops what arrives).  So a datagram goes on the connection the peer's
latest datagram came in on, which it is using now, while that connection
is open; only without one does the host's choice decide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from multiaddr import Multiaddr

from overlay.errors import OverlayError
from overlay.host.events import HostListener
from overlay.host.host import Host
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.supervisor import Supervisor
from overlay.transport.connection import QuicConn
from overlay.vip.addressing import MAX_PACKET
from overlay.vip.errors import AllocatorFull, BadPacket, ForgedSource
from overlay.vip.router import Drop, Forward, VipRouter
from overlay.wire.varint import frame, read_frame

__all__ = ["IP_PROTOCOL", "VipService", "VipServiceConfig", "PacketSink"]

log = logging.getLogger(__name__)

IP_PROTOCOL = "/ovl/ip/1.0.0"


class PacketSink(Protocol):
    """Where packets for this node go (the TUN device)."""

    def write(self, packet: bytes) -> None: ...


FindPeer = Callable[[PeerId], Awaitable[list[Multiaddr]]]


@dataclass(frozen=True, slots=True)
class VipServiceConfig:
    """Queues and timers of the packet forwarding."""

    stream_queue: int = 256
    """Packets waiting for one peer's stream (or its dial); beyond it new
    packets are dropped, as a router's full queue does."""

    idle_timeout: float = 30.0
    """Seconds without packets after which a peer's outgoing stream closes."""

    dial_timeout: float = 15.0
    """Seconds to reach a peer (DHT lookup and dial) before its queued
    packets are dropped."""

    max_links: int = 1024
    """Peers with an outgoing stream (or a dial towards them) at once."""

    def __post_init__(self) -> None:
        if self.stream_queue < 1 or self.max_links < 1:
            raise ValueError("stream_queue and max_links must be positive")
        if not (self.idle_timeout > 0 and self.dial_timeout > 0):
            raise ValueError("idle_timeout and dial_timeout must be positive")


class _Link:
    """Packets waiting for one peer's stream."""

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.ready = asyncio.Event()


class VipService:
    """``async with VipService(host, router, sink)``; feed it the TUN
    device's packets with ``from_tun``."""

    def __init__(self, host: Host, router: VipRouter, sink: PacketSink, *,
                 config: VipServiceConfig | None = None, find_peer: FindPeer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.router = router
        self.sink = sink
        self.config = config or VipServiceConfig()
        self._find_peer = find_peer
        self._clock = clock
        self._links: dict[PeerId, _Link] = {}
        self._heard_on: dict[PeerId, QuicConn] = {}
        """The connection each peer's latest datagram arrived on."""
        self._next_peerstore_scan = float("-inf")
        self._sup = Supervisor("virtual IP", log)
        self._listener = HostListener(opened=self._on_opened, connected=self._on_connected,
                                      disconnected=self._on_disconnected)
        self.counts: Counter[str] = Counter()
        """Packets by path: ``datagram_out``, ``stream_out``, ``datagram_in``,
        ``stream_in``, ``delivered`` and drops (``dropped_…``)."""
        self.byte_counts: Counter[str] = Counter()
        """Bytes of IP packets: ``out`` (sent to peers by either path) and
        ``in`` (delivered to the interface)."""

    async def __aenter__(self) -> VipService:
        await self._sup.__aenter__()
        self.host.set_stream_handler(IP_PROTOCOL, self._handle_stream)
        self.host.add_listener(self._listener)
        for conn in self.host.connections():
            self._on_opened(conn)
            self.router.learn(conn.remote_peer)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.host.remove_listener(self._listener)
        self.host.remove_stream_handler(IP_PROTOCOL)
        for conn in self.host.connections():
            if isinstance(conn, QuicConn):
                conn.datagram_handler = None
        await self._sup.aclose()
        self._links.clear()
        self._heard_on.clear()

    # -- from the TUN device ---------------------------------------------------

    def from_tun(self, packet: bytes) -> None:
        now = self._clock()
        decision = self.router.outbound(packet, now)
        if (isinstance(decision, Drop) and decision.reason == "unknown vip6"
                and now >= self._next_peerstore_scan):
            # A vip6 computed elsewhere: perhaps a peer the peerstore knows
            # (the DHT's contacts).  At most one scan a second.
            self._next_peerstore_scan = now + 1.0
            for peer in self.host.peerstore.peers():
                self.router.learn(peer)
            decision = self.router.outbound(packet, now)
        if isinstance(decision, Forward):
            self.send(decision.peer, decision.packet)

    def _datagram_conn(self, peer: PeerId) -> Connection | None:
        """The connection a datagram to ``peer`` goes on (module doc)."""
        heard = self._heard_on.get(peer)
        if heard is not None:
            if not heard.is_closed and heard.datagram_capacity:
                return heard
            del self._heard_on[peer]
        return self.host.best_connection(peer)

    def send(self, peer: PeerId, packet: bytes) -> None:
        """Send a wire-form packet to ``peer`` by the best path."""
        conn = self._datagram_conn(peer)
        if (isinstance(conn, QuicConn) and not conn.is_closed
                and len(packet) <= conn.datagram_capacity):
            if conn.send_datagram(packet):
                self.counts["datagram_out"] += 1
                self.byte_counts["out"] += len(packet)
            else:
                self.counts["dropped_datagram_queue"] += 1
            return
        link = self._links.get(peer)
        if link is None:
            if len(self._links) >= self.config.max_links:
                self.counts["dropped_links_full"] += 1
                return
            link = _Link()
            self._links[peer] = link
            self._sup.spawn(partial(self._run_link, peer, link), f"vip stream to {peer}")
        if len(link.queue) >= self.config.stream_queue:
            self.counts["dropped_stream_queue"] += 1
            return
        link.queue.append(packet)
        link.ready.set()

    async def _run_link(self, peer: PeerId, link: _Link) -> None:
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                stream = await self._open(peer)
        except (OverlayError, OSError, TimeoutError) as exc:
            log.debug("no virtual-IP stream to %s: %r", peer, exc)
            self.counts["dropped_unreachable"] += len(link.queue)
            self._links.pop(peer, None)
            return
        try:
            while True:
                while link.queue:
                    packet = link.queue.popleft()
                    stream.write(frame(packet))
                    self.counts["stream_out"] += 1
                    self.byte_counts["out"] += len(packet)
                await stream.drain()
                link.ready.clear()
                if link.queue:
                    continue
                try:
                    async with asyncio.timeout(self.config.idle_timeout):
                        await link.ready.wait()
                except TimeoutError:
                    # Gone before the close yields: new packets start a new link.
                    if self._links.get(peer) is link:
                        del self._links[peer]
                    break
        except (OverlayError, OSError) as exc:
            log.debug("virtual-IP stream to %s failed: %r", peer, exc)
            self.counts["dropped_stream_error"] += len(link.queue)
            stream.reset()
        else:
            await stream.close()
        finally:
            if self._links.get(peer) is link:
                del self._links[peer]
            # Packets queued after the last write (the loop ended on an
            # error) are not stranded: a new link takes the next ones.

    async def _open(self, peer: PeerId) -> NegotiatedStream:
        try:
            return await self.host.new_stream(peer, [IP_PROTOCOL])
        except OverlayError:
            if self._find_peer is None:
                raise
        addrs = await self._find_peer(peer)
        self.host.peerstore.add_addrs(peer, addrs)
        return await self.host.new_stream(peer, [IP_PROTOCOL])

    # -- from peers ------------------------------------------------------------

    def _on_connected(self, peer: PeerId, conn: Connection) -> None:
        self.router.learn(peer)

    def _on_disconnected(self, peer: PeerId) -> None:
        self._heard_on.pop(peer, None)

    def _on_opened(self, conn: Connection) -> None:
        if isinstance(conn, QuicConn):
            conn.datagram_handler = partial(self._on_datagram, conn)

    def _on_datagram(self, conn: QuicConn, data: bytes) -> None:
        self.counts["datagram_in"] += 1
        self._heard_on[conn.remote_peer] = conn
        self.deliver(conn.remote_peer, data)

    async def _handle_stream(self, stream: NegotiatedStream) -> None:
        peer = stream.remote_peer
        try:
            while (packet := await read_frame(stream, MAX_PACKET)) is not None:
                self.counts["stream_in"] += 1
                self.deliver(peer, packet)
        except (OverlayError, OSError) as exc:
            log.debug("virtual-IP stream from %s failed: %r", peer, exc)
            stream.reset()

    def deliver(self, peer: PeerId, packet: bytes) -> None:
        """A wire-form packet from ``peer``: checked, translated, written."""
        try:
            out = self.router.inbound(peer, packet, self._clock())
        except (BadPacket, ForgedSource, AllocatorFull) as exc:
            self.counts["dropped_inbound"] += 1
            log.debug("dropped a packet from %s: %s", peer, exc)
            return
        self.counts["delivered"] += 1
        self.byte_counts["in"] += len(out)
        self.sink.write(out)

    def path_to(self, peer: PeerId) -> str:
        """How a packet to ``peer`` would go now: ``datagram`` (a QUIC
        connection that carries datagrams), ``stream`` (a relayed connection,
        a peer without datagrams, or a stream being opened) or ``none`` (no
        connection: the next packet dials)."""
        conn = self._datagram_conn(peer)
        if isinstance(conn, QuicConn) and not conn.is_closed and conn.datagram_capacity:
            return "datagram"
        if (conn is not None and not conn.is_closed) or peer in self._links:
            return "stream"
        return "none"
