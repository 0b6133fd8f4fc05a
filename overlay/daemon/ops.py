"""The node ops of the stream API: identity, addresses, peers, connect, ping,
and byte streams to peers (``stream_open``, ``stream_handler_register`` /
``stream_accept``).

Written against ``NodeHost``, the slice of ``overlay.host.Host`` they use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from multiaddr import Multiaddr

from overlay import AGENT_VERSION
from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.errors import ApiError, BadRequest
from overlay.daemon.protocol import API_VERSION, ErrorCode
from overlay.daemon.pump import PumpLedger, PumpOutcome
from overlay.daemon.schema import PING_COUNT_MAX, PING_INTERVAL_MAX_MS
from overlay.errors import InvalidMultiaddr
from overlay.host.host import StreamHandler
from overlay.host.peerstore import ObservedAddrs, Peerstore
from overlay.host.ping import PingService
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.multiaddrs import dial_target_error, parse_quic_multiaddr, split_p2p
from overlay.naming.names import DEFAULT_ZONE, self_certifying_name
from overlay.nat.reachability import UNKNOWN_STATE, ReachabilitySource

__all__ = ["NodeHost", "NodeOps", "NodeOpsConfig", "PeerConnector", "full_addrs"]

log = logging.getLogger(__name__)


PeerConnector = Callable[[PeerId], Awaitable[Connection]]
"""Dial a peer known only by its ID (the DHT extension provides one)."""


class NodeHost(Protocol):
    @property
    def peer_id(self) -> PeerId: ...

    @property
    def peerstore(self) -> Peerstore: ...

    @property
    def observed_addrs(self) -> ObservedAddrs: ...

    @property
    def ping_service(self) -> PingService: ...

    def listen_addrs(self) -> list[Multiaddr]: ...

    def advertised_addrs(self) -> list[Multiaddr]: ...

    def peers(self) -> list[PeerId]: ...

    def best_connection(self, peer_id: PeerId) -> Connection | None: ...

    def connections(self) -> list[Connection]: ...

    async def connect(self, multiaddr: str) -> Connection: ...

    async def new_stream(self, peer_id: PeerId, protocols: list[str]) -> NegotiatedStream: ...

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    def protocols(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class NodeOpsConfig:
    max_ping_count: int = PING_COUNT_MAX
    """Upper bound of ``count`` in one ping request."""
    max_ping_interval_ms: int = PING_INTERVAL_MAX_MS
    """Upper bound of ``interval_ms`` between pings."""
    accept_timeout: float = 10.0
    """Seconds an inbound stream waits for a client's ``stream_accept``
    before it is reset."""
    max_pending_inbound: int = 256
    """Inbound streams waiting for ``stream_accept``; beyond it they are reset."""

    def __post_init__(self) -> None:
        if self.max_ping_count < 1 or self.max_ping_interval_ms < 0:
            raise ValueError("ping limits must be positive")
        if not self.accept_timeout > 0 or self.max_pending_inbound < 1:
            raise ValueError("stream accept limits must be positive")


def full_addrs(addrs: Sequence[Multiaddr | str], peer_id: PeerId) -> list[str]:
    """Append ``/p2p/<peer_id>`` to each address that lacks it."""
    out = []
    for addr in addrs:
        text = str(addr)
        out.append(text if "/p2p/" in text else f"{text}/p2p/{peer_id}")
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclass(slots=True)
class _Inbound:
    stream: NegotiatedStream
    accepted: asyncio.Event
    finished: asyncio.Event


class NodeOps:
    """Registers the node ops on an ``ApiServer`` and serves them."""

    def __init__(self, host: NodeHost, config: NodeOpsConfig | None = None,
                 *, zone: str = DEFAULT_ZONE) -> None:
        self._host = host
        self._zone = zone
        self._config = config or NodeOpsConfig()
        self._registrants: dict[str, ApiCall] = {}
        self._peer_connector: PeerConnector | None = None
        self._inbound: dict[int, _Inbound] = {}
        self._stream_ids = itertools.count(1)
        self.pumps = PumpLedger()
        """Outcomes of the streams this daemon relayed to API clients
        (``stream_outcome``); the naming ops record theirs here too."""
        self.reachability_source: ReachabilitySource | None = None
        """Set by the AutoNAT extension while it runs: ``identity`` reports
        its reachability (``unknown`` without it)."""
        self.peer_fields: Callable[[PeerId], Mapping[str, Any]] | None = None
        """More fields for each entry of ``peers`` (the NAT extension's
        ``repunch`` while it runs)."""

    def set_peer_connector(self, connector: PeerConnector | None) -> None:
        """How to reach a peer known only by its ID (the DHT sets this)."""
        self._peer_connector = connector

    async def _connect_by_id(self, peer: PeerId) -> Connection:
        if self._peer_connector is None:
            raise ApiError(ErrorCode.DIAL_FAILED,
                           f"no address known for {peer} and no DHT to look one up")
        return await self._peer_connector(peer)

    def register(self, server: ApiServer) -> None:
        server.register("identity", self.identity)
        server.register("listen_addrs", self.listen_addrs)
        server.register("peers", self.peers)
        server.register("connect", self.connect)
        server.register("ping", self.ping)
        server.register("stream_open", self.stream_open)
        server.register("stream_handler_register", self.stream_handler_register)
        server.register("stream_accept", self.stream_accept)
        server.register("stream_outcome", self.stream_outcome)

    # -- argument helpers -------------------------------------------------

    def _addr_arg(self, call: ApiCall, name: str = "addr") -> str | None:
        text = call.str_arg(name, None)
        if text is not None:
            error = dial_target_error(text)
            if error is not None:
                raise InvalidMultiaddr(error)
        return text

    async def _target_peer(self, call: ApiCall) -> tuple[PeerId, dict[str, Any]]:
        """Resolve ``peer`` or ``addr`` to a peer, dialing ``addr`` first.

        Also returns the reply fields saying which connection was used."""
        addr = self._addr_arg(call)
        peer_text = call.str_arg("peer", None)
        peer = PeerId.from_string(peer_text) if peer_text is not None else None
        if addr is None:
            if peer is None:
                raise BadRequest(f"`{call.op}` needs `addr` (a multiaddr) or `peer` (a peer ID)")
            if (peer not in self._host.peers() and not self._host.peerstore.addrs(peer)
                    and self._peer_connector is not None):
                await self._connect_by_id(peer)  # nothing known: ask the DHT
            return peer, {}
        conn, fields = await self._dial(addr)
        if peer is not None and conn.remote_peer != peer:
            raise BadRequest(f"`addr` leads to {conn.remote_peer}, not to `peer` {peer}")
        return conn.remote_peer, fields

    async def _dial(self, addr: str) -> tuple[Connection, dict[str, Any]]:
        """``host.connect(addr)``, and whether it answered with a connection
        that was already open to another address of the peer: the host
        reuses one connection per peer, so the address asked for was not
        dialed and the caller should hear so."""
        before = self._host.connections()
        conn = await self._host.connect(addr)
        reused = any(c is conn for c in before)
        remote = _remote_text(conn)
        return conn, {
            "remote_addr": remote,
            "path": conn.path,
            "punched": _punched(self._host, conn),
            "used_existing": reused and not _same_place(addr, conn),
        }

    # -- ops ----------------------------------------------------------------

    async def identity(self, call: ApiCall) -> Mapping[str, Any]:
        host = self._host
        return {
            "peer_id": str(host.peer_id),
            "name": self_certifying_name(host.peer_id, self._zone),
            "addrs": full_addrs(host.advertised_addrs(), host.peer_id),
            "agent_version": AGENT_VERSION,
            "protocols": host.protocols(),
            "api_version": API_VERSION,
            "observed_addrs": [{"addr": str(addr), "reporters": count}
                               for addr, count in host.observed_addrs.addrs()],
            **self._reachability(),
        }

    def _reachability(self) -> dict[str, Any]:
        source = self.reachability_source
        state = source.state if source is not None else UNKNOWN_STATE
        reasons = list(state.reasons) if source is not None else ["AutoNAT is not running"]
        return {"reachability": state.reachability.value, "reachability_reasons": reasons}

    async def listen_addrs(self, call: ApiCall) -> Mapping[str, Any]:
        return {"addrs": [str(a) for a in self._host.listen_addrs()]}

    async def peers(self, call: ApiCall) -> Mapping[str, Any]:
        host = self._host
        by_peer: dict[PeerId, list[Connection]] = {}
        for conn in host.connections():
            if not conn.is_closed:
                by_peer.setdefault(conn.remote_peer, []).append(conn)
        peers = []
        for peer_id, conns in sorted(by_peer.items(), key=lambda item: str(item[0])):
            info = host.peerstore.get(peer_id)
            # The connection new streams use first: a direct one if any.
            best = host.best_connection(peer_id)
            conns.sort(key=lambda c: c is not best)
            peers.append({
                "peer_id": str(peer_id),
                "addrs": [str(a) for a in (info.addrs if info else ())],
                "connected_addrs": [_remote_text(c) for c in conns],
                "connections": [{**_conn_fields(c), "punched": _punched(host, c)}
                                for c in conns],
                "path": conns[0].path,
                "punched": _punched(host, conns[0]),
                "agent_version": info.agent_version if info else None,
                "protocols": sorted(info.protocols) if info else [],
                "direction": "outbound" if conns[0].is_initiator else "inbound",
                **(self.peer_fields(peer_id) if self.peer_fields is not None else {}),
            })
        return {"peers": peers}

    async def connect(self, call: ApiCall) -> Mapping[str, Any]:
        text = call.str_arg("addr", None)
        only_peer = _bare_peer(text) if text is not None else None
        if only_peer is not None:
            # `/p2p/<id>` without an address: the DHT finds one.
            conn = await self._connect_by_id(only_peer)
            return {"peer_id": str(conn.remote_peer), "addr": text, "path": conn.path,
                    "punched": _punched(self._host, conn),
                    "remote_addr": _remote_text(conn),
                    "direction": "outbound" if conn.is_initiator else "inbound"}
        addr = self._addr_arg(call)
        if addr is None:
            raise BadRequest("`connect` needs the string field `addr`")
        conn, fields = await self._dial(addr)
        return {
            "peer_id": str(conn.remote_peer),
            "addr": addr,
            "direction": "outbound" if conn.is_initiator else "inbound",
            **fields,
        }

    async def ping(self, call: ApiCall) -> Mapping[str, Any]:
        cfg = self._config
        count = call.int_arg("count", 1, 1, cfg.max_ping_count)
        interval_ms = call.int_arg("interval_ms", 0, 0, cfg.max_ping_interval_ms)
        peer, fields = await self._target_peer(call)
        rtts: list[float] = []
        path = None
        punched = False
        for seq in range(1, count + 1):
            if seq > 1 and interval_ms:
                await asyncio.sleep(interval_ms / 1000.0)
            pong = await self._host.ping_service.ping(peer)
            rtts.append(_ms(pong.rtt))
            path = pong.path
            punched = pong.path == "direct" and any(
                c.remote_peer == peer and c.remote_multiaddr == pong.remote_multiaddr
                and _punched(self._host, c) for c in self._host.connections())
            await call.emit("pong", seq=seq, rtt_ms=rtts[-1], peer_id=str(peer), path=path)
        return {
            "peer_id": str(peer),
            "path": path,
            "punched": punched,
            "count": count,
            "rtts_ms": rtts,
            "min_ms": min(rtts),
            "avg_ms": round(sum(rtts) / len(rtts), 3),
            "max_ms": max(rtts),
            **fields,
        }

    async def stream_open(self, call: ApiCall) -> Mapping[str, Any]:
        protocols = call.str_list_arg("protocols")
        peer, _ = await self._target_peer(call)
        stream = await self._host.new_stream(peer, protocols)
        pump_id = self.pumps.open()
        try:
            reader, writer = await call.take_over(
                {"peer_id": str(peer), "protocol": stream.protocol, "pump_id": pump_id})
        except BaseException:
            stream.reset()
            self.pumps.close(pump_id, PumpOutcome(0, 0, "the client left before the relay began"))
            raise
        outcome = await self.pumps.run(pump_id, reader, writer, stream)
        log.debug("stream %s to %s done: %d bytes up, %d down, %s", stream.protocol, peer,
                  outcome.up, outcome.down, outcome.failure or "clean")
        return {}

    async def stream_outcome(self, call: ApiCall) -> Mapping[str, Any]:
        """How a relayed stream ended, by the ``pump_id`` its ``take_over``
        reply carried: ``state`` is ``running``, ``ended`` (both sides
        reached EOF) or ``broken`` (with ``error``).  Waits up to ``wait``
        seconds (default 5, at most 60) for a running stream to end."""
        pump_id = call.required_str("pump_id")
        wait: int = call.arg("wait")
        if not self.pumps.known(pump_id):
            raise BadRequest(f"no relayed stream {pump_id!r} (unknown, or long forgotten)")
        outcome = await self.pumps.outcome(pump_id, wait)
        if outcome is None:
            return {"state": "running"}
        fields: dict[str, Any] = {"up": outcome.up, "down": outcome.down}
        if outcome.failure is not None:
            return {"state": "broken", "error": outcome.failure, **fields}
        return {"state": "ended", **fields}

    async def stream_handler_register(self, call: ApiCall) -> Mapping[str, Any]:
        """Route inbound streams of ``protocol`` to this API connection as
        ``stream`` events until the client closes it."""
        protocol = call.required_str("protocol")
        if not protocol.startswith("/") or len(protocol) > 256:
            raise BadRequest("`protocol` must start with '/' and be at most 256 characters")
        if protocol in self._registrants:
            raise ApiError(ErrorCode.FAILED, f"{protocol} already has a handler on another API connection")
        if protocol in self._host.protocols():
            raise ApiError(ErrorCode.FAILED, f"{protocol} is served by the daemon itself")
        self._host.set_stream_handler(protocol, self._make_inbound_handler(protocol))
        self._registrants[protocol] = call
        try:
            await call.emit("registered", protocol=protocol)
            await call.wait_client_eof()
        finally:
            del self._registrants[protocol]
            # No longer advertised in identify; streams already waiting for
            # stream_accept still time out on their own.
            self._host.remove_stream_handler(protocol)
        return {"protocol": protocol}

    def _make_inbound_handler(self, protocol: str) -> StreamHandler:
        async def handle(stream: NegotiatedStream) -> None:
            await self._handle_inbound(protocol, stream)
        return handle

    async def _handle_inbound(self, protocol: str, stream: NegotiatedStream) -> None:
        registrant = self._registrants.get(protocol)
        if registrant is None or len(self._inbound) >= self._config.max_pending_inbound:
            stream.reset()
            return
        stream_id = next(self._stream_ids)
        entry = _Inbound(stream, asyncio.Event(), asyncio.Event())
        self._inbound[stream_id] = entry
        try:
            await registrant.emit("stream", stream_id=stream_id, peer_id=str(stream.remote_peer),
                                  protocol=protocol)
            async with asyncio.timeout(self._config.accept_timeout):
                await entry.accepted.wait()
            # The relay runs in the accepting client's task; the stream stays
            # owned by this handler until it finishes.
            await entry.finished.wait()
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("inbound %s stream from %s dropped: %s", protocol, stream.remote_peer, exc)
            stream.reset()
        finally:
            self._inbound.pop(stream_id, None)

    async def stream_accept(self, call: ApiCall) -> Mapping[str, Any]:
        stream_id: int = call.arg("stream_id")
        entry = self._inbound.get(stream_id)
        if entry is None or entry.accepted.is_set():
            raise BadRequest(f"no pending inbound stream {stream_id}")
        entry.accepted.set()
        stream = entry.stream
        try:
            pump_id = self.pumps.open()
            try:
                reader, writer = await call.take_over(
                    {"peer_id": str(stream.remote_peer), "protocol": stream.protocol,
                     "pump_id": pump_id})
            except BaseException:
                stream.reset()  # the client left before the relay began
                self.pumps.close(pump_id, PumpOutcome(0, 0, "the client left"))
                raise
            await self.pumps.run(pump_id, reader, writer, stream)
        finally:
            entry.finished.set()
        return {}


def _bare_peer(text: str) -> PeerId | None:
    """The peer of a `/p2p/<id>` multiaddr that has nothing else, or None."""
    parts = text.split("/")
    if len(parts) == 3 and parts[0] == "" and parts[1] in ("p2p", "ipfs"):
        return PeerId.from_string(parts[2])
    return None


def _same_place(addr: str, conn: Connection) -> bool:
    """Whether ``addr`` names the connection's remote IP and port, or its
    circuit (a DNS name cannot be compared without resolving it, so it never
    matches)."""
    if conn.remote_address is None:
        try:
            return bool(split_p2p(addr)[0] == conn.remote_multiaddr)
        except InvalidMultiaddr:
            return False
    try:
        parsed = parse_quic_multiaddr(addr)
    except InvalidMultiaddr:
        return False
    host, port = conn.remote_address[:2]
    try:
        return (ipaddress.ip_address(parsed.host), parsed.port) == (ipaddress.ip_address(host), port)
    except ValueError:
        return False


def _punched(host: object, conn: Connection) -> bool:
    """Whether hole punching made ``conn`` (hosts without DCUtR say no)."""
    is_punched = getattr(host, "is_punched", None)
    return bool(is_punched(conn)) if callable(is_punched) else False


def _remote_text(conn: Connection) -> str:
    return str(conn.remote_multiaddr)


def _conn_fields(conn: Connection) -> dict[str, Any]:
    limit = conn.limit
    return {
        "addr": _remote_text(conn),
        "path": conn.path,
        "direction": "outbound" if conn.is_initiator else "inbound",
        "limit": None if limit is None else {"duration_s": limit.duration, "data_bytes": limit.data},
    }
