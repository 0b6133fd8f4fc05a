"""The DCUtR driver's packets and dials: punch packets from a listening
socket, and ``DialRace``, the QUIC dials to one peer that share a winner.

Punch packets leave from the socket the peer was told about (the one our
NAT maps for it); dials go out from it too, since every QUIC dial of the
host leaves from its listening endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from multiaddr import Multiaddr

from overlay.errors import OverlayError, TransportError
from overlay.host.addrs import is_ipv6, is_loopback
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.nat.dcutr_core import Candidate

__all__ = ["DialRace", "Punchable", "endpoint_for", "send_packets"]

log = logging.getLogger(__name__)


@runtime_checkable
class Punchable(Protocol):
    @property
    def local_address(self) -> tuple[str, int]: ...

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...


def endpoint_for(host: Any, ip: str) -> Punchable | None:
    """A listening endpoint of ``host`` that can reach ``ip``."""
    for endpoint in host.endpoints():
        if not isinstance(endpoint, Punchable):
            continue
        local = endpoint.local_address[0]
        if is_ipv6(local) == is_ipv6(ip) and (is_loopback(ip) or not is_loopback(local)):
            return endpoint
    return None


def send_packets(host: Any, addrs: Iterable[Candidate], payload: bytes, copies: int = 1) -> int:
    """Send ``payload`` ``copies`` times to each address; the packets sent."""
    sent = 0
    for cand in addrs:
        endpoint = endpoint_for(host, cand.ip)
        if endpoint is None:
            continue
        for _ in range(copies):
            try:
                endpoint.sendto(payload, (cand.ip, cand.port))
                sent += 1
            except (OSError, TransportError) as exc:
                log.debug("punch packet to %s:%d: %r", cand.ip, cand.port, exc)
                break
    return sent


class DialRace:
    """QUIC dials to one peer, in batches, that share one winner: the first
    connection through is handed to ``adopt`` and every other dial of every
    batch is cancelled (or closed, if it completed too).  A later batch
    starts fresh connections beside an earlier one still running, so the
    earlier one's Initial retransmission backoff never delays it."""

    def __init__(self, dial: Callable[[Multiaddr, PeerId], Awaitable[Connection]],
                 peer: PeerId, adopt: Callable[[Connection], bool]) -> None:
        self._dial = dial
        self._peer = peer
        self._adopt = adopt
        self._won = asyncio.Event()
        self.winner: Connection | None = None
        """The adopted connection, once one got through (None if ``adopt`` refused it)."""

    @property
    def decided(self) -> bool:
        return self._won.is_set()

    async def run(self, addrs: Iterable[Candidate], timeout: float) -> Connection | None:
        """Dial every address at once; the race's winner as soon as there is
        one (from this batch or another), None once this batch failed or
        ``timeout`` passed."""
        if self._won.is_set():
            return self.winner

        async def one(cand: Candidate) -> None:
            try:
                conn = await self._dial(cand.multiaddr, self._peer)
            except (OverlayError, OSError) as exc:
                log.debug("DCUtR dial to %s: %r", cand.multiaddr, exc)
                return
            if self._won.is_set():
                conn.close(0, "another dial won")
                return
            self._won.set()
            self.winner = conn if self._adopt(conn) else None

        async def all_of(tasks: list[asyncio.Task[None]]) -> None:
            await asyncio.wait(tasks)

        try:
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as tg:
                batch = [tg.create_task(one(c)) for c in addrs]
                if batch:
                    watchers = [tg.create_task(self._won.wait()), tg.create_task(all_of(batch))]
                    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
                    for task in (*batch, *watchers):
                        task.cancel()
        except TimeoutError:
            pass
        return self.winner
