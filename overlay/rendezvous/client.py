"""The rendezvous client (thin asyncio): ``register``, ``unregister`` and
``discover`` against a given rendezvous point, one stream per request, and
the ``Refresher`` that re-registers before a TTL ends (its timing is the
pure ``RefreshPlan``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from multiaddr import Multiaddr

from overlay.errors import (
    DecodeError,
    InvalidSignature,
    LocalProtocolError,
    OverlayError,
    StreamClosed,
)
from overlay.identity import PeerId, PeerRecord, PrivateKey, open_peer_record, seal_peer_record
from overlay.identity.peer_record import MAX_PEER_RECORD_ADDRS
from overlay.rendezvous.errors import RendezvousDecodeError, RendezvousRefused
from overlay.rendezvous.messages import (
    MAX_RESPONSE_SIZE,
    PROTOCOL_ID,
    Discover,
    DiscoverResponse,
    Register,
    RegisterResponse,
    RendezvousMessage,
    Status,
    Unregister,
    check_namespace,
    decode_message,
    encode_message,
    status_name,
)
from overlay.rendezvous.refresh import RefreshConfig, RefreshDue, RefreshPlan
from overlay.supervisor import RestartPolicy, Supervisor
from overlay.wire.stream import ByteStream
from overlay.wire.varint import frame, read_frame

__all__ = [
    "ClientHost",
    "DiscoveredPeer",
    "DiscoveryPage",
    "RendezvousClient",
    "Refresher",
]

log = logging.getLogger(__name__)


class ClientHost(Protocol):
    """What the client needs of a host."""

    @property
    def peer_id(self) -> PeerId: ...

    async def new_stream(self, peer_id: PeerId, protocols: Sequence[str]) -> ByteStream: ...


@dataclass(frozen=True, slots=True)
class DiscoveredPeer:
    """A registration whose signed record verified."""

    ns: str
    peer: PeerId
    addrs: tuple[Multiaddr, ...]
    ttl: int
    """Seconds the registration has left, as the point reported."""


@dataclass(frozen=True, slots=True)
class DiscoveryPage:
    peers: tuple[DiscoveredPeer, ...]
    cookie: bytes
    """Pass it to the next ``discover`` to get only newer registrations."""
    rejected: int = 0
    """Registrations dropped because their record did not verify."""


def _multiaddr(raw: bytes) -> Multiaddr | None:
    try:
        return Multiaddr(raw)
    except (ValueError, TypeError, KeyError):  # py-multiaddr raises several kinds
        return None


class RendezvousClient:
    """Requests to rendezvous points on behalf of ``host``.

    ``addrs()`` gives the addresses to advertise (the daemon passes its
    listen and observed addresses); each REGISTER carries a peer record of
    them, freshly signed with ``key`` and sequenced by the wall clock.
    """

    def __init__(self, host: ClientHost, key: PrivateKey, addrs: Callable[[], Sequence[Multiaddr]],
                 *, timeout: float = 10.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self._key = key
        self._addrs = addrs
        self.timeout = timeout
        self._wall = wall_clock

    def signed_record(self) -> bytes:
        unique = list(dict.fromkeys(a.to_bytes() for a in self._addrs()))
        record = PeerRecord(self.host.peer_id, int(self._wall() * 1_000_000),
                            tuple(unique[:MAX_PEER_RECORD_ADDRS]))
        return seal_peer_record(self._key, record)

    async def _exchange(self, point: PeerId, request: RendezvousMessage,
                        answer: bool = True) -> RendezvousMessage | None:
        async with asyncio.timeout(self.timeout):
            stream = await self.host.new_stream(point, [PROTOCOL_ID])
            try:
                stream.write(frame(encode_message(request)))
                await stream.drain()
                if not answer:
                    await stream.close()
                    # The point closes its side once it has read our EOF, so
                    # waiting for it confirms the request arrived (a daemon
                    # stopping right after would otherwise lose it).
                    if await read_frame(stream, MAX_RESPONSE_SIZE) is not None:
                        raise RendezvousDecodeError("an answer to a request that has none")
                    return None
                data = await read_frame(stream, MAX_RESPONSE_SIZE)
                if data is None:
                    raise StreamClosed("the rendezvous point closed the stream without answering")
                reply = decode_message(data, MAX_RESPONSE_SIZE)
                await stream.close()
                return reply
            except BaseException:
                stream.reset()
                raise

    async def register(self, point: PeerId, ns: str, ttl: int | None = None) -> int:
        """Register at ``point`` under ``ns``; the TTL granted, in seconds.
        Raises ``RendezvousRefused`` with the point's status."""
        check_namespace(ns)
        reply = await self._exchange(point, Register(ns, self.signed_record(), ttl))
        if not isinstance(reply, RegisterResponse):
            raise RendezvousDecodeError(f"a {type(reply).__name__} answer to REGISTER")
        if reply.status != Status.OK:
            raise RendezvousRefused(reply.status, status_name(reply.status), reply.status_text)
        return reply.ttl

    async def unregister(self, point: PeerId, ns: str) -> None:
        """Tell ``point`` to drop our registration under ``ns`` (no answer)."""
        check_namespace(ns)
        await self._exchange(point, Unregister(ns, self.host.peer_id.to_bytes()), answer=False)

    async def discover(self, point: PeerId, ns: str = "", limit: int | None = None,
                       cookie: bytes = b"") -> DiscoveryPage:
        """Registrations under ``ns`` (every namespace if empty) at ``point``."""
        check_namespace(ns, allow_empty=True)
        reply = await self._exchange(point, Discover(ns, limit, cookie))
        if not isinstance(reply, DiscoverResponse):
            raise RendezvousDecodeError(f"a {type(reply).__name__} answer to DISCOVER")
        if reply.status != Status.OK:
            raise RendezvousRefused(reply.status, status_name(reply.status), reply.status_text)
        peers: list[DiscoveredPeer] = []
        rejected = 0
        for reg in reply.registrations:
            # The point is not trusted: each record must prove itself.
            try:
                record = open_peer_record(reg.signed_peer_record)
            except (DecodeError, InvalidSignature):
                rejected += 1
                continue
            addrs = tuple(a for a in map(_multiaddr, record.addrs) if a is not None)
            peers.append(DiscoveredPeer(reg.ns, record.peer_id, addrs, reg.ttl or 0))
        return DiscoveryPage(tuple(peers), reply.cookie, rejected)


class Refresher:
    """Keeps registrations alive: ``add`` after a successful register,
    ``remove`` on unregister; ``async with refresher:`` runs ``run()``, which
    re-registers as the ``RefreshPlan`` says, under a supervisor of its own."""

    def __init__(self, client: RendezvousClient, config: RefreshConfig | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.plan = RefreshPlan(config)
        self._clock = clock
        self._wake = asyncio.Event()
        self.refreshed = 0
        """Successful refreshes so far (tests and status wait on it)."""
        self.changed = asyncio.Condition()
        self._sup: Supervisor | None = None

    async def __aenter__(self) -> Refresher:
        if self._sup is not None:
            raise LocalProtocolError("the refresher is already running")
        self._sup = await Supervisor("rendezvous", log).__aenter__()
        # A bug in the loop restarts it after back-off; registrations stay kept.
        self._sup.spawn(self.run, "rendezvous refresher", restart=RestartPolicy())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.aclose()

    def add(self, point: PeerId, ns: str, ttl: int | None, granted: int) -> None:
        self.plan.registered(point, ns, ttl, granted, self._clock())
        self._wake.set()

    def remove(self, point: PeerId, ns: str) -> None:
        self.plan.remove(point, ns)
        self._wake.set()

    async def run(self) -> None:
        while True:
            deadline = self.plan.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            for due in self.plan.due(self._clock()):
                await self._refresh(due)

    async def _refresh(self, due: RefreshDue) -> None:
        try:
            granted = await self.client.register(due.point, due.ns, due.ttl)
        except (OverlayError, TimeoutError, OSError) as exc:
            kept = self.plan.failed(due.point, due.ns, self._clock())
            log.info("refreshing %r at %s failed (%s)%s", due.ns, due.point, exc,
                     "" if kept else "; giving up")
            return
        if not self.plan.refreshed(due.point, due.ns, granted, self._clock()):
            # Unregistered while the refresh was under way: undo it.
            try:
                await self.client.unregister(due.point, due.ns)
            except (OverlayError, TimeoutError, OSError) as exc:
                log.info("undoing a raced refresh of %r failed: %s", due.ns, exc)
            return
        async with self.changed:
            self.refreshed += 1
            self.changed.notify_all()
