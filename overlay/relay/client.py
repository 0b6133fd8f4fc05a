"""The client side of circuit relay v2: reservations, hop CONNECT, and the
stop handler that accepts circuits from relays we hold a reservation with.

``reserve`` and ``open_circuit`` are one request each on a fresh hop
stream.  ``RelayClient`` registers the stop handler and remembers our
reservations; ``AutoRelay`` (in ``autorelay.py``) keeps them renewed.
What a relay sends is checked: a voucher must be signed by that relay and
name it and us, a stop CONNECT must come from a relay we reserved on, and
every message is size-limited and typed, so a lying or broken relay costs
its stream and nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol

from multiaddr import Multiaddr

from overlay.errors import DecodeError, InvalidMultiaddr, OverlayError, RemoteProtocolError
from overlay.identity import PeerId
from overlay.multiaddrs import multiaddr_from_bytes, split_p2p, with_p2p
from overlay.relay.circuit import Circuit, CircuitLimit
from overlay.relay.errors import (
    RelayDecodeError,
    UnexpectedRelayMessage,
    refusal_for_status,
)
from overlay.relay.messages import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    STOP_PROTOCOL,
    HopMessage,
    HopType,
    Limit,
    Peer,
    Status,
    StopMessage,
    StopType,
    decode_hop,
    decode_stop,
    encode_hop,
    encode_stop,
    status_name,
)
from overlay.relay.voucher import Voucher, open_voucher
from overlay.supervisor import contain
from overlay.wire.stream import ByteStream
from overlay.wire.varint import frame, read_frame

__all__ = [
    "REQUEST_TIMEOUT",
    "ReservationInfo",
    "ClientStream",
    "ClientHost",
    "OnCircuit",
    "reserve",
    "open_circuit",
    "circuit_addr",
    "RelayClient",
    "StopHint",
    "STOP_HINT_ADDRS",
]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT: Final = 10.0
"""Seconds for a relay to answer a RESERVE or a CONNECT."""


class ClientStream(ByteStream, Protocol):
    @property
    def remote_peer(self) -> PeerId: ...


class ClientHost(Protocol):
    peer_id: PeerId

    def set_stream_handler(self, protocol: str, handler: Callable[..., object]) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    async def new_stream(self, peer_id: PeerId, protocols: Sequence[str]) -> ClientStream: ...


OnCircuit = Callable[[Circuit], Awaitable[None] | None]

STOP_HINT_ADDRS: Final = 2
"""Addresses of a stop CONNECT's peer passed on as hints; the rest are
dropped (our relays send one, the source of the initiator's connection)."""


@dataclass(frozen=True, slots=True)
class StopHint:
    """What a relay we reserved on said about the peer of a circuit it
    brought us: who (as it claims) and where that peer connects from.
    Unverified: a hint to punch towards, never an address to trust."""

    relay: PeerId
    peer: PeerId
    addrs: tuple[bytes, ...]
    """Binary multiaddrs, at most ``STOP_HINT_ADDRS``, as on the wire."""


StopObserver = Callable[[StopHint], None]


@dataclass(frozen=True, slots=True)
class ReservationInfo:
    """A reservation a relay granted us."""

    relay: PeerId
    expire: int
    """Unix seconds (the relay's wall clock)."""
    addrs: tuple[Multiaddr, ...]
    """The relay's public addresses, each ending in ``/p2p/<relay>``."""
    voucher: Voucher | None
    """Verified; ``None`` when the relay sent none (it is optional)."""
    limit: CircuitLimit | None


def circuit_limit(limit: Limit | None) -> CircuitLimit | None:
    if limit is None or (limit.duration is None and limit.data is None):
        return None
    return CircuitLimit(None if limit.duration is None else float(limit.duration), limit.data)


def circuit_addr(relay_addr: Multiaddr, relay: PeerId) -> Multiaddr:
    """``<relay_addr>/p2p/<relay>/p2p-circuit``: where we can be reached
    (identify form; dialers append ``/p2p/<us>``)."""
    return Multiaddr(f"{with_p2p(relay_addr, relay)}/p2p-circuit")


async def _request(host: ClientHost, relay: PeerId, message: HopMessage,
                   what: str) -> tuple[ClientStream, HopMessage]:
    stream = await host.new_stream(relay, [HOP_PROTOCOL])
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            stream.write(frame(encode_hop(message)))
            await stream.drain()
            data = await read_frame(stream, MAX_MESSAGE_SIZE)
        if data is None:
            raise RelayDecodeError("the relay closed the hop stream without answering")
        answer = decode_hop(data)
        if answer.type is not HopType.STATUS:
            raise UnexpectedRelayMessage(f"a hop {answer.type.name} where a STATUS belongs")
        if answer.status != Status.OK:
            code = answer.status if answer.status is not None else 0
            raise refusal_for_status(code, status_name(code), what)
    except BaseException:
        stream.reset()
        raise
    return stream, answer


async def reserve(host: ClientHost, relay: PeerId) -> ReservationInfo:
    """Ask ``relay`` for a reservation.  Raises a ``RelayRefused`` subclass
    for a refusal, ``InvalidVoucher`` for a voucher that does not verify or
    names another relay or peer, ``RelayDecodeError`` for garbage."""
    stream, answer = await _request(host, relay, HopMessage(HopType.RESERVE),
                                    f"reservation at {relay}")
    await stream.close()
    rsvp = answer.reservation
    if rsvp is None:
        raise RelayDecodeError("an OK to RESERVE without a reservation")
    voucher = None
    if rsvp.voucher:
        voucher = open_voucher(rsvp.voucher, relay=relay, peer=host.peer_id,
                               expiration=rsvp.expire)
    addrs: list[Multiaddr] = []
    for raw in rsvp.addrs:
        try:
            addr = multiaddr_from_bytes(raw)
            base, named = split_p2p(addr)
        except (DecodeError, InvalidMultiaddr):
            continue  # one bad address does not spoil the others
        if named is not None and named != relay:
            continue
        if "/p2p-circuit" in str(base):
            continue  # no circuits over circuits
        addrs.append(with_p2p(base, relay))
    if not addrs:
        # The addresses are optional in the spec: fall back to the one we
        # reached the relay at, if the connection is direct.
        conn = getattr(stream, "conn", None)
        if getattr(conn, "path", None) == "direct":
            remote = getattr(conn, "remote_multiaddr", None)
            if isinstance(remote, Multiaddr):
                addrs.append(with_p2p(remote, relay))
    return ReservationInfo(relay, rsvp.expire, tuple(addrs), voucher,
                           circuit_limit(answer.limit))


async def open_circuit(host: ClientHost, relay: PeerId, target: PeerId) -> Circuit:
    """A relayed byte stream to ``target`` through ``relay`` (hop CONNECT).

    Raises ``NoReservation`` when ``target`` holds none on ``relay``,
    ``ResourceLimitExceeded``, ``PermissionDenied``, ``ConnectionFailed``
    (the relay could not reach the target, or the target refused), or a
    ``RemoteProtocolError`` for a relay that answers garbage."""
    stream, answer = await _request(host, relay, HopMessage(HopType.CONNECT, Peer(target)),
                                    f"circuit to {target} through {relay}")
    return Circuit(stream, relay, target, circuit_limit(answer.limit), initiator=True)


class RelayClient:
    """The stop handler and our reservations.  ``on_circuit`` receives each
    accepted inbound circuit (by default the host's circuit transport);
    without one, stop CONNECTs are refused with CONNECTION_FAILED."""

    def __init__(self, host: ClientHost, *, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        transport = getattr(host, "circuit_transport", None)
        self.on_circuit: OnCircuit | None = getattr(transport, "on_circuit", None)
        """The host's circuit transport when it has one (Noise, yamux, adoption)."""
        self._reservations: dict[PeerId, ReservationInfo] = {}
        self._clock = clock
        self.stop_refused = 0
        self.circuits_accepted = 0
        self.changed = asyncio.Event()
        """Set whenever the reservations change or a circuit arrives."""
        self._stop_observers: list[StopObserver] = []

    def observe_stops(self, observer: StopObserver) -> Callable[[], None]:
        """Call ``observer`` with each accepted circuit's ``StopHint`` (only
        when the relay named addresses), before the circuit is upgraded;
        returns the function that unregisters it.  Observers must be quick
        and must not raise (a raise is logged, the circuit goes on)."""
        self._stop_observers.append(observer)

        def remove() -> None:
            if observer in self._stop_observers:
                self._stop_observers.remove(observer)
        return remove

    async def __aenter__(self) -> RelayClient:
        self.host.set_stream_handler(STOP_PROTOCOL, self.handle_stop)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.host.remove_stream_handler(STOP_PROTOCOL)

    # -- reservations --------------------------------------------------------

    async def reserve(self, relay: PeerId) -> ReservationInfo:
        """Reserve (or renew) on ``relay`` and remember it."""
        info = await reserve(self.host, relay)
        self._reservations[relay] = info
        self.changed.set()
        return info

    def forget(self, relay: PeerId) -> None:
        if self._reservations.pop(relay, None) is not None:
            self.changed.set()

    def reservations(self) -> list[ReservationInfo]:
        """Live reservations (expired ones are dropped on the way)."""
        now = self._clock()
        for relay in [r for r, i in self._reservations.items() if i.expire <= now]:
            self.forget(relay)
        return sorted(self._reservations.values(), key=lambda i: i.expire)

    def reservation(self, relay: PeerId) -> ReservationInfo | None:
        return self._reservations.get(relay)

    def circuit_addrs(self, *, with_self: bool = False) -> list[Multiaddr]:
        """``…/p2p/<relay>/p2p-circuit`` for each address of each live
        reservation (``/p2p/<us>`` appended when ``with_self``)."""
        out: list[Multiaddr] = []
        for info in self.reservations():
            for addr in info.addrs:
                circuit = circuit_addr(addr, info.relay)
                if with_self:
                    circuit = Multiaddr(f"{circuit}/p2p/{self.host.peer_id}")
                out.append(circuit)
        return out

    # -- stop ---------------------------------------------------------------

    async def _stop_status(self, stream: ByteStream, status: Status) -> None:
        stream.write(frame(encode_stop(StopMessage(StopType.STATUS, status=status))))
        await stream.drain()

    async def handle_stop(self, stream: ClientStream) -> None:
        relay = stream.remote_peer
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                data = await read_frame(stream, MAX_MESSAGE_SIZE)
            if data is None:
                raise RelayDecodeError("the relay closed the stop stream")
            request = decode_stop(data)
            if request.type is not StopType.CONNECT:
                raise UnexpectedRelayMessage(f"a stop {request.type.name} where CONNECT belongs")
            if request.peer is None:
                raise RelayDecodeError("a stop CONNECT without the peer")
        except (RemoteProtocolError, TimeoutError) as exc:
            log.debug("stop stream from %s: %r", relay, exc)
            self.stop_refused += 1
            status = (Status.UNEXPECTED_MESSAGE if isinstance(exc, UnexpectedRelayMessage)
                      else Status.MALFORMED_MESSAGE)
            await self._refuse(stream, status)
            return
        if relay not in self._reservations:
            # Only relays we asked may bring us circuits: anyone else could
            # otherwise claim any peer ID at the other end.
            self.stop_refused += 1
            await self._refuse(stream, Status.PERMISSION_DENIED)
            return
        callback = self.on_circuit
        if callback is None or request.peer.id == self.host.peer_id:
            self.stop_refused += 1
            await self._refuse(stream, Status.CONNECTION_FAILED)
            return
        try:
            await self._stop_status(stream, Status.OK)
        except OverlayError:
            stream.reset()
            return
        if request.peer.addrs:
            hint = StopHint(relay, request.peer.id, request.peer.addrs[:STOP_HINT_ADDRS])
            for observer in list(self._stop_observers):
                contain(partial(observer, hint),
                        lambda exc: log.error("stop observer failed", exc_info=exc))
        circuit = Circuit(stream, relay, request.peer.id, circuit_limit(request.limit),
                          initiator=False)
        self.circuits_accepted += 1
        self.changed.set()
        result = callback(circuit)
        if inspect.isawaitable(result):
            await result

    async def _refuse(self, stream: ByteStream, status: Status) -> None:
        try:
            await self._stop_status(stream, status)
            await stream.close()
        except OverlayError:
            stream.reset()
