"""Serving inbound kad streams: several requests per stream, each decoded
with the 16 KiB limit and answered by a callback over the pure core.

A typed error from the peer's bytes or from the core (malformed message,
unknown type, invalid record, quota) resets that stream only and is
reported to ``on_reject``; nothing of the request is kept.

Open streams are counted in three scopes (STYLE rule 17): all of them
(``max_inbound_streams``), per source (the connection's IP prefix, see
``overlay.limits.source_key``) and per peer, so one peer's or one host's
idle streams cannot starve everyone else.  A full scope first makes room
by resetting its longest-idle stream (one waiting for its next request
for at least ``evict_idle_after``): idle streams cost the server nothing
to give up, and a peer that crashed and came back under the same identity
would otherwise be locked out by its dead self's streams until they time
out.  Only when nothing idle can go is the new stream refused: a reset
right after negotiation on a live connection, which the requester's
policy reads as "busy", never as "dead" (``overlay.kad.policy``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from overlay.errors import LimitExceeded, OverlayError, RemoteProtocolError, TransportError
from overlay.host.stream import NegotiatedStream
from overlay.identity import PeerId
from overlay.kad.messages import KadMessage
from overlay.kad.net_stream import read_kad_message, write_kad_message
from overlay.kad.service_config import KadServiceConfig
from overlay.limits import LimitHits, ScopedCounter, source_key

__all__ = ["Answer", "Reject", "KadInbound", "InboundLimits", "stream_source"]

log = logging.getLogger(__name__)

Answer = Callable[[KadMessage, PeerId], KadMessage | None]
"""Answer one request from a peer (raises typed errors to refuse it)."""
Reject = Callable[[PeerId, OverlayError], None]


@dataclass(frozen=True, slots=True)
class InboundLimits:
    """Inbound kad streams open at once per scope (the global cap is
    ``KadServiceConfig.max_inbound_streams``)."""

    per_peer: int = 8
    """Streams one peer may hold (go-libp2p's kad opens one at a time)."""
    per_source: int = 48
    """Streams one IP prefix (/24, /48; each loopback address) may hold:
    three quarters of the global cap, so one host always leaves a quarter
    to everyone else, while a lab of 30 nodes on one address still
    bootstraps through one of them at once (32 was hit doing that)."""

    evict_idle_after: float = 1.0
    """Seconds a stream that was answered must have waited for its next
    request before a new stream in a full scope may take its place (our
    requesters send one request per stream, so such a stream is closing or
    its requester is gone)."""
    evict_unused_after: float = 5.0
    """The same for a stream that has not delivered a request yet: longer,
    because on a loaded node a request can sit unread for a while."""

    def __post_init__(self) -> None:
        if self.per_peer < 1 or self.per_source < 1:
            raise ValueError("inbound stream limits must be at least 1")
        if self.evict_idle_after < 0 or self.evict_unused_after < 0:
            raise ValueError("eviction delays must not be negative")


@dataclass(eq=False, slots=True)
class _Served:
    """One admitted stream and the scopes it is counted in."""

    stream: NegotiatedStream
    peer: PeerId
    source: str
    idle_since: float | None = None
    """When it began waiting for its next request; None while answering."""
    answered: int = 0
    released: bool = field(default=False)


def stream_source(stream: NegotiatedStream) -> str:
    """The source scope of a stream: its connection's observed IP prefix,
    or for a relayed connection the relay path (``…/p2p/<relay>``)."""
    conn = stream.conn
    address = getattr(conn, "remote_address", None)
    if address is not None:
        return source_key(address[0])
    multiaddr = getattr(conn, "remote_multiaddr", None)
    return f"other:{multiaddr}" if multiaddr is not None else f"other:{stream.remote_peer}"


class KadInbound:
    """The stream handler of a kad server."""

    def __init__(
        self,
        config: KadServiceConfig,
        answer: Answer,
        on_reject: Reject,
        limits: InboundLimits | None = None,
        *,
        hits: LimitHits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.limits = limits or InboundLimits()
        self._answer = answer
        self._reject = on_reject
        self._active = 0
        self._per_peer = ScopedCounter(self.limits.per_peer)
        self._per_source = ScopedCounter(self.limits.per_source)
        self._served: set[_Served] = set()
        self.hits = hits if hits is not None else LimitHits()
        """Refusals by cause (``kad.streams_total``, ``…_per_source``, ``…_per_peer``)."""
        self._clock = clock

    @property
    def active(self) -> int:
        return self._active

    def _admit(self, peer: PeerId, source: str) -> str | None:
        """None if the stream may be served, else the cause of refusal."""
        if self._active >= self.config.max_inbound_streams:
            return "kad.streams_total"
        if not self._per_source.has_room(source):
            return "kad.streams_per_source"
        if not self._per_peer.has_room(peer):
            return "kad.streams_per_peer"
        return None

    def _evict_idle(self, cause: str, peer: PeerId, source: str) -> bool:
        """Reset the longest-idle stream in the scope ``cause`` names;
        False if none there has been idle long enough."""
        now = self._clock()
        if cause == "kad.streams_per_peer":
            scope = [s for s in self._served if s.peer == peer]
        elif cause == "kad.streams_per_source":
            scope = [s for s in self._served if s.source == source]
        else:
            scope = list(self._served)
        idle = [s for s in scope if s.idle_since is not None and now - s.idle_since >= (
            self.limits.evict_idle_after if s.answered else self.limits.evict_unused_after)]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.idle_since or 0.0)
        self._release(victim)
        victim.stream.reset()
        self.hits.hit("kad.idle_stream_replaced", self._clock())
        return True

    def _release(self, served: _Served) -> None:
        if served.released:
            return
        served.released = True
        self._served.discard(served)
        self._active -= 1
        self._per_source.release(served.source)
        self._per_peer.release(served.peer)

    async def handle_stream(self, stream: NegotiatedStream) -> None:
        peer = stream.remote_peer
        source = stream_source(stream)
        cause = self._admit(peer, source)
        for _ in range(3):  # at most one eviction per scope
            if cause is None or not self._evict_idle(cause, peer, source):
                break
            cause = self._admit(peer, source)
        if cause is not None:
            reported = self.hits.hit(cause, self._clock())
            if reported:
                log.warning("refusing inbound kad streams (%s): %d refused since the last "
                            "report; latest from %s at %s", cause, reported, peer, source)
            self._reject(peer, LimitExceeded(f"inbound kad stream refused: {cause}"))
            stream.reset()
            return
        self._active += 1
        self._per_source.acquire(source)
        self._per_peer.acquire(peer)
        slot = _Served(stream, peer, source)
        self._served.add(slot)
        try:
            await self._serve(slot)
        finally:
            self._release(slot)

    async def _serve(self, slot: _Served) -> None:
        cfg = self.config
        stream, peer = slot.stream, slot.peer
        try:
            for served in range(cfg.max_requests_per_stream + 1):
                slot.idle_since = self._clock()
                async with asyncio.timeout(cfg.inbound_idle_timeout):
                    request = await read_kad_message(stream)
                slot.idle_since = None
                if request is None:
                    await stream.close()
                    return
                if served == cfg.max_requests_per_stream:
                    break
                response = self._answer(request, peer)
                if response is not None:
                    await write_kad_message(stream, response)
                slot.answered += 1
            self._reject(peer, LimitExceeded("too many requests on one kad stream"))
            stream.reset()
        except (RemoteProtocolError, LimitExceeded) as exc:
            self._reject(peer, exc)
            stream.reset()
        except TimeoutError:
            stream.reset()
        except TransportError as exc:
            log.debug("kad stream from %s broke: %r", peer, exc)
            stream.reset()
