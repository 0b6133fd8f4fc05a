"""Outbound kad requests over a host, and the counters of the network service.

One request is one stream: negotiate (lazily by default, so the request
rides with the protocol proposal), write the message, read one checked
answer, half-close.  Each answered request is a round-trip sample for the
RTT estimator, and each request's timeout comes from it (``timeout_for``):
hundreds of milliseconds on a LAN, ``request_timeout`` at most.  Addresses named in closer-peer lists reach the
peerstore only here, just before they are dialed, and only in QUIC form.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from multiaddr import Multiaddr

from overlay.errors import DecodeError, InvalidMultiaddr, OverlayError
from overlay.host.events import HostListener
from overlay.host.host import StreamHandler
from overlay.host.peerstore import Peerstore
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import LookupKind
from overlay.kad.messages import KadMessage
from overlay.kad.net_stream import check_response, read_kad_message, write_kad_message
from overlay.kad.rtt import RttConfig, RttEstimator
from overlay.kad.service_config import KadServiceConfig
from overlay.multiaddrs import (
    QuicAddr,
    multiaddr_from_bytes,
    parse_circuit_multiaddr,
    parse_quic_multiaddr,
)

__all__ = ["KadHost", "KadRpc", "KadStats", "LookupStats", "dialable_addr", "quic_addr"]

_RECENT_ERRORS = 64
_RECENT_LOOKUPS = 1024


class KadHost(Protocol):
    """The slice of ``overlay.host.Host`` the kad service uses."""

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def peerstore(self) -> Peerstore: ...

    def listen_addrs(self) -> list[Multiaddr]: ...

    def peers(self) -> list[PeerId]: ...

    async def ping(self, peer_id: PeerId) -> float: ...

    def disconnect(self, peer_id: PeerId) -> None: ...

    async def connect(self, multiaddr: str | Multiaddr) -> Connection: ...

    async def new_stream(
        self, peer_id: PeerId, protocols: Sequence[str], *, lazy: bool = False
    ) -> NegotiatedStream: ...

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    def add_listener(self, listener: HostListener) -> None: ...

    def remove_listener(self, listener: HostListener) -> None: ...


@dataclass(slots=True)
class LookupStats:
    """One finished lookup, for figures and the API."""

    kind: LookupKind
    seconds: float
    messages: int
    answered: int
    failed: int
    rounds: int


@dataclass(slots=True)
class KadStats:
    """Counters of the service; ``inbound_errors`` keeps the most recent
    typed errors that made us reset an inbound stream."""

    requests_sent: int = 0
    requests_failed: int = 0
    requests_served: int = 0
    inbound_rejected: int = 0
    inbound_errors: deque[tuple[PeerId, OverlayError]] = field(
        default_factory=lambda: deque(maxlen=_RECENT_ERRORS)
    )
    lookups: deque[LookupStats] = field(default_factory=lambda: deque(maxlen=_RECENT_LOOKUPS))


def dialable_addr(data: bytes, peer: PeerId) -> Multiaddr | None:
    """An address of ``peer`` that one of our transports dials, from a
    peer-supplied binary multiaddr, without the trailing ``/p2p/<peer>``:
    a QUIC address, or a circuit ``[<relay QUIC address>]/p2p/<relay>/p2p-circuit``
    (how peers behind NATs are reached).  None for anything else."""
    try:
        addr = multiaddr_from_bytes(data)
    except (DecodeError, InvalidMultiaddr):
        return None
    try:
        parsed = parse_quic_multiaddr(addr)
    except InvalidMultiaddr:
        return _circuit_addr(addr, peer)
    if parsed.peer_id is not None and parsed.peer_id != peer:
        return None
    if not _usable(parsed):
        return None
    return parsed.with_peer_id(None).to_multiaddr()


quic_addr = dialable_addr
"""The older name, from when only QUIC addresses were kept."""


def _usable(parsed: QuicAddr) -> bool:
    return parsed.port != 0 and parsed.host not in ("0.0.0.0", "::")


def _circuit_addr(addr: Multiaddr, peer: PeerId) -> Multiaddr | None:
    try:
        circuit = parse_circuit_multiaddr(addr)
        if circuit.target not in (None, peer) or circuit.relay == peer:
            return None
        if circuit.relay_has_address and not _usable(parse_quic_multiaddr(circuit.relay_addr)):
            return None
    except InvalidMultiaddr:
        return None
    return Multiaddr(f"{circuit.relay_addr}/p2p-circuit")


class KadRpc:
    """Sends kad requests on ``config.protocol_id`` through ``host``."""

    def __init__(
        self,
        host: KadHost,
        config: KadServiceConfig,
        stats: KadStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.config = config
        self.stats = stats
        self._clock = clock
        self.rtt = RttEstimator(
            RttConfig(
                min_timeout=config.min_request_timeout,
                min_dial_timeout=min(2 * config.min_request_timeout, config.request_timeout),
                max_timeout=config.request_timeout,
            )
        )

    def timeout_for(self, contact: Contact) -> float:
        """Seconds to wait for ``contact``'s answer (its dial included
        when no connection is open)."""
        peer = contact.peer_id
        return self.rtt.timeout(peer, connected=peer in self.host.peers())

    def remember_addrs(self, contact: Contact) -> None:
        peer = contact.peer_id
        if peer in self.host.peers() or not contact.addrs:
            return
        addrs = [a for a in (quic_addr(raw, peer) for raw in contact.addrs) if a is not None]
        if addrs:
            self.host.peerstore.add_addrs(peer, addrs)

    async def request(
        self,
        contact: Contact,
        message: KadMessage,
        *,
        timeout: float | None = None,
        lazy: bool | None = None,
    ) -> KadMessage:
        """Send ``message`` to ``contact`` on a fresh stream and return its
        checked answer within ``timeout`` (by default ``timeout_for``);
        raises overlay errors or ``TimeoutError``.  ``lazy=False`` waits for
        the protocol to be confirmed first, so a refusal is reported as
        ``ProtocolNotSupported`` rather than a reset."""
        self.remember_addrs(contact)
        self.stats.requests_sent += 1
        dialed = contact.peer_id not in self.host.peers()
        if timeout is None:
            timeout = self.rtt.timeout(contact.peer_id, connected=not dialed)
        started = self._clock()
        try:
            async with asyncio.timeout(timeout):
                stream = await self.host.new_stream(
                    contact.peer_id,
                    [self.config.protocol_id],
                    lazy=self.config.lazy_negotiation if lazy is None else lazy,
                )
                try:
                    await write_kad_message(stream, message)
                    response = check_response(message, await read_kad_message(stream))
                    await stream.close()
                except BaseException:
                    stream.reset()
                    raise
        except (OverlayError, TimeoutError, OSError):
            self.stats.requests_failed += 1
            raise
        now = self._clock()
        self.rtt.sample(contact.peer_id, now - started, now, dialed=dialed)
        return response

    async def send_only(self, contact: Contact, message: KadMessage) -> None:
        """ADD_PROVIDER has no answer: negotiate (not lazily, so a refusal
        shows), write and half-close."""
        self.remember_addrs(contact)
        self.stats.requests_sent += 1
        try:
            async with asyncio.timeout(self.timeout_for(contact)):
                stream = await self.host.new_stream(contact.peer_id, [self.config.protocol_id])
                try:
                    await write_kad_message(stream, message)
                    await stream.close()
                except BaseException:
                    stream.reset()
                    raise
        except (OverlayError, TimeoutError, OSError):
            self.stats.requests_failed += 1
            raise
