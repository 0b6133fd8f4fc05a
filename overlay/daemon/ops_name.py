"""The ``name_*`` ops of the stream API, and the naming daemon extension.

Ops (arguments and replies are in docs/api.md, "Names"):
``name_register``, ``name_update``, ``name_transfer``, ``name_release``,
``name_resolve``, ``name_list`` and ``name_connect``, which resolves a
name, dials the named peer directly and relays a stream to it like
``stream_open``.

``NameExtension`` runs the naming service (and the DNS front) inside the
daemon, on top of the daemon's kad service.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from multiaddr import Multiaddr

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.error_codes import NameErrorCode
from overlay.daemon.errors import ApiError, BadRequest, ListenFailed
from overlay.daemon.ops_dht import DhtExtension
from overlay.daemon.protocol import ErrorCode
from overlay.daemon.pump import PumpLedger, PumpOutcome
from overlay.errors import DialError, InvalidMultiaddr, OverlayError, RemoteProtocolError, TransportError
from overlay.host.peerstore import Peerstore
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import PeerId, PrivateKey, public_key_from_protobuf
from overlay.kad.records import default_registry
from overlay.kad.service_config import KadServiceConfig
from overlay.multiaddrs import parse_quic_multiaddr, with_p2p
from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.kad_client import KadLike, KadNameClient, NAMESPACE_ID, register_name_namespace
from overlay.naming.owned import OwnedName
from overlay.naming.record import NameRecord, PeerTarget, Service
from overlay.naming.resolver import Resolution
from overlay.naming.service import NameService, NameServiceConfig, PublishResult, Targets

__all__ = [
    "NameErrorCode",
    "NameExtension",
    "NameOps",
    "naming_extensions",
    "parse_service",
    "record_json",
    "resolution_json",
]

log = logging.getLogger(__name__)


class NameHost(Protocol):
    """The slice of the host that ``name_connect`` uses."""

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def peerstore(self) -> Peerstore: ...

    async def connect(self, addr: Multiaddr) -> Connection: ...

    async def new_stream(self, peer_id: PeerId, protocols: list[str]) -> NegotiatedStream: ...


# -- JSON forms -------------------------------------------------------------------


def _punched(host: object, conn: Connection) -> bool:
    """Whether hole punching (DCUtR) made ``conn``."""
    is_punched = getattr(host, "is_punched", None)
    return bool(is_punched(conn)) if callable(is_punched) else False


def _peer_text(raw: bytes) -> str:
    try:
        return str(PeerId.from_bytes(raw))
    except OverlayError:
        return raw.hex()


def _owner_text(owner: bytes) -> str:
    try:
        return str(PeerId.from_public_key(public_key_from_protobuf(owner)))
    except OverlayError:
        return owner.hex()


def record_json(record: NameRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "kind": record.kind.name.lower(),
        "owner": _owner_text(record.owner),
        "sequence": record.sequence,
        "expires": record.expires,
        "ttl": record.ttl,
        "peers": [
            {"peer_id": _peer_text(p.peer_id), "addrs": [str(Multiaddr(a)) for a in p.addrs]}
            for p in record.peers
        ],
        "ips": [str(ipaddress.ip_address(ip)) for ip in record.ips],
        "services": [
            {"protocol": s.protocol, "port": s.port, "target": s.target,
             "priority": s.priority, "weight": s.weight}
            for s in record.services
        ],
        "txt": list(record.txt),
    }


def resolution_json(resolution: Resolution) -> dict[str, Any]:
    return {
        "name": resolution.name,
        "source": resolution.source,
        "elapsed_ms": round(resolution.elapsed * 1000.0, 3),
        "fresh_until": round(resolution.fresh_until, 3),
        "supporters": resolution.supporters,
        "final": resolution.final,
        "record": record_json(resolution.record),
    }


def _publish_json(result: PublishResult) -> dict[str, Any]:
    return {
        "name": result.record.name,
        "sequence": result.record.sequence,
        "expires": result.record.expires,
        "stored": result.stored,
        "republish_at": None if result.republish_at is None else round(result.republish_at, 3),
        "pow_ms": round(result.pow_seconds * 1000.0, 3),
        "record": record_json(result.record),
    }


def _owned_json(entry: OwnedName) -> dict[str, Any]:
    return {
        "name": entry.record.name,
        "sequence": entry.record.sequence,
        "expires": entry.record.expires,
        "published_at": round(entry.published_at, 3),
        "republish_at": round(entry.republish_at, 3),
        "stored": entry.stored,
        "self_target": entry.self_target,
        "record": record_json(entry.record),
    }


# -- argument parsing ---------------------------------------------------------------


def _str_items(call: ApiCall, name: str) -> list[str] | None:
    # A list of at most 32 strings: the server checked it against the schema.
    items: list[str] | None = call.arg(name)
    return items


def parse_service(text: str) -> Service:
    """``PROTO:PORT`` or ``PROTO:PORT:TARGET``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        raise BadRequest(f"service {text!r} must be PROTO:PORT or PROTO:PORT:TARGET")
    port = int(parts[1])
    if port > 0xFFFF:
        raise BadRequest(f"service {text!r}: port must be 0..65535")
    return Service(parts[0], port, parts[2].lower().rstrip(".") if len(parts) == 3 else "")


def _targets(call: ApiCall, *, registering: bool) -> Targets:
    peer = call.str_arg("peer", None)
    addrs = _str_items(call, "addrs")
    peers: tuple[PeerTarget, ...] | None = None
    self_peer: bool | None = None
    if peer is None or peer == "self":
        if peer == "self" or registering:
            self_peer = True
        if addrs and peer is not None:
            raise BadRequest("`addrs` go with a peer ID; `self` uses this node's addresses")
    elif peer == "none":
        self_peer, peers = False, ()
    else:
        peer_id = PeerId.from_string(peer)
        raw: list[bytes] = []
        for text in addrs or []:
            try:
                parsed = parse_quic_multiaddr(text)
            except InvalidMultiaddr as exc:
                raise BadRequest(f"`addrs`: {exc}", ErrorCode.INVALID_MULTIADDR) from exc
            raw.append(parsed.with_peer_id(None).to_multiaddr().to_bytes())
        self_peer, peers = False, (PeerTarget(peer_id.to_bytes(), tuple(raw)),)
    ips: tuple[bytes, ...] | None = None
    ip_items = _str_items(call, "ips")
    if ip_items is not None:
        try:
            ips = tuple(ipaddress.ip_address(text).packed for text in ip_items)
        except ValueError as exc:
            raise BadRequest(f"`ips`: {exc}") from None
    services: tuple[Service, ...] | None = None
    service_items = _str_items(call, "services")
    if service_items is not None:
        services = tuple(parse_service(text) for text in service_items)
    txt_items = _str_items(call, "txt")
    txt = tuple(txt_items) if txt_items is not None else None
    ttl: int | None = call.arg("ttl")
    return Targets(self_peer=self_peer, peers=peers, ips=ips, services=services, txt=txt, ttl=ttl)


# -- the ops ----------------------------------------------------------------------------


class NameOps:
    def __init__(self, names: NameService, host: NameHost, pumps: PumpLedger) -> None:
        self._names = names
        self._host = host
        self._pumps = pumps
        self.extra_fields: Callable[[NameRecord], Mapping[str, Any]] | None = None
        """Fields added to ``name_resolve`` answers (the virtual-IP
        extension adds ``vip4`` and ``vip6``)."""

    def register(self, server: ApiServer) -> None:
        server.register("name_register", self.name_register)
        server.register("name_update", self.name_update)
        server.register("name_transfer", self.name_transfer)
        server.register("name_release", self.name_release)
        server.register("name_resolve", self.name_resolve)
        server.register("name_list", self.name_list)
        server.register("name_connect", self.name_connect)

    async def name_register(self, call: ApiCall) -> Mapping[str, Any]:
        name = call.required_str("name")
        targets = _targets(call, registering=True)
        # Lets a client show progress: the work may take seconds to minutes.
        await call.emit("pow_started", bits=self._names.config.naming.pow_bits)
        published = False

        def publishing() -> None:
            nonlocal published
            published = True

        # A client that hangs up (Ctrl-C) cancels the registration, proof of
        # work included, unless the record has started to leave this node.
        result = await call.unless_hung_up(
            self._names.register(name, targets, on_publish=publishing),
            may_cancel=lambda: not published)
        return _publish_json(result) | {"interrupted": call.hung_up}

    async def name_update(self, call: ApiCall) -> Mapping[str, Any]:
        name = call.required_str("name")
        result = await self._names.update(name, _targets(call, registering=False))
        return _publish_json(result)

    async def name_transfer(self, call: ApiCall) -> Mapping[str, Any]:
        name = call.required_str("name")
        new_owner = PeerId.from_string(call.required_str("new_owner"))
        result = await self._names.transfer(name, new_owner)
        return _publish_json(result) | {"new_owner": str(new_owner)}

    async def name_release(self, call: ApiCall) -> Mapping[str, Any]:
        result = await self._names.release(call.required_str("name"))
        return _publish_json(result)

    async def name_resolve(self, call: ApiCall) -> Mapping[str, Any]:
        name = call.required_str("name")
        no_cache: bool = call.arg("no_cache")
        final: bool = call.arg("final")
        hit = None
        if not no_cache:
            # The fast path: a fresh cache entry without a task switch.
            hit = self._names.resolver.cached(name)
        if hit is None:
            hit = await self._names.resolve(name, use_cache=not no_cache, wait_final=final)
        answer = resolution_json(hit)
        if self.extra_fields is not None:
            answer |= self.extra_fields(hit.record)
        return answer

    async def name_list(self, call: ApiCall) -> Mapping[str, Any]:
        return {"names": [_owned_json(entry) for entry in self._names.owned()]}

    async def name_connect(self, call: ApiCall) -> Mapping[str, Any]:
        name = call.required_str("name")
        protocol = call.required_str("protocol")
        if not protocol.startswith("/") or len(protocol) > 256:
            raise BadRequest("`protocol` must start with '/' and be at most 256 characters")
        resolution = await self._names.resolve(name)
        peer, addr = await self._dial_target(resolution.record)
        stream = await self._host.new_stream(peer, [protocol])
        pump_id = self._pumps.open()
        try:
            reader, writer = await call.take_over(
                {"name": resolution.name, "peer_id": str(peer), "addr": addr,
                 "protocol": stream.protocol, "source": resolution.source,
                 "path": stream.conn.path, "punched": _punched(self._host, stream.conn),
                 "pump_id": pump_id})
        except BaseException:
            stream.reset()
            self._pumps.close(pump_id, PumpOutcome(0, 0, "the client left before the relay began"))
            raise
        await self._pumps.run(pump_id, reader, writer, stream)
        return {}

    async def _dial_target(self, record: NameRecord) -> tuple[PeerId, str]:
        """Connect straight to the first reachable peer the record names;
        returns it and the address that answered."""
        errors: list[str] = []
        for target in record.peers:
            peer = PeerId.from_bytes(target.peer_id)
            if peer == self._host.peer_id:
                errors.append("the name points at this node")
                continue
            for raw in target.addrs:
                try:
                    addr = Multiaddr(raw)
                    if "/p2p-circuit" in str(addr):
                        # Behind a NAT, through its relay (the circuit transport).
                        addr = with_p2p(addr, peer)
                    else:
                        addr = parse_quic_multiaddr(addr).with_peer_id(peer).to_multiaddr()
                    await self._host.connect(addr)
                    return peer, str(addr)
                except (TransportError, RemoteProtocolError, InvalidMultiaddr) as exc:
                    errors.append(f"{Multiaddr(raw)}: {exc}")
        if not record.peers:
            raise ApiError(ErrorCode.DIAL_FAILED, f"{record.name} names no peer")
        raise DialError(f"no peer of {record.name} is reachable: " + "; ".join(errors))


# -- the daemon extension -------------------------------------------------------------


class NameExtension:
    """Runs naming inside the daemon: ``Daemon(..., extensions=[dht,
    NameExtension(key, kad_of=lambda d: d.kad, dns=("127.0.0.1", 5335))])``.
    It must come after the DHT extension, whose kad service it uses."""

    def __init__(
        self,
        key: PrivateKey,
        kad_of: Callable[[Any], KadLike],
        config: NameServiceConfig | None = None,
        *,
        dns: tuple[str, int] | None = None,
        dns_required: bool = True,
        state_dir: str = "names",
    ) -> None:
        """``kad_of(daemon)`` finds the daemon's running kad service;
        ``dns`` is the DNS front's address (None disables it).  When
        ``dns_required`` is false (the built-in default address), a port
        that cannot be bound only disables the front with a warning, so a
        second daemon on one machine still starts.  The state files live in
        ``<home>/<state_dir>``."""
        self._key = key
        self._kad_of = kad_of
        self.config = config or NameServiceConfig()
        self.dns = dns
        self.dns_required = dns_required
        self.state_dir = state_dir
        self.names: NameService | None = None
        self.dns_address: tuple[str, int] | None = None
        self.dns_front: DnsFront | None = None
        """The running DNS front (its limit counters feed ``overlay stats``)."""
        """The bound DNS address once running (port 0 resolved)."""
        self.name_ops: NameOps | None = None
        """The running name ops (the virtual-IP extension hooks into them)."""

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[NameService]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[NameService]:
        kad = self._kad_of(daemon)
        if NAMESPACE_ID not in kad.registry.namespaces():
            register_name_namespace(kad.registry, self.config.naming)
        host = daemon.host
        directory = Path(daemon.home.root) / self.state_dir
        directory.mkdir(mode=0o700, exist_ok=True)
        async with AsyncExitStack() as stack:
            names = await stack.enter_async_context(NameService(
                self._key, KadNameClient(kad), directory, self.config,
                # Advertised: a node behind a NAT is reached at its relay's
                # /p2p-circuit addresses.
                self_addrs=lambda: tuple(a.to_bytes() for a in host.advertised_addrs())))
            self.name_ops = NameOps(names, host, daemon.ops.pumps)
            self.name_ops.register(daemon.api)
            if self.dns is not None:
                front = DnsFront(
                    DnsFrontConfig(self.dns[0], self.dns[1], zone=self.config.naming.zone),
                    names.resolve, names.resolver.cached)
                try:
                    await stack.enter_async_context(front)
                except OSError as exc:
                    where = f"{self.dns[0]}:{self.dns[1]}"
                    if self.dns_required:
                        raise ListenFailed(f"cannot serve DNS on {where}: "
                                           f"{exc.strerror or exc}") from exc
                    log.warning("DNS front disabled: cannot bind %s (%s)", where,
                                exc.strerror or exc)
                else:
                    self.dns_address = front.address
                    self.dns_front = front
            self.names = names
            try:
                yield names
            finally:
                self.names = None


def naming_extensions(
    key: PrivateKey,
    *,
    dns: tuple[str, int] | None = None,
    dns_required: bool = True,
    names: NameServiceConfig | None = None,
    kad: KadServiceConfig | None = None,
    dht_state_file: str | None = "dht/records.log",
) -> tuple[DhtExtension, NameExtension]:
    """The DHT and naming extensions, wired together: the DHT's record
    store knows the name namespace from the start (so persisted name
    records survive its load), and naming runs on the DHT's service."""
    config = names or NameServiceConfig()
    registry = default_registry()
    register_name_namespace(registry, config.naming)
    dht = DhtExtension(kad, registry=registry, state_file=dht_state_file)

    def kad_of(daemon: Any) -> KadLike:
        if dht.kad is None:
            raise ApiError(ErrorCode.FAILED, "the DHT is not running")
        return dht.kad

    return dht, NameExtension(key, kad_of, config, dns=dns, dns_required=dns_required)
