"""The DCUtR initiator's driver (the spec's B, the side dialled through
the relay): everything starts when the relayed connection arrives.

All at once: a direct dial to the peer's advertised addresses once
identify brought them (the spec's unilateral upgrade), the ``pre_punch``
exchange (birthday punching's HELLO) and the ``/libp2p/dcutr`` CONNECT on
a lazily negotiated stream of the relayed connection.  SYNC waits only for
``pre_punch``'s decision, which comes back with the CONNECT; then punch
packets from the listening socket, and the peer's QUIC dial accepted by
the endpoint's ordinary accept loop.  The stop CONNECT's hints
(``DcutrService.on_stop_hint``) opened our NAT towards the peer two
relayed round trips before, so the peer's early dial gets through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, OverlayError
from overlay.host.transport_types import Connection
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.nat.dcutr_core import (
    Action,
    DcutrInitiator,
    Failed,
    SendPunchPackets,
    Succeeded,
    filter_addrs,
)
from overlay.nat.dcutr_dial import send_packets
from overlay.nat.dcutr_messages import PROTOCOL
from overlay.nat.dcutr_session import Outcome, Session, drive

if TYPE_CHECKING:
    from overlay.nat.dcutr_service import DcutrService

__all__ = ["Initiator"]

log = logging.getLogger(__name__)


class Initiator:
    """B's half of a ``DcutrService``."""

    def __init__(self, service: DcutrService) -> None:
        self._s = service

    async def initiate(self, relayed: Connection) -> None:
        s = self._s
        peer = relayed.remote_peer
        started = time.monotonic()
        session = s.begin(peer, "initiator")
        if session is None:
            return
        try:
            outcome = await self._session(session, relayed, started)
        finally:
            s.end(peer)
        s.record(outcome)
        if outcome.ok:
            s.retire_later(relayed)

    async def _session(self, session: Session, relayed: Connection, started: float) -> Outcome:
        """Everything at once, so the CONNECT leaves with the relayed
        connection's arrival: the unilateral dial (after identify), the
        ``pre_punch`` exchange (birthday's HELLO) and DCUtR's CONNECT.  The
        SYNC waits for ``pre_punch``'s decision, which comes back with the
        CONNECT (one relayed round trip); when it takes over, DCUtR stops
        before SYNC.  In sequence these cost about four relayed round trips
        more (identify, two negotiations, HELLO)."""
        s = self._s
        peer = session.peer
        cfg = s.config
        exchange_from: list[float] = []

        def outcome(ok: bool, how: str, attempts: int = 0, rtt: float | None = None) -> Outcome:
            now = time.monotonic()
            return Outcome(str(peer), "initiator", ok, how, attempts, rtt, now - started,
                           now - exchange_from[0] if exchange_from else None)

        if s.has_direct(peer):
            return outcome(True, "already direct")
        taken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def decided(takes_over: bool) -> None:
            if not taken.done():
                taken.set_result(takes_over)

        async with asyncio.TaskGroup() as tg:
            unilateral = (tg.create_task(self._unilateral(session, relayed))
                          if cfg.unilateral else None)
            pre = None
            if s.pre_punch is not None:
                pre = tg.create_task(self._pre_punch(s.pre_punch, relayed, decided))
            else:
                decided(False)

            async def before_sync() -> bool:
                """Whether to stop before SYNC: ``pre_punch`` took over, or a
                direct connection is there already.  The unilateral dial is
                not waited for: it goes on beside the punch, and the peer's
                early dial (on CONNECT) makes waiting for it pointless."""
                if await asyncio.shield(taken):
                    return True
                return s.has_direct(peer)

            exchange_from.append(time.monotonic())
            try:
                result = await self._punch(session, relayed, before_sync)
                if (pre is not None and not isinstance(result, Succeeded)
                        and await asyncio.shield(taken)):
                    # ``pre_punch`` took over (or DCUtR could not start and
                    # it did): its outcome is the session's.
                    decision = await pre
                    if session.unilateral and s.has_direct(peer):
                        return outcome(True, "unilateral")  # it won while they talked
                    if decision is not None:
                        return outcome(decision[0], decision[1])
            finally:
                for task in (unilateral, pre):
                    if task is not None and not task.done():
                        task.cancel()
        if session.unilateral and s.has_direct(peer):
            return outcome(True, "unilateral")
        if result is None and s.has_direct(peer):
            # The peer's early dial (on our CONNECT) got through before SYNC.
            result = Succeeded(1, session.rtt)
        if isinstance(result, Succeeded):
            best = s.host.best_connection(peer)
            if best is not None and best.path == "direct":
                s.host.mark_punched(best)
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

    async def _punch(self, session: Session, relayed: Connection,
                     before_sync: Callable[[], Awaitable[bool]]) -> Succeeded | Failed | None:
        """DCUtR proper; None when ``before_sync`` said to stop before SYNC."""
        s = self._s
        host = s.host
        if host.peerstore.protocols(session.peer) and not host.peerstore.supports(
                session.peer, PROTOCOL):
            return Failed("cannot open a DCUtR stream: the peer does not list it", 0)
        try:
            # Lazily: the CONNECT rides with the negotiation; a peer without
            # DCUtR refuses it at our first read.
            stream = await host.open_stream_on(relayed, [PROTOCOL], lazy=True)
        except OverlayError as exc:
            return Failed(f"cannot open a DCUtR stream: {exc}", 0)
        core = DcutrInitiator(s.config.core, s.own_addrs(),
                              s.address_context(session.peer, relayed), s.rng)

        async def act(action: Action) -> list[Action]:
            if isinstance(action, SendPunchPackets):
                s.counters["punch_packets"] += send_packets(host, action.addrs, action.payload)
            return []

        try:
            return await drive(core, stream, session, act, lambda: s.has_direct(session.peer),
                               s.counters, before_sync)
        finally:
            session.rtt = core.rtt

    async def _unilateral(self, session: Session, relayed: Connection) -> bool:
        s = self._s
        cfg = s.config
        peer = session.peer
        try:
            async with asyncio.timeout(cfg.identify_wait):
                await s.host.identify_service.identify_connection(relayed)
        except (OverlayError, TimeoutError) as exc:
            log.debug("identify of %s before DCUtR: %r", peer, exc)
        addrs = [a.to_bytes() for a in s.host.peerstore.addrs(peer) if _is_quic(a)]
        kept, _ = filter_addrs(addrs, s.address_context(peer, relayed),
                               max_addrs=cfg.core.max_addrs,
                               allow_private=cfg.core.allow_private)
        if not kept:
            return False
        conn = await s.dial_any(peer, kept, cfg.unilateral_timeout, session)
        return conn is not None


def _is_quic(addr: Multiaddr) -> bool:
    try:
        parse_quic_multiaddr(addr)
    except InvalidMultiaddr:
        return False
    return True
