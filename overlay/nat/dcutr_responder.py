"""The DCUtR responder's driver (the spec's A, the side that dialled
through the relay): it answers in the stream handler and dials as the
QUIC client, early (on CONNECT, ours) and on SYNC (the spec's), both
batches in one ``DialRace``.

A success counts only once the direct connection stayed open
``confirm_wait`` seconds (py-libp2p closes QUIC connections it did not
dial itself at once).  When the initiator stops DCUtR before SYNC because
birthday punching took over, the session's outcome is birthday's.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import RELAYED
from overlay.identity import PeerId
from overlay.nat.dcutr_core import Action, DcutrResponder, Dial, Failed, Succeeded
from overlay.nat.dcutr_session import Act, Outcome, Session, drive

if TYPE_CHECKING:
    from overlay.nat.dcutr_service import DcutrService

__all__ = ["Responder"]


class Responder:
    """A's half of a ``DcutrService``."""

    def __init__(self, service: DcutrService) -> None:
        self._s = service

    async def handle(self, stream: NegotiatedStream) -> None:
        s = self._s
        conn = stream.conn
        peer = stream.remote_peer
        started = time.monotonic()
        if conn.path != RELAYED:
            stream.reset()  # DCUtR only makes sense over a relayed connection
            return
        await self._yield_to(peer)
        session = s.begin(peer, "responder")
        if session is None:
            stream.reset()
            return
        handover: tuple[bool, str] | None = None
        try:
            core = DcutrResponder(s.config.core, s.own_addrs(), s.address_context(peer, conn),
                                  s.rng, time.monotonic())
            session.race = s.race_for(peer, punched=True)
            result = await drive(core, stream, session, self._act(core, session),
                                 lambda: s.has_direct(peer), s.counters)
            if isinstance(result, Succeeded) and not await self._stays_direct(peer):
                result = Failed("the peer closed the direct connection at once", result.attempt)
            if isinstance(result, Failed) and not result.protocol_error and result.attempts <= 1:
                handover = await self._handed_over(peer)
        finally:
            s.end(peer)
        elapsed = time.monotonic() - started
        if handover is not None:
            ok, how = handover
            s.record(Outcome(str(peer), "responder", ok, f"birthday took over: {how}",
                             0, None, elapsed))
            if ok:
                s.retire_later(conn)
        elif isinstance(result, Succeeded):
            s.record(Outcome(str(peer), "responder", True, "punched", result.attempt,
                             None, elapsed))
            s.retire_later(conn)
        else:
            assert result is not None  # only a gate ends it without an outcome
            s.record(Outcome(str(peer), "responder", False, result.reason,
                             result.attempts, None, elapsed))

    def _act(self, core: DcutrResponder, session: Session) -> Act:
        s = self._s

        async def act(action: Action) -> list[Action]:
            race = session.race
            if not isinstance(action, Dial):
                return []
            if race is None:  # no direct transport: nothing to dial with
                return [] if action.early else core.on_dial_result(False, time.monotonic())
            if action.early:
                # In the background: SYNC must still be read, and the spec's
                # dial then races beside this one.
                if session.spawn is not None:
                    session.spawn(race.run(action.addrs, action.timeout))
                return []
            conn = await race.run(action.addrs, action.timeout)
            return core.on_dial_result(conn is not None or s.has_direct(session.peer),
                                       time.monotonic())
        return act

    async def _stays_direct(self, peer: PeerId) -> bool:
        """Whether a direct connection to ``peer`` is still open
        ``confirm_wait`` seconds after the success."""
        s = self._s
        wait = s.config.confirm_wait
        deadline = time.monotonic() + wait
        while True:
            best = s.host.best_connection(peer)
            if best is None or best.path != "direct":
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            try:
                async with asyncio.timeout(left):
                    await best.wait_closed()
            except TimeoutError:
                return True

    async def _handed_over(self, peer: PeerId) -> tuple[bool, str] | None:
        """Birthday punching's outcome with ``peer`` if it took over."""
        s = self._s
        hook = s.handover
        if hook is None:
            return None
        try:
            async with asyncio.timeout(s.config.handover_wait):
                return await hook(peer)
        except TimeoutError:
            return None

    async def _yield_to(self, peer: PeerId) -> None:
        """Both of us were dialled through a relay at once, so both started
        as initiator: the smaller peer ID keeps that role, and the other
        gives up its own session to answer."""
        s = self._s
        ours = s.session(peer)
        if ours is None or ours.role != "initiator" or ours.task is None:
            return
        if s.host.peer_id.to_bytes() < peer.to_bytes():
            return  # we keep initiating; the busy check refuses their stream
        ours.task.cancel()
        await asyncio.wait([ours.task])

