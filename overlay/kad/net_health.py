"""The network side of ``overlay.kad.policy``: failed requests, closed
connections and liveness checks turned into routing-table decisions.

Checks are short: one request (or one ping on a live connection) with the
timeout the RTT estimator derives, so a dead peer leaves every table that
learns of its failure within about a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from overlay.errors import ConnectionClosed, NegotiationError, OverlayError
from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.net_rpc import KadHost, KadRpc
from overlay.kad.policy import CheckPeer, NodePolicy, ProbeConnection, classify_failure
from overlay.kad.routing import PingNeeded
from overlay.transport.errors import ClosedWithCode, PeerUnreachable

__all__ = ["HealthMonitor", "Spawn"]

log = logging.getLogger(__name__)

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]], str], None]
"""Start a supervised background job (the service's ``_spawn``)."""


class HealthMonitor:
    """Carries out the policy's checks for one kad service."""

    def __init__(
        self,
        host: KadHost,
        policy: NodePolicy,
        rpc: KadRpc,
        clock: Callable[[], float],
        spawn: Spawn,
        background: asyncio.Semaphore,
        activity: asyncio.Event,
    ) -> None:
        self.host = host
        self.policy = policy
        self.rpc = rpc
        self._clock = clock
        self._spawn = spawn
        self._background = background
        self._activity = activity
        self._checking: set[PeerId] = set()

    # -- events ------------------------------------------------------------------

    def request_failed(self, peer: PeerId, exc: BaseException) -> None:
        kind = classify_failure(exc)
        connected = peer in self.host.peers()
        probe = self.policy.on_request_failed(peer, kind, connected=connected, now=self._clock())
        log.debug("kad request to %s failed (%s): %r", peer, kind.value, exc)
        if probe is not None:
            self._start(peer, partial(self._probe, probe), f"probe of {peer}")
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
        in_table = peer in self.policy.table
        check = self.policy.on_closed(peer, going_away=going_away, silent=silent, now=self._clock())
        if going_away and in_table:
            log.debug("kad peer %s left (announced shutdown): dropped from the table", peer)
        if check is not None:
            self._start(peer, partial(self._check, check), f"check of {peer} after disconnect")
        self._activity.set()

    def verify(self, contact: Contact, admit: Callable[[], None]) -> None:
        """``contact`` says it serves kad: ask it once (on the connection it
        came on) and ``admit`` it only if it answers."""
        self._start(contact.peer_id, partial(self._verify, contact, admit), f"kad check of {contact.peer_id}")

    def table_check(self, ping: PingNeeded) -> None:
        """A full bucket wants to know whether its oldest entry lives."""
        self._start(ping.contact.peer_id, partial(self._check_oldest, ping), f"liveness check of {ping.contact.peer_id}")

    # -- jobs ----------------------------------------------------------------------

    def _start(self, peer: PeerId, job: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        if peer in self._checking:
            return
        self._checking.add(peer)

        async def run() -> None:
            try:
                await job()
            finally:
                self._checking.discard(peer)
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
        return len(self._checking)

    async def _verify(self, contact: Contact, admit: Callable[[], None]) -> None:
        # Not behind the background semaphore: one request on a connection
        # the peer just opened, and the table fills as fast as peers arrive.
        alive = await self._answers(contact)
        if alive:
            admit()

    async def _check(self, check: CheckPeer) -> None:
        async with self._background:
            alive = await self._answers(check.contact)
        self.policy.on_check_result(check.contact.peer_id, alive, self._clock())

    async def _probe(self, probe: ProbeConnection) -> None:
        peer = probe.peer
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
        self.policy.on_check_result(peer, alive, self._clock())

    async def _check_oldest(self, ping: PingNeeded) -> None:
        peer = ping.contact.peer_id
        # An open connection proves liveness for free (a dead peer on a
        # stale connection is caught by the probe after its first timeout).
        alive = peer in self.host.peers()
        if not alive:
            async with self._background:
                alive = await self._answers(ping.contact)
        self.policy.table.on_ping_result(peer, alive, self._clock())
