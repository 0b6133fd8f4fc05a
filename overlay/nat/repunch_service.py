"""The re-punch driver: samples the host's punched connections for
``overlay.nat.repunch_core`` and carries out its actions.

Watched: every direct QUIC connection hole punching made, and any direct
one to a peer we know a ``/p2p-circuit`` address of (from the peerstore,
or the last relayed connection to it, remembered here: a peer only
reachable through a relay).  ``Redial`` dials that address; the peer,
dialled through its relay, starts DCUtR as it does for any relayed
connection, and ``EnsurePunch`` starts it from our side (``upgrade``) when
it did not.  Without a running DCUtR service (``--no-holepunch``) nothing
is probed, closed or dialled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from functools import partial
from types import TracebackType
from typing import Any, Protocol, cast, runtime_checkable

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, OverlayError
from overlay.transport.errors import ClosedWithCode, PeerUnreachable
from overlay.host.events import HostListener
from overlay.host.transport_types import DIRECT, RELAYED, Connection
from overlay.identity import PeerId
from overlay.multiaddrs import parse_circuit_multiaddr, split_p2p
from overlay.nat.repunch_core import (
    Action,
    CloseDead,
    Declined,
    EnsurePunch,
    PathSample,
    Probe,
    Redial,
    RefreshAddrs,
    RepunchConfig,
    RepunchPolicy,
)
from overlay.supervisor import Supervisor

__all__ = ["RepunchService", "Punching"]

log = logging.getLogger(__name__)

MAX_RELAY_ADDRS = 3
"""Circuit addresses tried per redial."""
REFRESH_TIMEOUT = 2.0
"""Seconds the relays get to tell our address again before the redial."""
CLOSE_WITHIN = 3.0
"""Seconds a dead path stays open while its replacement through the relay
is dialled (streams retried on its failure then find the relayed one)."""
LOOK_AFTER_OPEN = 5.0
"""Seconds to keep sampling after a direct connection opened: DCUtR marks
it punched a moment after the host adopted it."""
MAX_CIRCUITS = 1024
"""Peers whose last relayed connection's address is remembered."""


@runtime_checkable
class _Watchable(Connection, Protocol):
    """What ``overlay.transport.QuicConn`` tells about its path."""

    last_received: float | None
    last_data_received: float | None

    @property
    def open_stream_count(self) -> int: ...

    def send_ping(self) -> None: ...


class Punching(Protocol):
    """The slice of ``DcutrService`` a re-punch needs."""

    def upgrade(self, relayed: Connection) -> None: ...

    def status(self) -> dict[str, Any]: ...


class RepunchService:
    """``async with RepunchService(host, config, dcutr=…) as repunch:``.

    ``dcutr`` returns the running DCUtR service (None: hole punching is
    off); ``mapping`` our public addresses as STUN last saw them."""

    def __init__(self, host: Any, config: RepunchConfig | None = None, *,
                 dcutr: Callable[[], Punching | None],
                 mapping: Callable[[], frozenset[str]] | None = None) -> None:
        self._host = host
        self.policy = RepunchPolicy(config)
        self._dcutr = dcutr
        self._mapping = mapping
        self._sup = Supervisor("repunch", log)
        self._listener = HostListener(opened=self._on_opened)
        self._wake = asyncio.Event()
        self._look_until = 0.0
        self._peers: dict[str, PeerId] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._circuits: dict[PeerId, Multiaddr] = {}
        """The address of the last relayed connection to each peer (most
        recent last): the way back when the peerstore lists no circuit
        address (a peer that does not advertise its relays, or whose
        identify replaced what we dialled)."""
        self.upgrades = 0
        """DCUtR sessions we started ourselves on the relayed connection."""
        self.activity = asyncio.Event()
        """Set whenever a re-punch decision was carried out (tests wait on it)."""

    async def __aenter__(self) -> RepunchService:
        await self._sup.__aenter__()
        self._host.add_listener(self._listener)
        self._sup.spawn(self._loop, "re-punch sampler")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._host.remove_listener(self._listener)
        await self._sup.aclose()

    # -- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        reply = self.policy.status(time.monotonic())
        reply["counters"]["upgrades"] = self.upgrades
        return reply

    def counters(self) -> dict[str, int]:
        """For ``stats``: the counters, and the paths watched now and how
        many of them lead to a peer that matters (gauges)."""
        return {**self.policy.counters, "upgrades": self.upgrades,
                "watching": self.policy.watching, "busy": self.policy.busy}

    def peer_fields(self, peer: PeerId) -> dict[str, Any]:
        """``repunch`` for ``peers``: count, last reason, time to direct again."""
        status = self.policy.peer_status(str(peer), time.monotonic())
        return {} if status is None else {"repunch": status}

    # -- sampling ---------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.policy.next_deadline()
            now = time.monotonic()
            if deadline is None and now < self._look_until:
                deadline = now + self.policy.config.sample_interval
            try:
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._sample()

    def _holepunch(self) -> Punching | None:
        return self._dcutr() if self._host.is_running else None

    def _sample(self) -> None:
        if self._mapping is not None:
            self.policy.on_mapping(self._mapping())
        before = dict(self.policy.counters)
        samples = self._samples()
        current = {sample.key for sample in samples}
        lost = {key: why for key in self.policy.watched
                if key not in current and (why := _path_failed(key)) is not None}
        actions = self.policy.on_sample(time.monotonic(), samples,
                                        holepunch=self._holepunch() is not None, lost=lost)
        self._carry_out(actions)
        if self.policy.counters != before:
            self.activity.set()  # e.g. "direct again", which needs no action

    def _samples(self) -> list[PathSample]:
        host = self._host
        ours = host.peer_id.to_bytes()
        out: list[PathSample] = []
        for conn in host.connections():
            if conn.path != DIRECT or not isinstance(conn, _Watchable):
                continue
            peer = conn.remote_peer
            punched = bool(host.is_punched(conn))
            if not punched and not self._relay_addrs(peer):
                continue
            text = str(peer)
            self._peers[text] = peer
            out.append(PathSample(
                key=cast(Hashable, conn), peer=text, remote=str(conn.remote_multiaddr),
                last_received=conn.last_received, last_data=conn.last_data_received,
                open_streams=conn.open_stream_count, rtt=conn.smoothed_rtt,
                punched=punched, peer_id_smaller=peer.to_bytes() < ours))
        if len(self._peers) > 4 * len(out) + 64:
            live = {s.peer for s in out} | self.policy.pending_peers
            self._peers = {k: v for k, v in self._peers.items() if k in live}
        return out

    def _relay_addrs(self, peer: PeerId) -> list[tuple[Multiaddr, PeerId]]:
        """The peer's circuit addresses (without its /p2p), each with its
        relay: those the peerstore knows, then the last relayed connection's."""
        found: dict[Multiaddr, PeerId] = {}
        remembered = self._circuits.get(peer)
        for addr in [*self._host.peerstore.addrs(peer),
                     *([remembered] if remembered is not None else [])]:
            try:
                circuit = parse_circuit_multiaddr(addr)
            except InvalidMultiaddr:
                continue
            if circuit.relay_has_address and circuit.target in (None, peer):
                bare = split_p2p(addr)[0] if circuit.target is not None else addr
                found.setdefault(Multiaddr(str(bare)), circuit.relay)
        return list(found.items())

    def _remember_circuit(self, conn: Connection) -> None:
        peer = conn.remote_peer
        self._circuits.pop(peer, None)
        self._circuits[peer] = Multiaddr(str(conn.remote_multiaddr))
        while len(self._circuits) > MAX_CIRCUITS:
            del self._circuits[next(iter(self._circuits))]

    def _probe_relays(self, peer: PeerId) -> None:
        """PING our connections to the peer's relays too: if our own mapping
        moved, the relay (a QUIC server) follows us at our first packet,
        before its own packets to the old mapping are lost and its
        retransmission timer backs off."""
        for _, relay in self._relay_addrs(peer):
            conn = self._host.best_connection(relay)
            if isinstance(conn, _Watchable):
                conn.send_ping()

    # -- events -------------------------------------------------------------------------

    def _on_opened(self, conn: Connection) -> None:
        now = time.monotonic()
        if conn.path == DIRECT:
            self._look_until = now + LOOK_AFTER_OPEN
            if self.policy.repunching(str(conn.remote_peer), now, LOOK_AFTER_OPEN):
                # Whichever dial of the session got through (the initiator's
                # unilateral one too, which DCUtR does not count as a punch)
                # replaces a punched path: it is punched, on both sides.
                self._host.mark_punched(conn)
        elif conn.path == RELAYED:
            self._remember_circuit(conn)
            if not conn.is_initiator and self._holepunch() is not None:
                self._sample()
                self._carry_out(self.policy.on_relayed_opened(str(conn.remote_peer), now))
        self._wake.set()

    # -- actions --------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Probe):
                conn = action.key
                if isinstance(conn, _Watchable):
                    now = time.monotonic()
                    log.debug("probing the path to %s: %d stream(s) open, last packet %.1f s "
                             "ago, last data %s s ago", conn.remote_peer, conn.open_stream_count,
                             now - (conn.last_received or now),
                             None if conn.last_data_received is None
                             else round(now - conn.last_data_received, 1))
                    conn.send_ping()
                    self._probe_relays(conn.remote_peer)
                continue
            if isinstance(action, CloseDead):
                self._close(action.key, action.peer, action.reason)
            elif isinstance(action, Redial):
                log.info("re-punching %s: %s; redialling through its relay",
                         action.peer, action.reason)
                self._sup.spawn(partial(self._redial, action.peer, action.dead, action.reason),
                                f"re-punch redial of {action.peer}")
            elif isinstance(action, RefreshAddrs):
                peer = self._peers.get(action.peer)
                if peer is not None:
                    self._refreshing[action.peer] = self._sup.spawn(
                        partial(self._refresh_addrs, peer), f"re-identify for {action.peer}")
            elif isinstance(action, EnsurePunch):
                self._ensure_punch(action.peer)
            elif isinstance(action, Declined):
                log.info("not re-punching %s: %s", action.peer, action.reason)
            self.activity.set()

    @staticmethod
    def _close(key: Hashable, peer: str, reason: str) -> None:
        log.info("closing the direct connection to %s: %s", peer, reason)
        close = getattr(key, "close", None)
        if callable(close):
            close(0, reason)

    async def _refresh_addrs(self, peer: PeerId) -> None:
        identify = self._host.identify_service
        relays = {relay for _, relay in self._relay_addrs(peer)}
        conns = [c for c in map(self._host.best_connection, relays) if c is not None]
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT), asyncio.TaskGroup() as tg:
                for conn in conns:
                    tg.create_task(identify.identify_connection(conn))
        except* (OverlayError, TimeoutError) as group:
            log.debug("re-identify with the relays of %s: %r", peer, group.exceptions)

    async def _redial(self, text: str, dead: Hashable | None, reason: str) -> None:
        refreshing = self._refreshing.pop(text, None)
        if refreshing is not None:
            await asyncio.wait([refreshing])
        peer = self._peers.get(text)
        addrs = self._relay_addrs(peer)[:MAX_RELAY_ADDRS] if peer is not None else []
        if peer is None or not addrs:
            log.info("re-punch of %s: no relay address known for it", text)
            if dead is not None:
                self._close(dead, text, f"path dead: {reason}")
            self.policy.on_dial_failed(text, time.monotonic(), "no relay address known")
            self.activity.set()
            return
        async with asyncio.TaskGroup() as tg:
            dial = tg.create_task(self._dial_relay(peer, addrs))
            await asyncio.wait([dial], timeout=CLOSE_WITHIN)
            if dead is not None:
                self._close(dead, text, f"path dead: {reason}")
        result = dial.result()
        now = time.monotonic()
        if isinstance(result, str):
            log.info("re-punch of %s: the relay dial failed: %s", text, result)
            self.policy.on_dial_failed(text, now, result)
        else:
            self._carry_out(self.policy.on_dialled(text, now, fresh=result))
        self.activity.set()
        self._wake.set()

    async def _dial_relay(self, peer: PeerId, addrs: list[tuple[Multiaddr, PeerId]]
                          ) -> bool | str:
        """A relayed connection to ``peer``: True for a new one, False when
        one was open already, else why none could be had.  Dialled through
        the circuit transport itself: ``host.connect`` would answer with
        the dead direct connection while it is still open."""
        host = self._host
        errors = []
        for addr, _ in addrs:
            best = host.best_connection(peer)
            if best is not None and best.path == RELAYED:
                return False
            try:
                async with asyncio.timeout(host.config.dial_timeout):
                    conn = await host.circuit_transport.dial(addr, peer)
                host.adopt(conn)
            except (OverlayError, TimeoutError) as exc:
                errors.append(f"{addr}: {exc or type(exc).__name__}")
                continue
            host.peerstore.add_addrs(peer, [conn.remote_multiaddr])
            return True
        return "; ".join(errors)

    def _ensure_punch(self, text: str) -> None:
        dcutr = self._holepunch()
        peer = self._peers.get(text)
        if dcutr is None or peer is None:
            return
        conn = self._host.best_connection(peer)
        if conn is None or conn.path != RELAYED or text in dcutr.status().get("active", ()):
            return  # direct already, nothing to punch through, or a session runs
        self.upgrades += 1
        log.info("re-punch of %s: the peer started no DCUtR session; starting one", text)
        dcutr.upgrade(conn)


def _path_failed(conn: object) -> str | None:
    """Why a closed connection's path failed under it (QUIC's idle timeout,
    ICMP port-unreachable), or None for any other end: ours, the peer's
    CONNECTION_CLOSE, a host shutting down."""
    error = getattr(conn, "close_reason", None)
    if isinstance(error, PeerUnreachable):
        return f"the path failed: {error}"
    if isinstance(error, ClosedWithCode) and not error.by_peer:
        return f"the path failed: {error.phrase or error}"
    return None
