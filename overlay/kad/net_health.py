"""The network side of ``overlay.kad.behaviour``: failed requests and closed
connections reported to it, and the checks it asks for carried out.

Checks are short: one request (or one ping on a live connection) with the
timeout the RTT estimator derives, so a dead peer leaves every table that
learns of its failure within about a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from functools import partial
from typing import Any

from overlay.errors import ConnectionClosed, NegotiationError, OverlayError
from overlay.identity import PeerId
from overlay.kad.behaviour import KadBehaviour, VerifyPeer
from overlay.kad.keyspace import Contact
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.net_rpc import KadHost, KadRpc
from overlay.kad.policy import CheckPeer, ProbeConnection, classify_failure
from overlay.kad.routing import PingNeeded
from overlay.transport.errors import ClosedWithCode, PeerUnreachable

__all__ = ["HealthMonitor", "Spawn"]

log = logging.getLogger(__name__)

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]], str], None]
"""Start a supervised background job (the service's ``_spawn``)."""

Check = VerifyPeer | CheckPeer | ProbeConnection | PingNeeded


class HealthMonitor:
    """Reports one kad service's failures to its behaviour and carries out
    the checks the behaviour asks for."""

    def __init__(
        self,
        host: KadHost,
        behaviour: KadBehaviour,
        rpc: KadRpc,
        clock: Callable[[], float],
        spawn: Spawn,
        background: asyncio.Semaphore,
        activity: asyncio.Event,
        *,
        pump: Callable[[], None],
        seen: Callable[[PeerId], Contact],
    ) -> None:
        """``pump`` carries out the behaviour's actions; ``seen(peer)`` is
        the contact of a peer that answered, grouped by its observed address."""
        self.host = host
        self.behaviour = behaviour
        self.rpc = rpc
        self._clock = clock
        self._spawn = spawn
        self._background = background
        self._activity = activity
        self._pump = pump
        self._seen = seen

    @property
    def _checking(self) -> Collection[PeerId]:
        return self.behaviour.checking

    # -- events ------------------------------------------------------------------

    def request_failed(self, peer: PeerId, exc: BaseException) -> None:
        kind = classify_failure(exc)
        connected = peer in self.host.peers()
        log.debug("kad request to %s failed (%s): %r", peer, kind.value, exc)
        self.behaviour.on_request_failed(peer, kind, connected=connected, now=self._clock())
        self._pump()
        self._activity.set()

    def closed(self, peer: PeerId, reason: ConnectionClosed | None) -> None:
        going_away = isinstance(reason, ClosedWithCode) and reason.going_away
        # Our own closes are deliberate; a close the peer sent proves it
        # alive; silence (the idle timeout), ICMP port-unreachable or an
        # unknown cause needs a check.
        silent = (
            reason is None
            or isinstance(reason, PeerUnreachable)
            or (isinstance(reason, ClosedWithCode) and not reason.by_peer)
        )
        in_table = peer in self.behaviour.table
        self.behaviour.on_closed(peer, going_away=going_away, silent=silent, now=self._clock())
        if going_away and in_table:
            log.debug("kad peer %s left (announced shutdown): dropped from the table", peer)
        self._pump()
        self._activity.set()

    # -- checks ----------------------------------------------------------------------

    def carry_out(self, check: Check) -> None:
        """Start the job that answers ``check`` (``on_check_result``)."""
        if isinstance(check, VerifyPeer):
            peer = check.contact.peer_id
            self._start(peer, partial(self._verify, check.contact), f"kad check of {peer}")
        elif isinstance(check, CheckPeer):
            peer = check.contact.peer_id
            self._start(peer, partial(self._check, check.contact), f"check of {peer} after disconnect")
        elif isinstance(check, ProbeConnection):
            self._start(check.peer, partial(self._probe, check.peer), f"probe of {check.peer}")
        else:
            peer = check.contact.peer_id
            self._start(peer, partial(self._check_oldest, check.contact), f"liveness check of {peer}")

    def _start(self, peer: PeerId, job: Callable[[], Coroutine[Any, Any, bool]], what: str) -> None:
        async def run() -> None:
            reported = False
            try:
                alive = await job()
                now = self._clock()
                seen = self._seen(peer) if alive else None
                self.behaviour.on_check_result(peer, alive, now, seen=seen)
                reported = True
                self._pump()
            finally:
                if not reported:
                    # Cancelled (the service closes) or broken: forget the
                    # check so that a later one may run.
                    self.behaviour.forget_check(peer)
                self._activity.set()

        self._spawn(run, what)

    async def _answers(self, contact: Contact) -> bool:
        # kad PING is deprecated; FIND_NODE for our own ID is the check.
        request = KadMessage(MessageType.FIND_NODE, self.host.peer_id.multihash)
        try:
            await self.rpc.request(contact, request)
        except (OverlayError, TimeoutError, OSError):
            return False
        return True

    @property
    def pending(self) -> int:
        """Checks and admissions under way."""
        return len(self.behaviour.checking)

    async def _verify(self, contact: Contact) -> bool:
        # Not behind the background semaphore: one request on a connection
        # the peer just opened, and the table fills as fast as peers arrive.
        return await self._answers(contact)

    async def _check(self, contact: Contact) -> bool:
        async with self._background:
            return await self._answers(contact)

    async def _probe(self, peer: PeerId) -> bool:
        # A ping is one round trip on a kept stream; twice the request
        # timeout leaves room for a peer that is merely busy.
        timeout = 2 * self.rpc.rtt.timeout(peer, connected=True)
        try:
            async with asyncio.timeout(timeout):
                seconds = await self.host.ping(peer)
            self.rpc.rtt.sample(peer, seconds, self._clock())
            alive = True
        except NegotiationError:
            alive = True  # it answered, if not to ping
        except (OverlayError, TimeoutError, OSError):
            alive = False
        if not alive:
            log.debug("kad peer %s stopped answering on a live connection: dropped", peer)
            self.host.disconnect(peer)
        return alive

    async def _check_oldest(self, contact: Contact) -> bool:
        # An open connection proves liveness for free (a dead peer on a
        # stale connection is caught by the probe after its first timeout).
        if contact.peer_id in self.host.peers():
            return True
        async with self._background:
            return await self._answers(contact)
