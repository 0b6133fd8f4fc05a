"""The DCUtR driver: carries out ``overlay.nat.dcutr_core``'s actions on a host.

When the host adopts a relayed connection on which we are the inbound
side, we start as the spec's B (``dcutr_initiator.Initiator``); the
dialling side, the spec's A, answers in the stream handler
(``dcutr_responder.Responder``).  Both share the loop in
``dcutr_session.drive`` and the dials in ``dcutr_dial``.

Hints from the relay: a stop CONNECT from our relay names where the
peer's connection to it comes from (``overlay.relay.server``); on that,
before the relayed connection is even upgraded, we send a few punch
packets there (``on_stop_hint``, limited by ``dcutr_hints.HintPolicy``),
so that the peer's early dial on CONNECT passes our NAT.

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
from types import TracebackType
from typing import Any, Protocol

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, LimitExceeded
from overlay.host.addrs import is_ipv6
from overlay.host.events import HostListener
from overlay.host.transport_types import DIRECT, RELAYED, Connection
from overlay.identity import PeerId
from overlay.multiaddrs import parse_circuit_multiaddr, parse_quic_multiaddr, split_p2p
from overlay.nat.dcutr_core import AddrContext, Candidate, PunchLimiter, punch_payload
from overlay.nat.dcutr_dial import DialRace, send_packets
from overlay.nat.dcutr_hints import HintPolicy
from overlay.nat.dcutr_initiator import Initiator
from overlay.nat.dcutr_messages import MAX_ADDRS, PROTOCOL
from overlay.nat.dcutr_responder import Responder
from overlay.nat.dcutr_session import DcutrServiceConfig, DirectArrived, Outcome, Session
from overlay.supervisor import Supervisor

__all__ = ["DcutrService", "DcutrServiceConfig", "Outcome", "StopHintLike"]

log = logging.getLogger(__name__)


class StopHintLike(Protocol):
    """What ``on_stop_hint`` reads from ``overlay.relay.client.StopHint``."""

    @property
    def relay(self) -> PeerId: ...

    @property
    def peer(self) -> PeerId: ...

    @property
    def addrs(self) -> tuple[bytes, ...]: ...


class DcutrService:
    """``async with DcutrService(host, config) as dcutr:``.

    ``extra_addrs`` adds our own candidates (STUN-mapped addresses);
    ``rng`` makes punch payloads and spacing reproducible in tests;
    ``relay_client`` finds the relay client whose stop CONNECTs carry
    hints (looked up again until found, since the relay may start after
    us; ``on_stop_hint`` can also be registered by hand)."""

    def __init__(self, host: Any, config: DcutrServiceConfig | None = None, *,
                 extra_addrs: Callable[[], Iterable[str]] | None = None,
                 rng: random.Random | None = None,
                 relay_client: Callable[[], Any] | None = None) -> None:
        self.host = host
        self.config = config or DcutrServiceConfig()
        self._extra = extra_addrs or (lambda: ())
        self.rng = rng or random.Random()
        self._limiter = PunchLimiter(self.config.core)
        self._hints = HintPolicy(self.config.hints, self.config.core.allow_private)
        self._relay_client = relay_client
        self._detach: Callable[[], None] | None = None
        self._sessions: dict[PeerId, Session] = {}
        self._sup = Supervisor("dcutr", log)
        self._listener = HostListener(opened=self._on_opened)
        self._initiator = Initiator(self)
        self._responder = Responder(self)
        self.outcomes: deque[Outcome] = deque(maxlen=64)
        self.counters: dict[str, int] = {
            "sessions": 0, "punched": 0, "unilateral": 0, "failed": 0,
            "refused_rate": 0, "refused_busy": 0, "protocol_errors": 0,
            "punch_packets": 0, "relayed_closed": 0, "birthday": 0,
            "hints": 0, "hint_packets": 0, "hints_skipped": 0,
        }
        self.pre_punch: Callable[[Connection, Callable[[bool], None]],
                                 Awaitable[tuple[bool, str] | None]] | None = None
        """Run by the initiator beside DCUtR's CONNECT (birthday punching).
        It calls its second argument once it knows whether it takes over
        (True: DCUtR stops before SYNC, and what it returns, (ok, how), is
        the session's outcome; False: DCUtR goes on)."""
        self.handover: Callable[[PeerId], Awaitable[tuple[bool, str] | None]] | None = None
        """Asked by the responder when the initiator stopped before SYNC:
        the outcome of the exchange that took over (birthday's), or None."""
        self.activity = asyncio.Event()
        """Set whenever a session ended (``outcomes`` and the counters
        changed) or a replaced relayed connection was closed, so callers can
        wait for state changes instead of polling."""

    async def __aenter__(self) -> DcutrService:
        await self._sup.__aenter__()
        self.host.set_stream_handler(PROTOCOL, self._responder.handle)
        self.host.add_listener(self._listener)
        self._attach()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None
        self.host.remove_listener(self._listener)
        if self.host.is_running:
            self.host.remove_stream_handler(PROTOCOL)
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

    def record(self, outcome: Outcome) -> None:
        """Keep a finished session for ``status()`` and count it."""
        self.outcomes.append(outcome)
        if outcome.ok:
            if outcome.how in ("punched", "unilateral"):
                self.counters[outcome.how] += 1
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
        self._attach()
        if conn.path == DIRECT:
            session = self._sessions.get(conn.remote_peer)
            if session is not None:
                session.inbox.put_nowait(DirectArrived(conn))
            return
        if conn.path != RELAYED or conn.is_initiator or not self._sup.running:
            return
        # We were dialled through a relay: the spec's B starts.
        self._sup.spawn(lambda: self._initiator.initiate(conn),
                        f"DCUtR upgrade of {conn.remote_peer}")

    def upgrade(self, relayed: Connection) -> None:
        """Start the upgrade of ``relayed`` now, as the initiator, as if it
        had just arrived (whichever side dialled it)."""
        if relayed.path != RELAYED:
            raise ValueError("only a relayed connection can be upgraded")
        self._sup.spawn(lambda: self._initiator.initiate(relayed),
                        f"DCUtR upgrade of {relayed.remote_peer}")

    # -- hints from the relay -------------------------------------------------------

    def _attach(self) -> None:
        """Register ``on_stop_hint`` with the relay client once there is one."""
        if self._detach is not None or self._relay_client is None:
            return
        client = self._relay_client()
        if client is not None:
            self._detach = client.observe_stops(self.on_stop_hint)

    def on_stop_hint(self, hint: StopHintLike) -> None:
        """A relay we reserved on brings a circuit from ``hint.peer`` and
        says where that peer connects from: punch towards it now, so our
        NAT lets the peer's early dial through (``dcutr_hints``)."""
        if not self._sup.running or self.has_direct(hint.peer):
            return
        ctx = self._context(hint.peer, hint.relay)
        kept, why = self._hints.decide(hint.relay, hint.peer, hint.addrs, ctx, time.monotonic())
        if not kept:
            self.counters["hints_skipped"] += 1
            log.debug("hint for %s from relay %s not used: %s", hint.peer, hint.relay, why)
            return
        self.counters["hints"] += 1
        payload = punch_payload(self.rng, self.config.core.punch_payload)
        self.counters["hint_packets"] += send_packets(self.host, kept, payload,
                                                      self.config.hints.packets)

    # -- sessions ----------------------------------------------------------------------

    def begin(self, peer: PeerId, role: str) -> Session | None:
        """A new session with ``peer``, or None when busy or over the rate."""
        if peer in self._sessions:
            self.counters["refused_busy"] += 1
            return None
        if not self._limiter.allow(peer, time.monotonic()):
            self.counters["refused_rate"] += 1
            log.info("DCUtR with %s refused: over %d sessions in %.0f s", peer,
                     self.config.core.sessions_per_peer, self.config.core.session_window)
            return None
        session = Session(peer, role)
        self._sessions[peer] = session
        self.counters["sessions"] += 1
        return session

    def end(self, peer: PeerId) -> None:
        del self._sessions[peer]

    def session(self, peer: PeerId) -> Session | None:
        return self._sessions.get(peer)

    def has_direct(self, peer: PeerId) -> bool:
        best = self.host.best_connection(peer)
        return best is not None and best.path == DIRECT

    # -- our addresses and what contradicts the peer's ----------------------------

    def own_addrs(self) -> list[bytes]:
        """Our candidates for a CONNECT: observed, STUN-mapped, advertised, listen."""
        host = self.host
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
        try:
            relay: PeerId | None = parse_circuit_multiaddr(relayed.remote_multiaddr).relay
        except InvalidMultiaddr:
            relay = None
        return self._context(peer, relay)

    def _context(self, peer: PeerId, relay: PeerId | None) -> AddrContext:
        host = self.host
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

    # -- dials ---------------------------------------------------------------------------

    def race_for(self, peer: PeerId, *, punched: bool = False,
                 session: Session | None = None) -> DialRace | None:
        """A ``DialRace`` to ``peer`` over our direct transport whose winner
        the host adopts (marked punched if ``punched``; ``session``, the
        initiator's, learns that its unilateral dial won); None without a
        direct transport."""
        transport = next((t for t in self.host.transports() if t.path == DIRECT), None)
        if transport is None:
            return None

        def adopt(conn: Connection) -> bool:
            if session is not None:
                # Before adopt(): its ``opened`` event ends the DCUtR exchange,
                # which then knows how the connection came.
                session.unilateral = True
            try:
                self.host.adopt(conn)
            except LimitExceeded as exc:
                log.info("direct connection to %s refused by the limits: %s", peer, exc)
                return False
            if punched:
                self.host.mark_punched(conn)
            self.host.peerstore.add_addrs(peer, [conn.remote_multiaddr])
            return True

        return DialRace(transport.dial, peer, adopt)

    async def dial_any(self, peer: PeerId, addrs: Iterable[Candidate], timeout: float,
                       session: Session | None = None) -> Connection | None:
        """Dial every address at once as the QUIC client; the first that
        connects is adopted by the host, the rest are cancelled."""
        race = self.race_for(peer, session=session)
        return None if race is None else await race.run(addrs, timeout)

    # -- after success ----------------------------------------------------------------

    def retire_later(self, relayed: Connection) -> None:
        self._sup.spawn(lambda: self._retire(relayed), f"retire relayed {relayed.remote_peer}")

    async def _retire(self, relayed: Connection) -> None:
        """Close ``relayed`` once idle (its streams finish there) or after the grace."""
        cfg = self.config
        deadline = time.monotonic() + cfg.relayed_grace
        while not relayed.is_closed and time.monotonic() < deadline:
            count = getattr(relayed, "open_stream_count", None)
            if count == 0 and self.has_direct(relayed.remote_peer):
                break
            await asyncio.sleep(cfg.idle_check)
        if not relayed.is_closed and self.has_direct(relayed.remote_peer):
            relayed.close(0, "replaced by a direct connection")
            self.counters["relayed_closed"] += 1
            self.activity.set()
