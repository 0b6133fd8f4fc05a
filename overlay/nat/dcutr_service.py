"""The DCUtR driver: carries out ``overlay.nat.dcutr_core``'s actions on a host.

When the host adopts a relayed connection on which we are the inbound
side, we start (the spec's B), all at once: a direct dial to the peer's
advertised addresses once identify brought them (the spec's unilateral
upgrade), the ``pre_punch`` exchange (birthday punching's HELLO) and the
``/libp2p/dcutr`` CONNECT on a lazily negotiated stream of the relayed
connection.  SYNC waits for ``pre_punch``'s decision and, briefly, for the
unilateral dial; then punch packets from the listening sockets, and the
peer's QUIC dial accepted by the endpoint's ordinary accept loop.  The dialling side (the spec's A)
answers in the stream handler and dials as the QUIC client.

A direct connection that a punch produced is adopted by the host (which
already prefers direct connections for new streams) and marked
``host.mark_punched``.  The relayed connection it replaces is closed once
no stream is open on it any more, or after ``relayed_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from multiaddr import Multiaddr

from overlay.errors import (
    InvalidMultiaddr,
    LimitExceeded,
    OverlayError,
    TransportError,
)
from overlay.host.addrs import is_ipv6, is_loopback
from overlay.host.events import HostListener
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, RELAYED, Connection
from overlay.identity import PeerId
from overlay.multiaddrs import parse_circuit_multiaddr, parse_quic_multiaddr, split_p2p
from overlay.nat.dcutr_core import (
    Action,
    AddrContext,
    Candidate,
    DcutrConfig,
    DcutrInitiator,
    DcutrResponder,
    Dial,
    Failed,
    PunchLimiter,
    SendMessage,
    SendPunchPackets,
    Succeeded,
    filter_addrs,
)
from overlay.nat.dcutr_messages import MAX_ADDRS, MAX_MESSAGE_SIZE, PROTOCOL, decode, encode
from overlay.supervisor import Supervisor
from overlay.wire.varint import frame, read_frame

__all__ = ["DcutrService", "DcutrServiceConfig", "Outcome"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DcutrServiceConfig:
    core: DcutrConfig = DcutrConfig()
    """The protocol's timings, caps and rate limit."""
    unilateral: bool = True
    """Before the exchange, dial the peer's advertised direct addresses
    (the spec's unilateral upgrade: it works when the peer is public)."""
    unilateral_timeout: float = 2.0
    identify_wait: float = 2.0
    """Seconds the initiator waits for identify to bring the peer's addresses."""
    relayed_grace: float = 60.0
    """Seconds a replaced relayed connection may keep open streams before
    it is closed anyway."""
    idle_check: float = 0.25
    """Seconds between checks whether a replaced relayed connection is idle."""

    def __post_init__(self) -> None:
        if min(self.unilateral_timeout, self.identify_wait, self.relayed_grace,
               self.idle_check) <= 0:
            raise ValueError("DCUtR service timeouts must be positive")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished session, as ``status()`` reports it."""

    peer: str
    role: str
    ok: bool
    how: str
    """``punched``, ``unilateral``, ``already direct`` or the failure reason."""
    attempts: int
    rtt: float | None
    elapsed: float
    """Seconds from the relayed connection's arrival (or the stream's) to the end."""
    exchange: float | None = None
    """Seconds from our first DCUtR message (initiator) to the end: the
    punch itself, without identify and the unilateral dial before it."""


@runtime_checkable
class _Punchable(Protocol):
    @property
    def local_address(self) -> tuple[str, int]: ...

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...


_DIRECT = object()
"""In a session's inbox: a direct connection to the peer was adopted."""


class _Session:
    def __init__(self, peer: PeerId, role: str) -> None:
        self.peer = peer
        self.role = role
        self.task = asyncio.current_task()
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        """Frames (bytes), EOF (None), read errors, and ``_DIRECT``."""
        self.unilateral = False
        """Our unilateral dial produced the direct connection."""
        self.rtt: float | None = None
        """The relayed round trip DCUtR measured."""


@dataclass(frozen=True, slots=True)
class _NotOpened:
    """In a session's inbox: the lazily opened stream failed before any frame."""

    error: OverlayError


class _TakenOver(Exception):
    """Inside ``_drive``: the ``pre_punch`` exchange took over before SYNC."""


class DcutrService:
    """``async with DcutrService(host, config) as dcutr:``.

    ``extra_addrs`` adds our own candidates (STUN-mapped addresses);
    ``rng`` makes punch payloads and spacing reproducible in tests."""

    def __init__(self, host: Any, config: DcutrServiceConfig | None = None, *,
                 extra_addrs: Callable[[], Iterable[str]] | None = None,
                 rng: random.Random | None = None) -> None:
        self._host = host
        self.config = config or DcutrServiceConfig()
        self._extra = extra_addrs or (lambda: ())
        self._rng = rng or random.Random()
        self._limiter = PunchLimiter(self.config.core)
        self._sessions: dict[PeerId, _Session] = {}
        self._sup = Supervisor("dcutr", log)
        self._listener = HostListener(opened=self._on_opened)
        self.outcomes: deque[Outcome] = deque(maxlen=64)
        self.counters: dict[str, int] = {
            "sessions": 0, "punched": 0, "unilateral": 0, "failed": 0,
            "refused_rate": 0, "refused_busy": 0, "protocol_errors": 0,
            "punch_packets": 0, "relayed_closed": 0, "birthday": 0,
        }
        self.pre_punch: Callable[[Connection, Callable[[bool], None]],
                                 Awaitable[tuple[bool, str] | None]] | None = None
        """Run by the initiator beside DCUtR's CONNECT (birthday punching).
        It calls its second argument once it knows whether it takes over
        (True: DCUtR stops before SYNC, and what it returns, (ok, how), is
        the session's outcome; False: DCUtR goes on)."""
        self.activity = asyncio.Event()
        """Set whenever a session ended (``outcomes`` and the counters
        changed) or a replaced relayed connection was closed, so callers can
        wait for state changes instead of polling."""

    async def __aenter__(self) -> DcutrService:
        await self._sup.__aenter__()
        self._host.set_stream_handler(PROTOCOL, self._handle)
        self._host.add_listener(self._listener)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._host.remove_listener(self._listener)
        if self._host.is_running:
            self._host.remove_stream_handler(PROTOCOL)
        await self._sup.aclose()

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "active": sorted(str(p) for p in self._sessions),
            "counters": dict(self.counters),
            "recent": [
                {"peer": o.peer, "role": o.role, "ok": o.ok, "how": o.how,
                 "attempts": o.attempts,
                 "rtt_ms": None if o.rtt is None else round(o.rtt * 1000, 1),
                 "elapsed_ms": round(o.elapsed * 1000, 1),
                 "exchange_ms": None if o.exchange is None else round(o.exchange * 1000, 1)}
                for o in self.outcomes],
        }

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if outcome.ok:
            key = "punched" if outcome.how == "punched" else "unilateral"
            if outcome.how in ("punched", "unilateral"):
                self.counters[key] += 1
            elif outcome.how.startswith("birthday"):
                self.counters["birthday"] += 1
        else:
            self.counters["failed"] += 1
        log.info("DCUtR with %s as %s: %s (%s) after %d attempt(s) in %.3f s",
                 outcome.peer, outcome.role, "direct" if outcome.ok else "still relayed",
                 outcome.how, outcome.attempts, outcome.elapsed)
        self.activity.set()

    # -- host events -------------------------------------------------------------

    def _on_opened(self, conn: Connection) -> None:
        if conn.path == DIRECT:
            session = self._sessions.get(conn.remote_peer)
            if session is not None:
                session.inbox.put_nowait(_DIRECT)
            return
        if conn.path != RELAYED or conn.is_initiator or not self._sup.running:
            return
        # We were dialled through a relay: the spec's B starts.
        self._sup.spawn(lambda: self._initiate(conn), f"DCUtR upgrade of {conn.remote_peer}")

    def upgrade(self, relayed: Connection) -> None:
        """Start the upgrade of ``relayed`` now, as the initiator, as if it
        had just arrived (whichever side dialled it)."""
        if relayed.path != RELAYED:
            raise ValueError("only a relayed connection can be upgraded")
        self._sup.spawn(lambda: self._initiate(relayed), f"DCUtR upgrade of {relayed.remote_peer}")

    def _begin(self, peer: PeerId, role: str) -> _Session | None:
        if peer in self._sessions:
            self.counters["refused_busy"] += 1
            return None
        if not self._limiter.allow(peer, time.monotonic()):
            self.counters["refused_rate"] += 1
            log.info("DCUtR with %s refused: over %d sessions in %.0f s", peer,
                     self.config.core.sessions_per_peer, self.config.core.session_window)
            return None
        session = _Session(peer, role)
        self._sessions[peer] = session
        self.counters["sessions"] += 1
        return session

    # -- our addresses and what contradicts the peer's ----------------------------

    def _own_addrs(self) -> list[bytes]:
        host = self._host
        found: dict[Multiaddr, None] = {}
        sources: list[Iterable[Any]] = [
            (addr for addr, _ in host.observed_addrs.addrs()),
            self._extra(), host.advertised_addrs(), host.listen_addrs()]
        for source in sources:
            for addr in source:
                try:
                    parsed = parse_quic_multiaddr(split_p2p(addr)[0])
                except InvalidMultiaddr:
                    continue
                if parsed.is_dns:
                    continue
                kind = "ip6" if is_ipv6(parsed.host) else "ip4"
                found.setdefault(Multiaddr(f"/{kind}/{parsed.host}/udp/{parsed.port}/quic-v1"))
        return [addr.to_bytes() for addr in list(found)[:MAX_ADDRS]]

    def address_context(self, peer: PeerId, relayed: Connection) -> AddrContext:
        """What ``peer``'s claimed addresses must agree with."""
        return self._context(peer, relayed)

    def _context(self, peer: PeerId, relayed: Connection) -> AddrContext:
        host = self._host
        own_ips: set[str] = set()
        taken: set[tuple[str, int]] = set()
        for addr in [*host.listen_addrs(), *(a for a, _ in host.observed_addrs.addrs())]:
            try:
                parsed = parse_quic_multiaddr(split_p2p(addr)[0])
            except InvalidMultiaddr:
                continue
            own_ips.add(parsed.host)
            taken.add((parsed.host, parsed.port))
        for conn in host.connections():
            remote = conn.remote_address
            if remote is not None and conn.remote_peer != peer:
                taken.add((str(remote[0]), int(remote[1])))
        ips: set[str] = set()
        try:
            relay = parse_circuit_multiaddr(relayed.remote_multiaddr).relay
        except InvalidMultiaddr:
            relay = None
        relay_conn = host.best_connection(relay) if relay is not None else None
        if relay_conn is not None and relay_conn.remote_address is not None:
            # A peer at the relay's address would not need the relay; in the
            # lab (and on loopback) every host may share one IP, so only the
            # relay's own port is ruled out there.
            relay_ip, relay_port = relay_conn.remote_address[:2]
            taken.add((str(relay_ip), int(relay_port)))
            if not self.config.core.allow_private:
                ips.add(str(relay_ip))
        return AddrContext(frozenset(own_ips), frozenset(taken), frozenset(ips))

    # -- the initiator (B) ---------------------------------------------------------

    async def _initiate(self, relayed: Connection) -> None:
        peer = relayed.remote_peer
        started = time.monotonic()
        session = self._begin(peer, "initiator")
        if session is None:
            return
        try:
            outcome = await self._initiate_session(session, relayed, started)
        finally:
            del self._sessions[peer]
        self._record(outcome)
        if outcome.ok:
            self._sup.spawn(lambda: self._retire(relayed), f"retire relayed {peer}")

    def _has_direct(self, peer: PeerId) -> bool:
        best = self._host.best_connection(peer)
        return best is not None and best.path == DIRECT

    async def _initiate_session(self, session: _Session, relayed: Connection,
                                started: float) -> Outcome:
        """Everything at once, so the CONNECT leaves with the relayed
        connection's arrival: the unilateral dial (after identify), the
        ``pre_punch`` exchange (birthday's HELLO) and DCUtR's CONNECT.  The
        SYNC waits for ``pre_punch``'s decision, which comes back with the
        CONNECT (one relayed round trip); when it takes over, DCUtR stops
        before SYNC.  In sequence these cost about four relayed round trips
        more (identify, two negotiations, HELLO)."""
        peer = session.peer
        cfg = self.config
        exchange_from: list[float] = []

        def outcome(ok: bool, how: str, attempts: int = 0, rtt: float | None = None) -> Outcome:
            now = time.monotonic()
            return Outcome(str(peer), "initiator", ok, how, attempts, rtt, now - started,
                           now - exchange_from[0] if exchange_from else None)

        if self._has_direct(peer):
            return outcome(True, "already direct")
        taken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def decided(takes_over: bool) -> None:
            if not taken.done():
                taken.set_result(takes_over)

        async with asyncio.TaskGroup() as tg:
            unilateral = (tg.create_task(self._unilateral(session, relayed))
                          if cfg.unilateral else None)
            pre = None
            if self.pre_punch is not None:
                pre = tg.create_task(self._pre_punch(self.pre_punch, relayed, decided))
            else:
                decided(False)

            async def before_sync() -> bool:
                """Whether to stop before SYNC: ``pre_punch`` took over, or
                the unilateral dial (identify, then at most
                ``unilateral_timeout``) found the peer, so nothing is punched
                for a public peer."""
                if await asyncio.shield(taken):
                    return True
                if unilateral is not None:
                    # Two relayed round trips (at least 0.2 s) are enough
                    # for a public peer to answer; an address that filters
                    # us (a restricted cone that AutoNAT confirmed, since
                    # its server's IP was let in) would hold SYNC for the
                    # whole ``unilateral_timeout``.
                    rtt = time.monotonic() - exchange_from[0]
                    await asyncio.wait([unilateral], timeout=max(0.2, 2 * rtt))
                return self._has_direct(peer)

            exchange_from.append(time.monotonic())
            try:
                result = await self._punch(session, relayed, before_sync)
                if (pre is not None and not isinstance(result, Succeeded)
                        and await asyncio.shield(taken)):
                    # ``pre_punch`` took over (or DCUtR could not start and
                    # it did): its outcome is the session's.
                    decision = await pre
                    if session.unilateral and self._has_direct(peer):
                        return outcome(True, "unilateral")  # it won while they talked
                    if decision is not None:
                        return outcome(decision[0], decision[1])
            finally:
                for task in (unilateral, pre):
                    if task is not None and not task.done():
                        task.cancel()
        if session.unilateral and self._has_direct(peer):
            return outcome(True, "unilateral")
        if isinstance(result, Succeeded):
            best = self._host.best_connection(peer)
            if best is not None and best.path == DIRECT:
                self._host.mark_punched(best)
            return outcome(True, "punched", result.attempt, result.rtt)
        if result is None:
            result = Failed("stopped before SYNC, and no direct connection came", 0)
        return outcome(False, result.reason, result.attempts, session.rtt)

    async def _pre_punch(self, hook: Callable[[Connection, Callable[[bool], None]],
                                              Awaitable[tuple[bool, str] | None]],
                         relayed: Connection, decided: Callable[[bool], None],
                         ) -> tuple[bool, str] | None:
        try:
            return await hook(relayed, decided)
        finally:
            decided(False)  # no-op once it decided; lets the SYNC go if it never did

    async def _punch(self, session: _Session, relayed: Connection,
                     before_sync: Callable[[], Awaitable[bool]]) -> Succeeded | Failed | None:
        """DCUtR proper; None when ``before_sync`` said to stop before SYNC."""
        if (self._host.peerstore.protocols(session.peer)
                and not self._host.peerstore.supports(session.peer, PROTOCOL)):
            return Failed("cannot open a DCUtR stream: the peer does not list it", 0)
        try:
            # Lazily: the CONNECT rides with the negotiation; a peer without
            # DCUtR refuses it at our first read.
            stream = await self._host.open_stream_on(relayed, [PROTOCOL], lazy=True)
        except OverlayError as exc:
            return Failed(f"cannot open a DCUtR stream: {exc}", 0)
        core = DcutrInitiator(self.config.core, self._own_addrs(),
                              self._context(session.peer, relayed), self._rng)
        try:
            return await self._drive(core, stream, session, self._punch_sender(core),
                                     before_sync)
        finally:
            session.rtt = core.rtt

    async def _unilateral(self, session: _Session, relayed: Connection) -> bool:
        cfg = self.config
        peer = session.peer
        try:
            async with asyncio.timeout(cfg.identify_wait):
                await self._host.identify_service.identify_connection(relayed)
        except (OverlayError, TimeoutError) as exc:
            log.debug("identify of %s before DCUtR: %r", peer, exc)
        addrs = [a.to_bytes() for a in self._host.peerstore.addrs(peer)
                 if self._is_quic(a)]
        kept, _ = filter_addrs(addrs, self._context(peer, relayed),
                               max_addrs=cfg.core.max_addrs,
                               allow_private=cfg.core.allow_private)
        if not kept:
            return False
        conn = await self._dial_any(peer, kept, cfg.unilateral_timeout, session)
        return conn is not None

    @staticmethod
    def _is_quic(addr: Multiaddr) -> bool:
        try:
            parse_quic_multiaddr(addr)
        except InvalidMultiaddr:
            return False
        return True

    def _punch_sender(self, core: DcutrInitiator) -> Callable[[SendPunchPackets], None]:
        def send(action: SendPunchPackets) -> None:
            for cand in action.addrs:
                endpoint = self._endpoint_for(cand.ip)
                if endpoint is None:
                    continue
                try:
                    endpoint.sendto(action.payload, (cand.ip, cand.port))
                    self.counters["punch_packets"] += 1
                except (OSError, TransportError) as exc:
                    log.debug("punch packet to %s:%d: %r", cand.ip, cand.port, exc)
        return send

    def _endpoint_for(self, ip: str) -> _Punchable | None:
        """A listening endpoint that can reach ``ip`` (the port the peer
        was told about is the one a NAT maps for it)."""
        for endpoint in self._host.endpoints():
            if not isinstance(endpoint, _Punchable):
                continue
            local = endpoint.local_address[0]
            if is_ipv6(local) == is_ipv6(ip) and (is_loopback(ip) or not is_loopback(local)):
                return endpoint
        return None

    # -- the responder (A) ---------------------------------------------------------

    async def _handle(self, stream: NegotiatedStream) -> None:
        conn = stream.conn
        peer = stream.remote_peer
        started = time.monotonic()
        if conn.path != RELAYED:
            stream.reset()  # DCUtR only makes sense over a relayed connection
            return
        await self._yield_to(peer)
        session = self._begin(peer, "responder")
        if session is None:
            stream.reset()
            return
        try:
            core = DcutrResponder(self.config.core, self._own_addrs(),
                                  self._context(peer, conn), self._rng, time.monotonic())
            result = await self._drive(core, stream, session, None)
            assert result is not None  # only a gate ends it without an outcome
        finally:
            del self._sessions[peer]
        elapsed = time.monotonic() - started
        if isinstance(result, Succeeded):
            self._record(Outcome(str(peer), "responder", True, "punched", result.attempt,
                                 None, elapsed))
            self._sup.spawn(lambda: self._retire(conn), f"retire relayed {peer}")
        else:
            self._record(Outcome(str(peer), "responder", False, result.reason,
                                 result.attempts, None, elapsed))

    async def _yield_to(self, peer: PeerId) -> None:
        """Both of us were dialled through a relay at once, so both started
        as initiator: the smaller peer ID keeps that role, and the other
        gives up its own session to answer."""
        ours = self._sessions.get(peer)
        if ours is None or ours.role != "initiator" or ours.task is None:
            return
        if self._host.peer_id.to_bytes() < peer.to_bytes():
            return  # we keep initiating; the busy check refuses their stream
        ours.task.cancel()
        await asyncio.wait([ours.task])

    async def _dial_any(self, peer: PeerId, addrs: Iterable[Candidate],
                        timeout: float, session: _Session | None = None) -> Connection | None:
        """Dial every address at once as the QUIC client; the first that
        connects is adopted by the host, the rest are cancelled."""
        transport = next((t for t in self._host.transports() if t.path == DIRECT), None)
        if transport is None:
            return None
        winner: list[Connection] = []

        async def one(cand: Candidate) -> None:
            try:
                conn = await transport.dial(cand.multiaddr, peer)
            except (OverlayError, OSError) as exc:
                log.debug("DCUtR dial to %s: %r", cand.multiaddr, exc)
                return
            if winner:
                conn.close(0, "another address won")
                return
            winner.append(conn)
            for task in tasks:
                if task is not asyncio.current_task():
                    task.cancel()

        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as tg:
                tasks.extend(tg.create_task(one(c)) for c in addrs)
        except TimeoutError:
            pass
        if not winner:
            return None
        conn = winner[0]
        if session is not None:
            # Before adopt(): its ``opened`` event ends the DCUtR exchange,
            # which then knows how the connection came.
            session.unilateral = True
        try:
            self._host.adopt(conn)
        except LimitExceeded as exc:
            log.info("direct connection to %s refused by the limits: %s", peer, exc)
            return None
        self._host.peerstore.add_addrs(peer, [conn.remote_multiaddr])
        return conn

    # -- the shared loop -------------------------------------------------------------

    async def _drive(self, core: DcutrInitiator | DcutrResponder, stream: NegotiatedStream,
                     session: _Session,
                     punch: Callable[[SendPunchPackets], None] | None,
                     gate: Callable[[], Awaitable[bool]] | None = None,
                     ) -> Succeeded | Failed | None:
        """Feed the core messages, timers and the direct connection's
        arrival; carry out its actions until it finishes.  The first message
        is fed only once ``gate()`` answered (with its arrival time, so the
        RTT holds); True ends the exchange before the reply: None."""

        async def reader() -> None:
            first = True
            while True:
                try:
                    data = await read_frame(stream, MAX_MESSAGE_SIZE)
                except OverlayError as exc:
                    # Before the first frame of a lazily opened stream this
                    # is the peer refusing the protocol, not a violation.
                    session.inbox.put_nowait(_NotOpened(exc) if first and gate else exc)
                    return
                first = False
                session.inbox.put_nowait(data)
                if data is None:
                    return

        pending: list[Action] = []
        if isinstance(core, DcutrInitiator):
            pending = core.start(time.monotonic())
        result: Succeeded | Failed | None = None
        async with asyncio.TaskGroup() as tg:
            read_task = tg.create_task(reader())
            try:
                while result is None:
                    for action in pending:
                        done = await self._carry_out(action, stream, session.peer, core, punch)
                        result = result or done
                    if result is None:
                        pending = await self._next_event(core, session, gate)
            except _TakenOver:
                read_task.cancel()
                try:
                    stream.write_eof()
                except OverlayError:
                    pass  # already gone: the other exchange goes on regardless
                return None
            except (OverlayError, OSError) as exc:
                # Writing failed: the stream or the relayed connection is gone.
                log.debug("DCUtR stream with %s failed: %r", session.peer, exc)
                result = core.outcome or Failed(f"the DCUtR stream failed: {exc}", core.attempt)
            finally:
                read_task.cancel()
        if isinstance(result, Failed) and result.protocol_error:
            self.counters["protocol_errors"] += 1
            stream.reset()
        else:
            try:
                stream.write_eof()
            except OverlayError:
                pass  # already gone: nothing left to tell the peer
        return result

    async def _next_event(self, core: DcutrInitiator | DcutrResponder,
                          session: _Session, gate: Callable[[], Awaitable[bool]] | None = None,
                          ) -> list[Action]:
        deadline = core.next_deadline()
        delay = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(delay):
                item = await session.inbox.get()
        except TimeoutError:
            return core.on_timer(time.monotonic())
        now = time.monotonic()
        if item is _DIRECT:
            return core.on_direct_connection(now)
        if item is None:
            if isinstance(core, DcutrInitiator) and core.state in ("waiting rtt/2", "punching"):
                # The responder ends its side once its dial is through, and
                # its EOF can beat the last handshake flight to us (half a
                # round trip): wait that long for the connection.
                grace = max(0.5, 2 * (core.rtt or 0.0))
                if await self._direct_within(session, grace):
                    return core.on_direct_connection(time.monotonic())
            return core.on_closed(now)
        if isinstance(item, _NotOpened):
            return [Failed(f"cannot open a DCUtR stream: {item.error}", core.attempt)]
        if isinstance(item, OverlayError):
            return core.on_closed(now, f"{type(item).__name__}: {item}")
        assert isinstance(item, bytes)
        try:
            message = decode(item)
        except OverlayError as exc:
            return core.on_closed(now, f"{type(exc).__name__}: {exc}")
        if gate is not None and core.attempt == 1 and await gate():
            raise _TakenOver
        return core.on_message(message, now)

    async def _direct_within(self, session: _Session, grace: float) -> bool:
        """Whether ``_DIRECT`` reaches the inbox within ``grace`` seconds
        (anything else there is dropped: the stream has ended)."""
        deadline = time.monotonic() + grace
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    item = await session.inbox.get()
            except TimeoutError:
                return self._has_direct(session.peer)
            if item is _DIRECT:
                return True

    async def _carry_out(self, action: Action, stream: NegotiatedStream, peer: PeerId,
                         core: DcutrInitiator | DcutrResponder,
                         punch: Callable[[SendPunchPackets], None] | None,
                         ) -> Succeeded | Failed | None:
        if isinstance(action, (Succeeded, Failed)):
            return action
        if isinstance(action, SendMessage):
            stream.write(frame(encode(action.message)))
            await stream.drain()
        elif isinstance(action, SendPunchPackets):
            if punch is not None:
                punch(action)
        elif isinstance(action, Dial) and isinstance(core, DcutrResponder):
            conn = await self._dial_any(peer, action.addrs, action.timeout)
            if conn is not None:
                self._host.mark_punched(conn)
            for follow in core.on_dial_result(conn is not None, time.monotonic()):
                done = await self._carry_out(follow, stream, peer, core, punch)
                if done is not None:
                    return done
        return None

    # -- after success ----------------------------------------------------------------

    async def _retire(self, relayed: Connection) -> None:
        """Close ``relayed`` once idle (its streams finish there) or after the grace."""
        cfg = self.config
        deadline = time.monotonic() + cfg.relayed_grace
        while not relayed.is_closed and time.monotonic() < deadline:
            count = getattr(relayed, "open_stream_count", None)
            if count == 0 and self._has_direct(relayed.remote_peer):
                break
            await asyncio.sleep(cfg.idle_check)
        if not relayed.is_closed and self._has_direct(relayed.remote_peer):
            relayed.close(0, "replaced by a direct connection")
            self.counters["relayed_closed"] += 1
            self.activity.set()
