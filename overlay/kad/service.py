"""The Kademlia network service: the only asyncio code of ``overlay.kad``.

``async with KadService(host, config) as kad:`` serves the kad protocol
(server mode), learns DHT servers from identify, answers the routing
table's liveness checks, runs lookups with real requests and keeps a
single maintenance timer (bucket refresh, republish, expiry: see
``net_maintenance``).  Every task it starts belongs to its TaskGroup and
ends when the block does.

Decisions the pure core leaves to the driver:

- Only peers that answered us on the kad protocol enter the routing table
  (a peer whose identify lists it is asked once first), and its IP-prefix
  group is that of the connection's *observed* address, never of the
  addresses it claims.  Peers merely named in closer-peer lists are
  lookup candidates and nothing more.
- Request timeouts come from measured round trips (``overlay.kad.rtt``):
  a peer that stopped answering costs a lookup a fraction of a second.
- Who enters and leaves the table, which checks run and when to bootstrap
  again is the pure ``overlay.kad.behaviour``'s decision (the simulator
  drives the same class); this service reports events to it and carries
  out its actions (``_pump``), the checks through ``net_health``: a failed
  request evicts at once (a timeout on a live connection first gets one
  ping), a peer that announced its shutdown leaves at once, a connection
  that merely closed is checked.
- The closest peers of a record key are found with a GET_VALUE lookup,
  since some implementations refuse FIND_NODE for keys that are no peer ID.
- Requests use one stream each; inbound streams may carry many requests
  (``net_rpc`` and ``net_server``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

from multiaddr import Multiaddr

from overlay.errors import ConnectionClosed, OverlayError
from overlay.host.events import HostListener
from overlay.host.identify import IdentifyInfo
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.kad.behaviour import BehaviourConfig, KadBehaviour, RefreshBuckets, StartBootstrap
from overlay.kad.bootstrap_report import BootstrapReport
from overlay.kad.handler import KadServer, PeerSource, handle_request
from overlay.kad.keyspace import Contact, peer_key
from overlay.kad.lookup import LookupKind, LookupResult
from overlay.kad.messages import ConnectionType, KadMessage, MessageType, PeerInfo
from overlay.kad.net_health import HealthMonitor
from overlay.kad.net_maintenance import KadMaintenance
from overlay.kad.net_peers import collect_addrs, connect_any
from overlay.kad.net_public_lookup import OnAnswer, OnFailure, OnPeers, ServiceLookups
from overlay.kad.net_rpc import KadHost, KadRpc, KadStats, LookupStats, quic_addr
from overlay.kad.net_server import InboundLimits, KadInbound
from overlay.kad.net_values import KadValues
from overlay.kad.providers import ProviderStore
from overlay.kad.records import NamespaceRegistry, Record, default_registry
from overlay.kad.policy import NodePolicy
from overlay.kad.republish import Republisher
from overlay.kad.routing import RoutingTable, observed_groups, runs_on_local
from overlay.limits import LimitHits, source_key
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import PeerNotFound, ServiceNotRunning
from overlay.kad.store import MemoryRecordStore, RecordStore
from overlay.supervisor import RestartPolicy, Supervisor

# KadHost and the stats types live in net_rpc, the lookup hooks in
# net_public_lookup; they are re-exported here.
__all__ = ["KadHost", "KadService", "KadStats", "LookupStats", "OnAnswer", "OnFailure", "OnPeers"]

log = logging.getLogger(__name__)

_MAX_CONTACT_ADDRS = 8
_ABANDONED = 0.8
"""A request cancelled after this share of its timeout counts as timed out."""


class KadService:
    """Kademlia over a ``Host``; use as ``async with KadService(...) as kad``."""

    def __init__(
        self,
        host: KadHost,
        config: KadServiceConfig | None = None,
        *,
        registry: NamespaceRegistry | None = None,
        records: RecordStore | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        inbound_limits: InboundLimits | None = None,
    ) -> None:
        """``inbound_limits``: streams one peer or one source may hold."""
        self.host = host
        self.config = config or KadServiceConfig()
        cfg = self.config
        self.peer_id = host.peer_id
        self.local_key = peer_key(self.peer_id)
        self.registry = registry or default_registry()
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall = wall_clock
        self.table = RoutingTable(self.local_key, cfg.routing, self._rng, clock())
        self.records: RecordStore = (
            records if records is not None else MemoryRecordStore(cfg.store, self.registry)
        )
        self.providers = ProviderStore(cfg.providers)
        self.republisher = Republisher(cfg.republish)
        self.stats = KadStats()
        self.activity = asyncio.Event()
        """Set whenever a request was served or a background job ended, so
        callers can wait for state changes instead of polling."""
        self._listener = HostListener(
            connected=self._on_connected, identified=self._on_identified, closed=self._on_closed
        )
        self._sup = Supervisor("kad", log)
        self._started = False
        self._closing = False
        self._wake = asyncio.Event()
        self._background = asyncio.Semaphore(cfg.background_concurrency)
        self._rpc = KadRpc(host, cfg, self.stats, clock)
        self.rtt = self._rpc.rtt
        """Round-trip estimates behind every request timeout."""
        self.behaviour = KadBehaviour(
            self.table, self._rng,
            BehaviourConfig(rebootstrap=bool(cfg.bootstrap), max_retry_delay=cfg.max_timer_delay),
            rtt=self.rtt,
        )
        """Routing policy, checks and re-bootstrap decisions (pure)."""
        self.policy: NodePolicy = self.behaviour.policy
        self._health = HealthMonitor(
            host, self.behaviour, self._rpc, clock, self._spawn, self._background, self.activity,
            pump=self._pump, seen=self._server_contact,
        )
        self.limit_hits = LimitHits()
        """Inbound limits hit, by cause (``overlay stats``)."""
        self._inbound = KadInbound(cfg, self._answer, self._reject, inbound_limits,
                                   hits=self.limit_hits, clock=clock)
        self._local_kind: tuple[float, bool] | None = None
        self._local_cache: tuple[float, PeerInfo] | None = None
        self._lookup = ServiceLookups(
            cfg, self.peer_id, self.table, self.registry, self.stats, request=self.request,
            timeout_for=self._rpc.timeout_for, admit=self._add_server, closer=self._closer_contacts,
            require_running=self._require_running, clock=clock, wall=self._wall,
            connected=lambda peer: peer in self.host.peers(),
        ).run
        self._values = KadValues(
            cfg, self.registry, self.records, self.providers, self.republisher,
            lookup=self._lookup, request=self.request, send_only=self._rpc.send_only,
            local_info=self._local_info, wall=self._wall, wake=self._wake,
            background=self._background, spawn=self._spawn, require_running=self._require_running,
        )
        self._maintenance = KadMaintenance(
            cfg, self.peer_id, self.behaviour, self.republisher, self._values,
            lookup=self._lookup, pump=self._pump, rng=self._rng, clock=clock, wall=self._wall, wake=self._wake,
            spawn=self._spawn, closing=lambda: self._closing, log=log,
        )

    @property
    def bootstrapped(self) -> asyncio.Event:
        """Set once a bootstrap has run to the end."""
        return self._maintenance.bootstrapped

    async def wait_bootstrapped(self) -> None:
        """Until a bootstrap has run to the end; at once if the service
        has no bootstrap peers configured."""
        if self.config.bootstrap:
            await self._maintenance.bootstrapped.wait()

    def round_trip(self) -> float | None:
        """The smoothed round-trip time to kad peers in seconds (recent
        answers), or None before any was measured."""
        warm = self.rtt.warm
        return warm.srtt if warm.samples else None

    @property
    def last_bootstrap(self) -> BootstrapReport | None:
        """What the latest bootstrap reached, and why not (see its ``summary``)."""
        return self._maintenance.last_bootstrap

    @property
    def protocol(self) -> str:
        return self.config.protocol_id

    @property
    def checks_pending(self) -> int:
        """Liveness checks and admissions (a peer identify named, asked
        once before it enters the table) still under way."""
        return self._health.pending

    @property
    def inbound_streams(self) -> int:
        """Inbound kad streams being served now."""
        return self._inbound.active

    @property
    def is_server(self) -> bool:
        return self.config.mode == "server"

    # -- lifetime ------------------------------------------------------------

    async def __aenter__(self) -> KadService:
        if self._started or self._closing:
            raise ServiceNotRunning("a kad service can be started once")
        self._started = True
        await self._sup.__aenter__()
        self.host.add_listener(self._listener)
        if self.is_server:
            self.host.set_stream_handler(self.protocol, self._inbound.handle_stream)
        # Peers identified before we started: asked once, as identify would.
        for peer in self.host.peers():
            if self.host.peerstore.supports(peer, self.protocol):
                self._verify_server(peer)
        # Maintenance must outlive a failing pass (a store that cannot write,
        # a bug in a policy): the loop restarts after back-off.
        self._spawn(self._maintenance.timer_loop, "kad maintenance timer", restart=RestartPolicy())
        if self.config.bootstrap:
            self.behaviour.start_bootstrap()
            self._spawn(self._maintenance.bootstrap_in_background, "kad bootstrap")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self.host.remove_listener(self._listener)
        if self.is_server:
            self.host.remove_stream_handler(self.protocol)
        if not self._started:
            raise ServiceNotRunning("the kad service was not started")
        await self._sup.aclose()

    def _spawn(self, job: Callable[[], Coroutine[Any, Any, None]], what: str, *,
               restart: RestartPolicy | None = None) -> None:
        # A failing background job is logged by the supervisor, and neither
        # the service nor the host goes down with it.
        if not self._sup.running or self._closing:
            return
        self._sup.spawn(partial(self._signalled, job), what, restart=restart)

    async def _signalled(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await job()
        finally:
            self.activity.set()  # waiters re-check state after any job ends

    def _require_running(self) -> None:
        if not self._sup.running or self._closing:
            raise ServiceNotRunning("the kad service is not running (use `async with`)")

    # -- routing table ---------------------------------------------------------

    def _contact_addrs(self, peer: PeerId, fallback: Iterable[bytes] = ()) -> tuple[bytes, ...]:
        known = [a.to_bytes() for a in self.host.peerstore.addrs(peer) if quic_addr(a.to_bytes(), peer)]
        if not known:
            known = [a for a in fallback if quic_addr(a, peer) is not None]
        return tuple(dict.fromkeys(known))[:_MAX_CONTACT_ADDRS]

    def _exempt_local(self) -> bool:
        # Loopback and private sources are exempt from the diversity limits
        # only on a node that itself runs on such an address (a lab, a LAN).
        now = self._clock()
        cached = self._local_kind
        if cached is not None and cached[0] > now:
            return cached[1]
        ips = [str(a).split("/")[2] for a in self.host.listen_addrs()
               if str(a).startswith(("/ip4/", "/ip6/"))]
        exempt = self.config.routing.exempt_local and runs_on_local(ips)
        self._local_kind = (now + 1.0, exempt)
        return exempt

    def _observed_ip(self, peer: PeerId) -> str | None:
        best = getattr(self.host, "best_connection", None)
        conn = best(peer) if best is not None else None
        address = getattr(conn, "remote_address", None) if conn is not None else None
        return address[0] if address is not None else None

    def _server_contact(self, peer: PeerId, fallback: Iterable[bytes] = ()) -> Contact:
        """``peer`` as the table keeps it: grouped by its observed address."""
        groups = observed_groups(self._observed_ip(peer), exempt_local=self._exempt_local())
        return Contact(peer, peer_key(peer), self._contact_addrs(peer, fallback), groups)

    def _add_server(self, peer: PeerId, fallback: Iterable[bytes] = ()) -> None:
        """``peer`` answered one of our lookups: admit it."""
        self.behaviour.on_answered(self._server_contact(peer, fallback), self._clock())
        self._pump()

    def _pump(self) -> None:
        """Carry out what the behaviour decided."""
        if self._closing:
            return
        actions = self.behaviour.poll(self._clock())
        for action in actions:
            if isinstance(action, StartBootstrap):
                self._spawn(self._maintenance.bootstrap_in_background, "kad re-bootstrap")
            elif isinstance(action, RefreshBuckets):
                targets = list(action.targets)
                self._spawn(partial(self._maintenance.refresh_buckets_for, targets), "kad bucket refresh")
            else:
                self._health.carry_out(action)
        if actions:
            self._wake.set()  # a bucket check brings the timer's deadline nearer

    def _verify_server(self, peer: PeerId) -> None:
        """Identify says ``peer`` serves kad: it enters once it answers."""
        self.behaviour.on_identified(self._server_contact(peer), is_server=True, now=self._clock())
        self._pump()

    def _on_identified(self, peer: PeerId, info: IdentifyInfo) -> None:
        if self._closing or not info.has_protocols:
            return
        if self.protocol in info.protocols:
            self._verify_server(peer)
        else:
            self.behaviour.on_identified(Contact.of(peer), is_server=False, now=self._clock())
        self.activity.set()

    def _on_connected(self, peer: PeerId, conn: Connection) -> None:
        # The handshake measured the path already: a first estimate for
        # this peer before any kad request.
        rtt = conn.smoothed_rtt
        if rtt is not None:
            self.rtt.sample(peer, rtt, self._clock())

    def _on_closed(self, peer: PeerId, reason: ConnectionClosed | None) -> None:
        if not self._closing:
            self._health.closed(peer, reason)

    # -- serving -----------------------------------------------------------------

    def _local_info(self) -> PeerInfo:
        # Expanding a wildcard listen address walks the interfaces; once a
        # second is often enough for what we tell others about ourselves.
        now = self._clock()
        cached = self._local_cache
        if cached is not None and cached[0] > now:
            return cached[1]
        addrs = tuple(a.to_bytes() for a in self.host.listen_addrs())
        info = PeerInfo(self.peer_id, addrs[: self.config.server.max_addrs_per_peer])
        self._local_cache = (now + 1.0, info)
        return info

    def _server(self) -> KadServer:
        return KadServer(self._local_info(), self.table, self.records, self.providers,
                         self.config.server, connected_peer=self._connected_peer,
                         peer_source=self._peer_source)

    def _peer_source(self, peer: PeerId) -> PeerSource:
        """The IP prefix and observed address of ``peer``'s connection (a
        direct one whenever there is one, as requests use); the quotas of
        the record and provider stores count by them."""
        best = getattr(self.host, "best_connection", None)
        conn = best(peer) if best is not None else None
        if conn is None:
            return None, ()
        address = conn.remote_address
        observed = (conn.remote_multiaddr.to_bytes(),)
        if address is None:
            # Relayed: every peer behind one relay counts as one source, and
            # its circuit address is where it was seen.
            return f"other:{conn.remote_multiaddr}", observed
        return source_key(address[0]), observed

    def _connected_peer(self, peer: PeerId) -> PeerInfo | None:
        """A peer we hold a connection to, with the addresses identify gave
        us; clients (e.g. behind a NAT) never enter the table, yet someone
        looking for one by ID should learn where it is."""
        if peer not in self.host.peers() or self.table.recently_failed(peer, self._clock()):
            return None
        addrs = self._contact_addrs(peer)
        return PeerInfo(peer, addrs, ConnectionType.CONNECTED) if addrs else None

    def _reject(self, peer: PeerId, exc: OverlayError) -> None:
        self.stats.inbound_rejected += 1
        self.stats.inbound_errors.append((peer, exc))
        self.activity.set()
        log.debug("kad request from %s rejected: %r", peer, exc)

    def _answer(self, request: KadMessage, peer: PeerId) -> KadMessage | None:
        response = handle_request(self._server(), request, peer, self._wall())
        self.stats.requests_served += 1
        self.activity.set()
        if request.type is MessageType.PUT_VALUE and request.record is not None:
            self.republisher.stored(request.record.key, self._wall())
            self._wake.set()
        return response

    async def request(
        self, contact: Contact, message: KadMessage, *, lazy: bool | None = None
    ) -> KadMessage:
        """Send ``message`` to ``contact`` on a fresh stream and return its
        checked answer within the timeout measured round trips give
        ``contact``; raises overlay errors or ``TimeoutError``.  A failure
        also tells the routing policy (the peer may be evicted)."""
        timeout = self._rpc.timeout_for(contact)
        started = self._clock()
        try:
            return await self._rpc.request(contact, message, timeout=timeout, lazy=lazy)
        except (OverlayError, TimeoutError, OSError) as exc:
            if not self._closing:
                self._health.request_failed(contact.peer_id, exc)
            raise
        except asyncio.CancelledError:
            # A lookup gives up on a silent peer at (about) this same
            # timeout and cancels the request before it can time out
            # itself: that silence is a timeout all the same.
            if not self._closing and self._clock() - started >= _ABANDONED * timeout:
                self._health.request_failed(contact.peer_id, TimeoutError("abandoned after its timeout"))
            raise

    def _closer_contacts(self, answer: KadMessage) -> list[Contact]:
        """The closer peers of ``answer`` worth asking: not us, and not a
        peer that recently failed us (others may still name it)."""
        contacts = [info.contact() for info in answer.closer_peers if info.peer_id != self.peer_id]
        return self.behaviour.worth_asking(contacts, self._clock())

    # -- lookups (``net_public_lookup``) ------------------------------------------

    async def lookup(
        self,
        kind: LookupKind,
        key: bytes,
        *,
        quorum: int | None = None,
        timeout: float | None = None,
        on_peers: OnPeers | None = None,
        on_answer: OnAnswer | None = None,
        on_failure: OnFailure | None = None,
    ) -> LookupResult:
        """Look ``key`` up in the network (a peer ID's bytes for FIND_NODE)
        and report each peer named, each answer and each failure through
        the hooks as it happens (see ``overlay.kad.net_public_lookup``).
        GET_VALUE stops at ``quorum`` valid records (``get_quorum`` by
        default; 0 runs to the end); the whole lookup ends within
        ``timeout`` seconds (``lookup_timeout`` by default).  The result
        says how many of the closest peers answered, failed or stayed
        silent.  Raises ``NoPeersKnown`` on an empty routing table."""
        return await self._lookup(kind, key, quorum=quorum, timeout=timeout, on_peers=on_peers,
                                  on_answer=on_answer, on_failure=on_failure)

    async def find_closest(self, target: bytes) -> LookupResult:
        """FIND_NODE for ``target`` (a peer ID's bytes or any key)."""
        return await self._lookup(LookupKind.FIND_NODE, target)

    async def lookup_peer(self, peer: PeerId) -> list[Multiaddr]:
        """Always ask the network (never only the local state) where
        ``peer`` is; empty if nobody knows."""
        found: dict[Multiaddr, None] = {}
        watch = collect_addrs(peer, found)
        result = await self._lookup(LookupKind.FIND_NODE, peer.multihash, stop_when_found=True,
                                    on_answer=lambda _contact, answer: watch(answer))
        if result.target_found:
            # It answered us, so its identify-verified addresses are best.
            found = dict.fromkeys([*self.host.peerstore.addrs(peer), *found])
        return list(found)

    async def find_peer(self, peer: PeerId) -> list[Multiaddr]:
        """Addresses of ``peer``: from a live connection if there is one,
        else through the DHT.  Raises ``PeerNotFound``."""
        if peer == self.peer_id:
            return self.host.listen_addrs()
        if peer in self.host.peers():
            known = self.host.peerstore.addrs(peer)
            if known:
                return known
        addrs = await self.lookup_peer(peer)
        if not addrs:
            raise PeerNotFound(peer)
        return addrs

    async def connect_peer(self, peer: PeerId) -> Connection:
        """Dial ``peer`` knowing only its ID: find its addresses through the
        DHT, then try each.  Raises ``PeerNotFound`` or the last dial error."""
        return await connect_any(self.host, peer, await self.find_peer(peer))

    # -- bootstrap and refresh (``net_maintenance``) ----------------------------------

    async def bootstrap(self, addrs: Sequence[str] | None = None) -> LookupResult:
        """Look up our own ID through the bootstrap peers (and whatever the
        table holds), then refresh the buckets.  Sets ``bootstrapped``."""
        return await self._maintenance.bootstrap(addrs)

    async def refresh_buckets(self) -> int:
        """One FIND_NODE for a random ID in each bucket from the farthest to
        our nearest occupied one; returns how many lookups ran."""
        return await self._maintenance.refresh_buckets()

    async def refresh_buckets_for(self, targets: Sequence[PeerId]) -> None:
        """One FIND_NODE for each of ``targets``."""
        await self._maintenance.refresh_buckets_for(targets)

    # -- values and providers (``net_values``) ----------------------------------

    async def put_value(self, key: bytes, value: bytes) -> int:
        """Store ``key`` → ``value`` here and on the k closest peers;
        returns how many peers echoed it.  Raises ``InvalidRecord`` if our
        own validators reject it, ``QuorumFailed`` below ``min_put_acks``."""
        return await self._values.put_value(key, value)

    async def store_at(self, peer: PeerId, record: Record) -> None:
        """PUT_VALUE ``record`` to ``peer`` alone (say, one that answered a
        lookup with an outdated record); raises overlay errors or
        ``TimeoutError`` unless it echoed the record."""
        message = KadMessage(MessageType.PUT_VALUE, record.key, record=record)
        await self.request(Contact.of(peer), message)

    def local_record(self, key: bytes) -> Record | None:
        """The unexpired record this node stores for ``key``, if any."""
        stored = self.records.get(key, self._wall())
        return stored.record if stored is not None else None

    def store_local(self, record: Record) -> None:
        """Store ``record`` on this node only (no republishing); raises
        ``InvalidRecord`` (or a store error) if the store's policy refuses it."""
        self.records.put(record, None, self._wall())

    async def put_immutable(self, value: bytes) -> bytes:
        """Store ``value`` under ``/v/<sha256 hex>`` and return that key."""
        return await self._values.put_immutable(value)

    async def get_value(self, key: bytes, quorum: int | None = None) -> Record:
        """The best valid record for ``key`` (ours counts); stale peers are
        corrected and the closest peer without it caches it, in the
        background.  Raises ``ValueNotFound``."""
        return await self._values.get_value(key, quorum)

    async def provide(self, key: bytes) -> int:
        """Announce that we provide ``key`` (a multihash, at most 80 bytes)
        to the k closest peers; returns how many were told."""
        return await self._values.provide(key)

    async def find_providers(self, key: bytes, limit: int | None = None) -> list[PeerInfo]:
        """Providers of ``key``: ours and those the network knows."""
        return await self._values.find_providers(key, limit)

    # -- maintenance (``net_maintenance``) ---------------------------------------------

    def wake_timer(self) -> None:
        """Recompute the maintenance deadline now (after a clock jump)."""
        self._maintenance.wake_timer()
