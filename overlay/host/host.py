"""The host: endpoints, connections, protocol handlers, ping and identify."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

from multiaddr import Multiaddr

from overlay.errors import (
    ConnectionClosed,
    DialError,
    LimitExceeded,
    LocalProtocolError,
    NegotiationError,
    OverlayError,
    RemoteProtocolError,
    TransportError,
)
from overlay.host.addrs import expand_unspecified, is_ipv6, is_loopback, socket_to_multiaddr
from overlay.host.config import HostConfig
from overlay.host.connmgr import ConnectionManager
from overlay.host.events import HostListener
from overlay.host.identify import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    IdentifyInfo,
    build_identify,
    parse_identify,
    read_identify,
    write_identify,
)
from overlay.host.peerstore import ObservedAddrs, Peerstore
from overlay.host.ping import PING_PROTOCOL, PING_SIZE, ping_roundtrip, serve_ping
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection, Endpoint
from overlay.identity import PeerId, PrivateKey
from overlay.identity.peer_record import MAX_PEER_RECORD_ADDRS, PeerRecord, seal_peer_record
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.negotiate import encode_message, handle_protocol, select_protocol
from overlay.supervisor import run_supervised
from overlay.transport.errors import GOING_AWAY
from overlay.wire.stream import ByteStream

__all__ = ["Host", "StreamHandler", "EndpointFactory"]

log = logging.getLogger(__name__)

StreamHandler = Callable[[NegotiatedStream], Awaitable[None]]
EndpointFactory = Callable[[str, int], Awaitable[Endpoint]]


class Host:
    """A libp2p host over QUIC.  Use as ``async with Host(key, config) as host``.

    Every accept loop, connection and stream handler runs in the host's
    TaskGroup and ends when the host does.
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
        self._connected_peers: set[PeerId] = set()
        self._endpoint_factory = endpoint_factory or self._create_quic_endpoint
        self._listen_endpoints: list[Endpoint] = []
        self._dial_endpoints: list[Endpoint] = []
        self._endpoint_lock = asyncio.Lock()
        self._handlers: dict[str, StreamHandler] = {}
        self._listeners: list[HostListener] = []
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._ping_inbound: dict[PeerId, int] = {}
        self._ping_streams: dict[PeerId, NegotiatedStream] = {}
        self._ping_locks: dict[PeerId, asyncio.Lock] = {}
        self._push_wanted = False
        self._push_running = False
        self._record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self.set_stream_handler(PING_PROTOCOL, self._handle_ping)
        self.set_stream_handler(IDENTIFY_PROTOCOL, self._handle_identify)
        self.set_stream_handler(IDENTIFY_PUSH_PROTOCOL, self._handle_identify_push)

    # -- lifetime ---------------------------------------------------------

    async def __aenter__(self) -> Host:
        if self._tg is not None or self._closing:
            raise LocalProtocolError("a host can be started once")
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
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
        for endpoint in self._listen_endpoints + self._dial_endpoints:
            try:
                await endpoint.aclose()
            except (OverlayError, OSError) as err:
                log.debug("closing endpoint: %s", err)
        for task in list(self._tasks):
            task.cancel()
        tg, self._tg = self._tg, None
        if tg is None:
            raise LocalProtocolError("the host was not started")
        await tg.__aexit__(exc_type, exc, tb)
        if conns:
            log.info(
                "host stopped: told %d peer(s) over %d connection(s) that we are going away, in %.3f s",
                len({conn.remote_peer for conn in conns}), len(conns), time.monotonic() - started,
            )
        return None

    def abort_for_test(self) -> None:
        """Crash: every endpoint drops its socket and connections without
        sending anything, as a killed process would.  Peers learn of it
        only from silence (or ICMP).  Leave the ``async with`` afterwards."""
        self._closing = True
        for endpoint in self._listen_endpoints + self._dial_endpoints:
            endpoint.abort_for_test()

    def _require_running(self) -> None:
        if self._tg is None or self._closing:
            raise LocalProtocolError("the host is not running (use `async with host:`)")

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        tg = self._tg
        if tg is None or self._closing:
            coro.close()
            raise LocalProtocolError("the host is not running (use `async with host:`)")
        task = tg.create_task(self._supervise(coro, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        # One misbehaving peer or handler must not end the host.
        await run_supervised(coro, what, log)

    # -- listening ---------------------------------------------------------

    async def _create_quic_endpoint(self, host: str, port: int) -> Endpoint:
        from overlay.transport import QuicEndpoint, TransportConfig

        config = self.config.transport or TransportConfig()
        endpoint: Endpoint = await QuicEndpoint.create(host, port, self._key, config)
        return endpoint

    async def listen(self, multiaddrs: Sequence[str | Multiaddr]) -> None:
        """Bind one endpoint per address (port 0 picks a free port)."""
        self._require_running()
        parsed = [parse_quic_multiaddr(addr) for addr in multiaddrs]
        created: list[Endpoint] = []
        try:
            for addr in parsed:
                created.append(await self._endpoint_factory(addr.host, addr.port))
        except BaseException:
            for endpoint in created:
                await endpoint.aclose()
            raise
        for endpoint in created:
            self._listen_endpoints.append(endpoint)
            self._spawn(self._accept_loop(endpoint), f"accept loop {endpoint.local_address}")
        self._record = None
        self._schedule_push()

    def endpoints(self) -> list[Endpoint]:
        """The live endpoints (listening ones first); NAT traversal uses their sockets."""
        return self._listen_endpoints + self._dial_endpoints

    def listen_addrs(self) -> list[Multiaddr]:
        """Dialable addresses with real ports, without ``/p2p``."""
        out: dict[Multiaddr, None] = {}
        for endpoint in self._listen_endpoints:
            host, port = endpoint.local_address[:2]
            out.update(dict.fromkeys(expand_unspecified(host, port)))
        return list(out)

    async def _accept_loop(self, endpoint: Endpoint) -> None:
        while not self._closing:
            try:
                conn = await endpoint.accept()
            except TransportError as exc:
                log.debug("endpoint %s stopped accepting: %r", endpoint.local_address, exc)
                return
            try:
                self._adopt(conn)
            except LimitExceeded as exc:
                log.debug("inbound connection refused: %s", exc)

    def _adopt(self, conn: Connection) -> None:
        """Track and serve a new connection, or close it beyond the caps."""
        if self._closing or not self._conns.add(conn):
            conn.close(0, "connection limit")
            raise LimitExceeded(f"connection to {conn.remote_peer} refused by the limits")
        self._spawn(self._serve_connection(conn), f"connection {conn.remote_peer}")

    async def _serve_connection(self, conn: Connection) -> None:
        peer = conn.remote_peer
        try:
            if peer not in self._connected_peers:
                self._connected_peers.add(peer)
                self._notify(lambda lis: lis.connected and lis.connected(peer, conn))
            self._spawn(self._auto_identify(conn), f"identify {peer}")
            while True:
                try:
                    stream = await conn.accept_stream()
                except TransportError:
                    return
                self._spawn(self._handle_inbound(conn, stream), f"stream from {peer}")
        finally:
            conn.close(0, "")
            self._conns.remove(conn)
            # get() also prunes closed connections, so ask it rather than
            # trusting remove()'s answer.
            if self._conns.get(peer) is None and peer in self._connected_peers:
                self._connected_peers.discard(peer)
                self._forget_connection_state(peer)
                reason = conn.close_reason
                self._notify(lambda lis: lis.disconnected and lis.disconnected(peer))
                self._notify(lambda lis: lis.closed and lis.closed(peer, reason))

    def _forget_connection_state(self, peer: PeerId) -> None:
        self._ping_streams.pop(peer, None)
        self._ping_locks.pop(peer, None)

    # -- listeners -----------------------------------------------------------

    def add_listener(self, listener: HostListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: HostListener) -> None:
        self._listeners = [lis for lis in self._listeners if lis is not listener]

    def _notify(self, call: Callable[[HostListener], object]) -> None:
        for listener in list(self._listeners):
            try:
                call(listener)
            except Exception:  # a listener's bug must not end the connection
                log.exception("host listener failed")

    # -- handlers ------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        encode_message(protocol)  # refuses IDs that cannot be negotiated
        self._handlers[protocol] = handler
        self._schedule_push()

    def remove_stream_handler(self, protocol: str) -> None:
        if self._handlers.pop(protocol, None) is not None:
            self._schedule_push()

    def protocols(self) -> list[str]:
        return sorted(self._handlers)

    async def _handle_inbound(self, conn: Connection, stream: ByteStream) -> None:
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
        completed = False
        try:
            await handler(NegotiatedStream(stream, protocol, conn))
            completed = True
        finally:
            if not completed:
                # Only this stream pays for a failing handler.
                stream.reset()

    # -- dialing -------------------------------------------------------------

    def disconnect(self, peer_id: PeerId) -> None:
        """Close every connection to ``peer_id``."""
        for conn in self._conns.connections():
            if conn.remote_peer == peer_id:
                conn.close(0, "disconnect")

    def connections(self) -> list[Connection]:
        return [conn for conn in self._conns.connections() if not conn.is_closed]

    def peers(self) -> list[PeerId]:
        return [peer for peer in self._conns.peers() if self._conns.get(peer) is not None]

    async def connect(self, multiaddr: str | Multiaddr) -> Connection:
        """Connect to ``multiaddr``; reuse a live connection, merge concurrent dials."""
        self._require_running()
        addr = parse_quic_multiaddr(multiaddr)
        return await self._connect(addr.host, addr.port, addr.peer_id)

    async def _connect(self, host: str, port: int, peer: PeerId | None) -> Connection:
        if peer == self.peer_id:
            raise LocalProtocolError("cannot dial ourselves")
        if peer is not None:
            existing = self._conns.get(peer)
            if existing is not None:
                return existing
        ip = await self._resolve(host, port)
        if peer is None:
            for conn in self.connections():
                address = conn.remote_address
                if address is not None and tuple(address[:2]) == (ip, port):
                    return conn
        key: object = peer if peer is not None else (ip, port)
        return await self._conns.dial(key, lambda: self._dial(ip, port, peer))

    async def _resolve(self, host: str, port: int) -> str:
        try:
            is_ipv6(host)
            return host
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise DialError(f"cannot resolve {host}: {exc}") from exc
        if not infos:
            raise DialError(f"{host} has no addresses")
        return str(infos[0][4][0])

    async def _dial(self, ip: str, port: int, peer: PeerId | None) -> Connection:
        self._conns.check_room(peer)
        endpoint = await self._endpoint_for(ip)
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                conn = await endpoint.dial((ip, port), peer)
        except TimeoutError as exc:
            raise DialError(f"dial to {ip} port {port} timed out") from exc
        self._adopt(conn)
        self.peerstore.add_addrs(conn.remote_peer, [socket_to_multiaddr(ip, port)])
        return conn

    async def _endpoint_for(self, ip: str) -> Endpoint:
        # Dial from a listening socket of the same family so the remote
        # sees (and NAT maps) the port we listen on: hole punching needs it.
        ipv6 = is_ipv6(ip)
        remote_loopback = is_loopback(ip)
        async with self._endpoint_lock:
            for endpoint in self._listen_endpoints + self._dial_endpoints:
                local = endpoint.local_address[0]
                # A loopback-bound socket cannot reach other hosts.
                if is_ipv6(local) == ipv6 and (remote_loopback or not is_loopback(local)):
                    return endpoint
            endpoint = await self._endpoint_factory("::" if ipv6 else "0.0.0.0", 0)
            self._dial_endpoints.append(endpoint)
        self._spawn(self._accept_loop(endpoint), "accept loop (dial endpoint)")
        return endpoint

    async def _connection_to(self, peer_id: PeerId) -> Connection:
        conn = self._conns.get(peer_id)
        if conn is not None:
            return conn
        addrs = self.peerstore.addrs(peer_id)
        if not addrs:
            raise DialError(f"no known address for {peer_id}")
        errors: list[str] = []
        last: BaseException | None = None
        for addr in addrs:
            try:
                parsed = parse_quic_multiaddr(addr)
                return await self._connect(parsed.host, parsed.port, peer_id)
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

        ``lazy`` (one protocol only) sends data without waiting for the
        answer; a refusal then surfaces at the first read.
        """
        conn = await self._connection_to(peer_id)
        try:
            return await self._open_stream(conn, protocols, lazy)
        except ConnectionClosed:
            if not conn.is_closed:
                raise
        # The connection died under us (idle timeout, remote close): redial once.
        return await self._open_stream(await self._connection_to(peer_id), protocols, lazy)

    async def _open_stream(
        self, conn: Connection, protocols: Sequence[str], lazy: bool = False
    ) -> NegotiatedStream:
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

    # -- ping ----------------------------------------------------------------

    async def ping(self, peer_id: PeerId) -> float:
        """One ping round trip in seconds, on a stream kept per peer."""
        lock = self._ping_locks.setdefault(peer_id, asyncio.Lock())
        async with lock:
            for _ in range(2):
                stream = self._ping_streams.pop(peer_id, None)
                fresh = stream is None
                if stream is None:
                    stream = await self.new_stream(peer_id, [PING_PROTOCOL])
                payload = os.urandom(PING_SIZE)
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self.config.ping_timeout):
                        await ping_roundtrip(stream, payload)
                except (TransportError, RemoteProtocolError, TimeoutError):
                    stream.reset()
                    if fresh:
                        raise
                    continue  # the kept stream died; retry once on a new one
                rtt = time.monotonic() - started
                self._ping_streams[peer_id] = stream
                return rtt
        raise DialError(f"ping to {peer_id} failed")  # pragma: no cover - loop returns

    async def _handle_ping(self, stream: NegotiatedStream) -> None:
        peer = stream.remote_peer
        active = self._ping_inbound.get(peer, 0)
        if active >= self.config.ping_max_inbound_streams:
            stream.reset()
            return
        self._ping_inbound[peer] = active + 1
        try:
            await serve_ping(stream, self.config.ping_idle_timeout)
        finally:
            left = self._ping_inbound[peer] - 1
            if left:
                self._ping_inbound[peer] = left
            else:
                del self._ping_inbound[peer]

    # -- identify ------------------------------------------------------------

    async def identify(self, peer_id: PeerId) -> IdentifyInfo:
        """Ask ``peer_id`` who it is; the answer also updates the peerstore."""
        return await self._identify_conn(await self._connection_to(peer_id))

    async def _auto_identify(self, conn: Connection) -> None:
        await self._identify_conn(conn)

    async def _identify_conn(self, conn: Connection) -> IdentifyInfo:
        stream = await self._open_stream(conn, [IDENTIFY_PROTOCOL])
        try:
            async with asyncio.timeout(self.config.identify_timeout):
                data = await read_identify(stream, self.config.identify_max_size)
        except BaseException:
            stream.reset()
            raise
        info = self._parse_identify(data, conn.remote_peer)
        self._apply_identify(info, push=False)
        return info

    def _parse_identify(self, data: bytes, peer: PeerId) -> IdentifyInfo:
        return parse_identify(
            data,
            peer,
            max_addrs=self.config.max_addrs_per_peer,
            max_protocols=self.config.max_protocols_per_peer,
        )

    def _identify_message(self, observed: Multiaddr | None) -> bytes:
        addrs = tuple(self.listen_addrs())
        if self._record is None or self._record[0] != addrs:
            # Wall-clock microseconds keep the sequence rising across restarts.
            record = PeerRecord(
                self.peer_id,
                time.time_ns() // 1000,
                tuple(addr.to_bytes() for addr in addrs[:MAX_PEER_RECORD_ADDRS]),
            )
            self._record = (addrs, seal_peer_record(self._key, record))
        return build_identify(
            self._key,
            listen_addrs=addrs,
            protocols=self.protocols(),
            observed_addr=observed,
            agent_version=self.config.agent_version,
            protocol_version=self.config.protocol_version,
            signed_peer_record=self._record[1],
        )

    def _observed(self, conn: Connection) -> Multiaddr | None:
        address = conn.remote_address
        if address is None:
            return None  # relayed: the relay, not the peer, sees our address
        try:
            return socket_to_multiaddr(address[0], address[1])
        except ValueError:
            return None

    async def _handle_identify(self, stream: NegotiatedStream) -> None:
        message = self._identify_message(self._observed(stream.conn))
        async with asyncio.timeout(self.config.identify_timeout):
            await write_identify(stream, message)

    async def _handle_identify_push(self, stream: NegotiatedStream) -> None:
        async with asyncio.timeout(self.config.identify_timeout):
            data = await read_identify(stream, self.config.identify_max_size)
        self._apply_identify(self._parse_identify(data, stream.remote_peer), push=True)

    def _apply_identify(self, info: IdentifyInfo, *, push: bool) -> None:
        peer, store = info.peer_id, self.peerstore
        if info.public_key is not None:
            store.set_public_key(peer, info.public_key)
        if info.record_seq is not None:
            if store.accept_record_seq(peer, info.record_seq):
                store.set_addrs(peer, list(info.listen_addrs))
        elif info.has_listen_addrs or not push:
            store.add_addrs(peer, list(info.listen_addrs))
        if info.has_protocols or not push:
            store.set_protocols(peer, list(info.protocols))
        store.set_versions(peer, info.agent_version, info.protocol_version)
        if info.observed_addr is not None:
            store.set_observed_addr(peer, info.observed_addr)
            self.observed_addrs.record(peer, info.observed_addr)
        self._notify(lambda lis: lis.identified and lis.identified(peer, info))

    def _schedule_push(self) -> None:
        """Push identify to connected peers; coalesces bursts of changes."""
        if self._tg is None or self._closing:
            return
        self._push_wanted = True
        if not self._push_running:
            self._push_running = True
            self._spawn(self._push_all(), "identify push")

    async def _push_all(self) -> None:
        try:
            for _ in range(8):  # each round sends the newest state
                if not self._push_wanted:
                    return
                self._push_wanted = False
                targets = [
                    conn
                    for peer in self.peers()
                    if self.peerstore.supports(peer, IDENTIFY_PUSH_PROTOCOL)
                    and (conn := self._conns.get(peer)) is not None
                ]
                async with asyncio.TaskGroup() as tg:
                    for conn in targets:
                        tg.create_task(self._push_one(conn))
        finally:
            self._push_running = False

    async def _push_one(self, conn: Connection) -> None:
        try:
            stream = await self._open_stream(conn, [IDENTIFY_PUSH_PROTOCOL])
            async with asyncio.timeout(self.config.identify_timeout):
                await write_identify(stream, self._identify_message(self._observed(conn)))
        except (OverlayError, TimeoutError) as exc:
            log.debug("identify push to %s failed: %r", conn.remote_peer, exc)
