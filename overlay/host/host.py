"""The host: transports, connections, protocol handlers; ping and identify
run as services beside it (``PingService``, ``IdentifyService``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial
from types import TracebackType

from multiaddr import Multiaddr

from overlay.errors import (
    ConnectionClosed,
    DialError,
    InvalidMultiaddr,
    LimitExceeded,
    LocalProtocolError,
    NegotiationError,
    OverlayError,
    RemoteProtocolError,
    TransportError,
)
from overlay.host.circuit import CircuitTransport
from overlay.host.config import HostConfig
from overlay.host.connmgr import ConnectionManager, InboundStreams, StreamSlot
from overlay.host.events import HostListener
from overlay.host.identify import IdentifyInfo
from overlay.host.identify_service import IdentifyService
from overlay.host.peerstore import ObservedAddrs, Peerstore
from overlay.host.ping import PingService
from overlay.host.quic import EndpointFactory, QuicTransport
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, Connection, Endpoint, Transport
from overlay.identity import PeerId, PrivateKey
from overlay.limits import LimitHits, TokenBucket, source_key
from overlay.multiaddrs import dial_target_error, parse_multiaddr, parse_quic_multiaddr, split_p2p
from overlay.negotiate import encode_message, handle_protocol, select_protocol
from overlay.supervisor import Job, Supervisor, contain
from overlay.transport.errors import GOING_AWAY
from overlay.wire.stream import ByteStream

__all__ = ["Host", "StreamHandler", "EndpointFactory"]

log = logging.getLogger(__name__)

StreamHandler = Callable[[NegotiatedStream], Awaitable[None]]


class Host:
    """A libp2p host.  Use as ``async with Host(key, config) as host``.

    QUIC is its first transport; ``add_transport`` adds others (the
    circuit transport for ``/p2p-circuit`` addresses).  Every accept loop,
    connection and stream handler runs under the host's supervisor and ends
    when the host does; the ping and identify services are entered and
    left with it.
    """

    def __init__(
        self,
        private_key: PrivateKey,
        config: HostConfig | None = None,
        *,
        endpoint_factory: EndpointFactory | None = None,
    ) -> None:
        self.config = config or HostConfig()
        self._key = private_key
        self.peer_id = PeerId.from_public_key(private_key.public_key())
        cfg = self.config
        self.peerstore = Peerstore(
            cfg.max_peerstore_peers, cfg.max_addrs_per_peer, cfg.max_protocols_per_peer
        )
        self.observed_addrs = ObservedAddrs()
        self._conns = ConnectionManager(cfg.max_connections, cfg.max_connections_per_peer)
        self._inbound = InboundStreams(
            cfg.max_inbound_streams,
            cfg.max_inbound_streams_per_source,
            cfg.max_inbound_streams_per_peer,
            cfg.max_inbound_streams_per_protocol,
        )
        self.limit_hits = LimitHits()
        """Inbound streams reset by a cap, by cause (``host.streams_per_peer``…)."""
        self._connected_peers: set[PeerId] = set()
        self._punched: set[Connection] = set()
        self._quic = QuicTransport(self, endpoint_factory or self._create_quic_endpoint)
        self.circuit_transport = CircuitTransport(self, private_key)
        """Dials ``/p2p-circuit`` addresses; a relay client hands it inbound
        circuits (``client.on_circuit = host.circuit_transport.on_circuit``)."""
        self._transports: list[Transport] = [self._quic, self.circuit_transport]
        self._advertised: dict[Multiaddr, None] = {}
        self._withheld: set[Multiaddr] = set()
        self._handlers: dict[str, StreamHandler] = {}
        self._listeners: list[HostListener] = []
        self._sup = Supervisor("host", log)
        self._started = False
        self._closing = False
        self.ping_service = PingService(
            self,
            timeout=cfg.ping_timeout,
            idle_timeout=cfg.ping_idle_timeout,
            max_inbound_streams=cfg.ping_max_inbound_streams,
        )
        self.identify_service = IdentifyService(self, private_key, cfg)

    # -- lifetime ---------------------------------------------------------

    async def __aenter__(self) -> Host:
        if self._started or self._closing:
            raise LocalProtocolError("a host can be started once")
        self._started = True
        await self._sup.__aenter__()
        await self.ping_service.__aenter__()
        await self.identify_service.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closing = True
        conns = self.connections()
        started = time.monotonic()
        for conn in conns:
            conn.close(GOING_AWAY, "host shutting down")
        await self.identify_service.__aexit__(None, None, None)
        await self.ping_service.__aexit__(None, None, None)
        for transport in reversed(self._transports):
            try:
                await transport.aclose()
            except (OverlayError, OSError) as err:
                log.debug("closing transport: %s", err)
        if not self._started:
            raise LocalProtocolError("the host was not started")
        await self._sup.aclose()
        if conns:
            log.info(
                "host stopped: told %d peer(s) over %d connection(s) that we are going away, in %.3f s",
                len({conn.remote_peer for conn in conns}), len(conns), time.monotonic() - started,
            )
        return None

    def abort_for_test(self) -> None:
        """Crash: every transport drops its sockets and connections without
        sending anything, as a killed process would.  Peers learn of it
        only from silence (or ICMP).  Leave the ``async with`` afterwards."""
        self._closing = True
        for transport in self._transports:
            transport.abort_for_test()

    @property
    def is_running(self) -> bool:
        return self._sup.running and not self._closing

    def _require_running(self) -> None:
        if not self.is_running:
            raise LocalProtocolError("the host is not running (use `async with host:`)")

    def spawn(self, factory: Job, what: str) -> None:
        """Run ``factory()`` under the host's supervisor (transports' accept
        loops and connection lifetimes run here): a failure ends that job only."""
        if not self.is_running:
            raise LocalProtocolError("the host is not running (use `async with host:`)")
        self._sup.spawn(factory, what)

    # -- transports and addresses ---------------------------------------------

    async def _create_quic_endpoint(self, host: str, port: int) -> Endpoint:
        from overlay.transport import QuicEndpoint, TransportConfig

        config = self.config.transport or TransportConfig()
        endpoint: Endpoint = await QuicEndpoint.create(host, port, self._key, config)
        return endpoint

    def add_transport(self, transport: Transport) -> None:
        """Dial (and listen) through ``transport`` too; QUIC stays first."""
        if any(t is transport for t in self._transports):
            raise LocalProtocolError("this transport is already added")
        self._transports.append(transport)

    def remove_transport(self, transport: Transport) -> None:
        if transport is self._quic or transport is self.circuit_transport:
            raise LocalProtocolError("the built-in transports cannot be removed")
        self._transports = [t for t in self._transports if t is not transport]

    def transports(self) -> list[Transport]:
        return list(self._transports)

    def can_dial(self, addr: str | Multiaddr) -> bool:
        """True if some transport takes ``addr`` (with or without ``/p2p``)."""
        try:
            self._route(addr)
        except InvalidMultiaddr:
            return False
        return True

    def _route(self, addr: str | Multiaddr) -> tuple[Transport, Multiaddr, PeerId | None]:
        """The transport for ``addr``, the address without its trailing
        ``/p2p``, and that peer.  Raises ``InvalidMultiaddr``."""
        parsed = parse_multiaddr(addr)
        bare, peer = split_p2p(parsed)
        if bare.to_bytes():
            for transport in self._transports:
                if transport.can_dial(bare):
                    return transport, bare, peer
        # Name the part that is wrong when the address is almost a known shape.
        raise InvalidMultiaddr(dial_target_error(str(parsed)) or f"no transport can dial {parsed}")

    async def listen(self, multiaddrs: Sequence[str | Multiaddr]) -> None:
        """Listen on each address through its transport (port 0 picks a free port)."""
        self._require_running()
        groups: dict[int, tuple[Transport, list[Multiaddr]]] = {}
        for text in multiaddrs:
            addr = parse_multiaddr(text)
            transport = next((t for t in self._transports if t.can_listen(addr)), None)
            if transport is None:
                parse_quic_multiaddr(addr)  # raises, naming the part that is wrong
                raise InvalidMultiaddr(f"no transport can listen on {addr}")
            groups.setdefault(id(transport), (transport, []))[1].append(addr)
        for transport, addrs in groups.values():
            await transport.listen(addrs)
        self._changed()

    def endpoints(self) -> list[Endpoint]:
        """The live QUIC endpoints (listening ones first); NAT traversal uses their sockets."""
        return self._quic.endpoints()

    def listen_addrs(self) -> list[Multiaddr]:
        """Dialable addresses of what we listen on, with real ports, without ``/p2p``."""
        out: dict[Multiaddr, None] = {}
        for transport in self._transports:
            out.update(dict.fromkeys(transport.listen_addrs()))
        return list(out)

    def advertised_addrs(self) -> list[Multiaddr]:
        """``listen_addrs`` plus what services added (``/p2p-circuit`` addresses
        at relays holding a reservation for us): identify and our signed peer
        record carry these."""
        out = dict.fromkeys(self.listen_addrs())
        out.update(self._advertised)
        return [addr for addr in out if addr not in self._withheld]

    def withhold_advertised_addrs(self, addrs: Sequence[str | Multiaddr]) -> None:
        """Never advertise ``addrs``, listen addresses included, until
        released: AutoNAT found them unreachable, and peers dialling them
        would only time out."""
        new = {parse_multiaddr(addr) for addr in addrs} - self._withheld
        if new:
            self._withheld |= new
            self._changed()

    def release_advertised_addrs(self, addrs: Sequence[str | Multiaddr]) -> None:
        gone = {parse_multiaddr(addr) for addr in addrs} & self._withheld
        if gone:
            self._withheld -= gone
            self._changed()

    def add_advertised_addrs(self, addrs: Sequence[str | Multiaddr]) -> None:
        """Advertise ``addrs`` (without our ``/p2p``) until removed; connected
        peers get an identify push."""
        new = [parse_multiaddr(addr) for addr in addrs]
        fresh = [addr for addr in new if addr not in self._advertised]
        if fresh:
            self._advertised.update(dict.fromkeys(fresh))
            self._changed()

    def remove_advertised_addrs(self, addrs: Sequence[str | Multiaddr]) -> None:
        gone = [addr for addr in map(parse_multiaddr, addrs) if addr in self._advertised]
        for addr in gone:
            del self._advertised[addr]
        if gone:
            self._changed()

    def _changed(self) -> None:
        if self.is_running:
            self._notify(lambda lis: lis.changed and lis.changed())

    # -- connections -----------------------------------------------------------

    def adopt(self, conn: Connection) -> None:
        """Track and serve a new connection, or close it beyond the caps
        (raising ``LimitExceeded``).  Transports hand inbound connections here."""
        if self._closing or not self._conns.add(conn):
            conn.close(0, "connection limit")
            raise LimitExceeded(f"connection to {conn.remote_peer} refused by the limits")
        self.spawn(partial(self._serve_connection, conn), f"connection {conn.remote_peer}")

    async def _serve_connection(self, conn: Connection) -> None:
        peer = conn.remote_peer
        source = self._stream_source(conn)
        cfg = self.config
        refusals = TokenBucket(cfg.refused_streams_rate, cfg.refused_streams_burst,
                               cfg.refused_streams_burst, time.monotonic())
        try:
            if peer not in self._connected_peers:
                self._connected_peers.add(peer)
                self._notify(lambda lis: lis.connected and lis.connected(peer, conn))
            self._notify(lambda lis: lis.opened and lis.opened(conn))
            while True:
                try:
                    stream = await conn.accept_stream()
                except TransportError:
                    return
                slot = self._inbound.admit(peer, source)
                if isinstance(slot, str):
                    # Refused before any task or negotiation buffer exists;
                    # the reset finishes the stream, so QUIC frees it and
                    # gives the peer its stream credit back.
                    stream.reset()
                    self._refused(slot, peer, source)
                    if not refusals.take(time.monotonic()):
                        self._refused("host.refused_streams", peer, source)
                        conn.close(0, "too many refused streams")
                        return
                    continue
                try:
                    self.spawn(partial(self._handle_inbound, conn, stream, slot),
                               f"stream from {peer}")
                except LocalProtocolError:
                    self._inbound.release(slot)
                    stream.reset()
                    return
        finally:
            conn.close(0, "")
            self._conns.remove(conn)
            self._punched.discard(conn)
            # get() also prunes closed connections, so ask it rather than
            # trusting remove()'s answer.
            if self._conns.get(peer) is None and peer in self._connected_peers:
                self._connected_peers.discard(peer)
                reason = conn.close_reason
                self._notify(lambda lis: lis.disconnected and lis.disconnected(peer))
                self._notify(lambda lis: lis.closed and lis.closed(peer, reason))

    def _stream_source(self, conn: Connection) -> str | None:
        """The source scope of ``conn``'s inbound streams: its IP prefix,
        its relay for a relayed one, None (exempt) on our own address."""
        address = conn.remote_address
        if address is None:
            return "relay:" + str(conn.remote_multiaddr).split("/p2p-circuit", 1)[0]
        ip = str(address[0])
        own: set[str] = set()
        for endpoint in self.endpoints():
            local = endpoint.local_address[0]
            own.add(local)
            if local in ("0.0.0.0", "::"):
                own.update(("127.0.0.1", "::1"))
        return None if ip in own else source_key(ip)

    def _refused(self, cause: str, peer: PeerId, source: str | None) -> None:
        reported = self.limit_hits.hit(cause, time.monotonic())
        if reported:
            log.warning(
                "resetting inbound streams (%s): %d since the last report; latest from %s (%s)",
                cause, reported, peer, source or "own address",
            )

    @property
    def inbound_streams(self) -> int:
        """Inbound streams open now (in negotiation or served)."""
        return len(self._inbound)

    def disconnect(self, peer_id: PeerId) -> None:
        """Close every connection to ``peer_id``."""
        for conn in self._conns.connections():
            if conn.remote_peer == peer_id:
                conn.close(0, "disconnect")

    def connections(self) -> list[Connection]:
        return [conn for conn in self._conns.connections() if not conn.is_closed]

    def peers(self) -> list[PeerId]:
        return [peer for peer in self._conns.peers() if self._conns.get(peer) is not None]

    def mark_punched(self, conn: Connection) -> None:
        """Record that ``conn`` is a direct connection hole punching made
        (DCUtR); ``is_punched`` reports it for as long as it lives."""
        if not conn.is_closed:
            self._punched.add(conn)

    def is_punched(self, conn: Connection) -> bool:
        return conn in self._punched

    def best_connection(self, peer_id: PeerId) -> Connection | None:
        """The live connection new streams to ``peer_id`` use: a direct one
        whenever there is one, else a relayed one."""
        return self._conns.get(peer_id)

    # -- listeners -----------------------------------------------------------

    def add_listener(self, listener: HostListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: HostListener) -> None:
        self._listeners = [lis for lis in self._listeners if lis is not listener]

    def _notify(self, call: Callable[[HostListener], object]) -> None:
        for listener in list(self._listeners):
            # A listener's bug must not end the connection.
            contain(partial(call, listener), lambda exc: log.error("host listener failed", exc_info=exc))

    def emit_identified(self, peer: PeerId, info: IdentifyInfo) -> None:
        """Tell the listeners what ``peer`` said about itself (the identify
        service calls this)."""
        self._notify(lambda lis: lis.identified and lis.identified(peer, info))

    # -- handlers ------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        encode_message(protocol)  # refuses IDs that cannot be negotiated
        self._handlers[protocol] = handler
        self._changed()

    def remove_stream_handler(self, protocol: str) -> None:
        if self._handlers.pop(protocol, None) is not None:
            self._changed()

    def protocols(self) -> list[str]:
        return sorted(self._handlers)

    async def _handle_inbound(self, conn: Connection, stream: ByteStream, slot: StreamSlot) -> None:
        try:
            await self._negotiate_and_serve(conn, stream, slot)
        finally:
            self._inbound.release(slot)

    async def _negotiate_and_serve(
        self, conn: Connection, stream: ByteStream, slot: StreamSlot
    ) -> None:
        try:
            async with asyncio.timeout(self.config.negotiate_timeout):
                protocol = await handle_protocol(stream, self._handlers.__contains__)
        except (OverlayError, TimeoutError) as exc:
            stream.reset()
            log.debug("negotiation with %s failed: %r", conn.remote_peer, exc)
            return
        handler = self._handlers.get(protocol)
        if handler is None:
            stream.reset()
            return
        cause = self._inbound.negotiated(slot, protocol)
        if cause is not None:
            stream.reset()
            self._refused(cause, conn.remote_peer, slot.source)
            return
        completed = False
        try:
            await handler(NegotiatedStream(stream, protocol, conn))
            completed = True
        finally:
            if not completed:
                # Only this stream pays for a failing handler.
                stream.reset()

    # -- dialing -------------------------------------------------------------

    async def connect(self, multiaddr: str | Multiaddr) -> Connection:
        """Connect to ``multiaddr`` through the transport that takes it; reuse
        a live connection, merge concurrent dials.  ``/p2p/<id>`` alone dials
        the addresses the peerstore knows."""
        self._require_running()
        parsed = parse_multiaddr(multiaddr)
        bare, peer = split_p2p(parsed)
        if not bare.to_bytes() and peer is not None:
            return await self.connection_to(peer)
        transport, bare, peer = self._route(parsed)
        return await self._connect(transport, bare, peer)

    async def _connect(
        self, transport: Transport, addr: Multiaddr, peer: PeerId | None
    ) -> Connection:
        if peer == self.peer_id:
            raise LocalProtocolError("cannot dial ourselves")
        if peer is not None:
            existing = self._conns.get(peer)
            # A relayed connection does not stand in for a direct dial:
            # asking for a direct address means wanting the direct path.
            if existing is not None and (existing.path == DIRECT or transport.path != DIRECT):
                return existing
        key: Hashable
        if peer is None and transport is self._quic:
            ip, port = await self._quic.resolve(addr)
            for conn in self.connections():
                address = conn.remote_address
                if address is not None and tuple(address[:2]) == (ip, port):
                    return conn
            key = (ip, port)
            quic = self._quic
            return await self._conns.dial(
                key, lambda: self._dial(lambda: quic.dial_ip(ip, port, None), f"{ip} port {port}"),
                self._sup,
            )
        key = (peer, transport.path) if peer is not None else str(addr)
        return await self._conns.dial(
            key,
            lambda: self._dial(
                lambda: transport.dial(addr, peer), str(addr), peer, transport.path
            ),
            self._sup,
        )

    async def _dial(
        self,
        attempt: Callable[[], Awaitable[Connection]],
        what: str,
        peer: PeerId | None = None,
        path: str = DIRECT,
    ) -> Connection:
        self._conns.check_room(peer, path)
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                conn = await attempt()
        except TimeoutError as exc:
            raise DialError(f"dial to {what} timed out") from exc
        self.adopt(conn)
        self.peerstore.add_addrs(conn.remote_peer, [conn.remote_multiaddr])
        return conn

    async def connection_to(self, peer_id: PeerId) -> Connection:
        """A live connection to ``peer_id``, dialing its known addresses
        (direct ones first) if there is none."""
        conn = self._conns.get(peer_id)
        if conn is not None:
            return conn
        routes: list[tuple[Transport, Multiaddr, Multiaddr]] = []
        for addr in self.peerstore.addrs(peer_id):
            try:
                transport, bare, _ = self._route(addr)
            except InvalidMultiaddr:
                continue
            routes.append((transport, bare, addr))
        if not routes:
            raise DialError(f"no known address for {peer_id}")
        routes.sort(key=lambda route: route[0].path != DIRECT)
        errors: list[str] = []
        last: BaseException | None = None
        for transport, bare, addr in routes:
            try:
                return await self._connect(transport, bare, peer_id)
            except (TransportError, LocalProtocolError, RemoteProtocolError) as exc:
                errors.append(f"{addr}: {exc}")
                last = exc
        # The last cause stays attached: callers tell a wrong peer ID from
        # silence by it.
        raise DialError(f"could not reach {peer_id}: " + "; ".join(errors)) from last

    # -- streams ---------------------------------------------------------------

    async def new_stream(
        self, peer_id: PeerId, protocols: Sequence[str], *, lazy: bool = False
    ) -> NegotiatedStream:
        """Open a stream to ``peer_id`` (dialing if needed) and negotiate.

        The stream goes on the best connection (a direct one over a relayed
        one).  ``lazy`` (one protocol only) sends data without waiting for
        the answer; a refusal then surfaces at the first read.
        """
        conn = await self.connection_to(peer_id)
        try:
            return await self.open_stream_on(conn, protocols, lazy=lazy)
        except ConnectionClosed:
            if not conn.is_closed:
                raise
        # The connection died under us (idle timeout, remote close): redial once.
        return await self.open_stream_on(await self.connection_to(peer_id), protocols, lazy=lazy)

    async def open_stream_on(
        self, conn: Connection, protocols: Sequence[str], *, lazy: bool = False
    ) -> NegotiatedStream:
        """Open a stream on ``conn`` itself and negotiate one of ``protocols``."""
        stream = await conn.open_stream()
        try:
            async with asyncio.timeout(self.config.negotiate_timeout):
                protocol = await select_protocol(stream, protocols, lazy=lazy)
        except TimeoutError as exc:
            stream.reset()
            raise NegotiationError("protocol negotiation timed out") from exc
        except BaseException:
            stream.reset()
            raise
        return NegotiatedStream(stream, protocol, conn, confirmed=not lazy)

    # -- conveniences ------------------------------------------------------------

    async def ping(self, peer_id: PeerId) -> float:
        """One ping round trip in seconds (``ping_service.ping`` says more)."""
        return (await self.ping_service.ping(peer_id)).rtt

    async def identify(self, peer_id: PeerId) -> IdentifyInfo:
        """Ask ``peer_id`` who it is; the answer also updates the peerstore."""
        return await self.identify_service.identify(peer_id)
