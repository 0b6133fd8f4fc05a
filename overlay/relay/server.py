"""The hop side of circuit relay v2: the thin asyncio driver around
``RelayCore``.

``async with RelayServer(host, key, limits) as server:`` serves
``/libp2p/circuit/relay/0.2.0/hop`` on ``host``.  A RESERVE is answered
with a voucher; a CONNECT opens a stop stream to the target over the
connection it holds to us, and the two streams are spliced under the
circuit's limits: bytes are counted each way, the duration runs on a
timer, and each direction holds at most one chunk in flight (read, write,
drain), so a slow reader slows its sender instead of filling our memory.
Over a limit, both streams are reset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from multiaddr import Multiaddr

from overlay.errors import OverlayError, RemoteProtocolError, TransportError
from overlay.host.addrs import socket_to_multiaddr
from overlay.host.events import HostListener
from overlay.identity import PeerId, PrivateKey
from overlay.multiaddrs import with_p2p
from overlay.relay.errors import RelayDecodeError
from overlay.relay.messages import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    STOP_PROTOCOL,
    HopMessage,
    HopType,
    Limit,
    Peer,
    Reservation,
    Status,
    StopMessage,
    StopType,
    decode_hop,
    decode_stop,
    encode_hop,
    encode_stop,
)
from overlay.relay.splice import SPLICE_CHUNK, splice
from overlay.relay.server_core import Admitted, Refused, RelayCore, RelayLimits, RelayServerStats
from overlay.relay.voucher import Voucher, seal_voucher
from overlay.wire.stream import ByteStream
from overlay.wire.varint import frame, read_frame

__all__ = ["RelayServer", "RelayStream", "RelayHost", "SPLICE_CHUNK", "STOP_HINTS_MAX",
           "observed_addrs", "splice"]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
"""Seconds for a hop request, and for the target to answer a stop CONNECT."""


class RelayStream(ByteStream, Protocol):
    """A negotiated stream as the handler receives it."""

    @property
    def remote_peer(self) -> PeerId: ...

    @property
    def conn(self) -> object: ...


class RelayHost(Protocol):
    peer_id: PeerId

    def set_stream_handler(self, protocol: str, handler: Callable[..., object]) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    async def new_stream(self, peer_id: PeerId, protocols: Sequence[str]) -> RelayStream: ...

    def advertised_addrs(self) -> list[Multiaddr]: ...

    def add_listener(self, listener: HostListener) -> None: ...

    def remove_listener(self, listener: HostListener) -> None: ...


def _conn_ip(stream: RelayStream) -> str | None:
    address = getattr(stream.conn, "remote_address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None


def _is_relayed(stream: RelayStream) -> bool:
    return getattr(stream.conn, "path", "direct") == "relayed"


STOP_HINTS_MAX: Final = 1
"""Observed addresses of the initiator put in a stop CONNECT's ``peer``:
the source of the one connection its hop CONNECT came on."""


def observed_addrs(stream: RelayStream) -> tuple[bytes, ...]:
    """Where the hop stream's connection comes from, as a QUIC multiaddr
    (at most ``STOP_HINTS_MAX``): the initiator's public mapping as the
    relay sees it.  The spec's stop ``peer`` needs only the id and other
    implementations ignore the addresses; ours punch towards them at once
    (docs/nat.md, "Hints from the relay").  None for a relayed stream."""
    if _is_relayed(stream):
        return ()
    address = getattr(stream.conn, "remote_address", None)
    if not (isinstance(address, tuple) and len(address) >= 2):
        return ()
    try:
        addr = socket_to_multiaddr(str(address[0]), int(address[1]))
    except ValueError:
        return ()
    return (addr.to_bytes(),)[:STOP_HINTS_MAX]


async def _send_hop(stream: ByteStream, message: HopMessage) -> None:
    stream.write(frame(encode_hop(message)))
    await stream.drain()


class RelayServer:
    """Serves the hop protocol; ``clock`` is the wall clock for vouchers,
    ``monotonic`` the core's ``now``."""

    def __init__(
        self,
        host: RelayHost,
        private_key: PrivateKey,
        limits: RelayLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        addrs: Callable[[], Sequence[Multiaddr]] | None = None,
    ) -> None:
        self.host = host
        self._key = private_key
        self.core = RelayCore(host.peer_id, limits)
        self._clock = clock
        self._monotonic = monotonic
        # What identify advertises: listen addresses and the public
        # mappings AutoNAT confirmed.
        self._addrs = addrs or host.advertised_addrs
        self.circuit_done = asyncio.Event()
        """Set each time a circuit ends (tests wait on it instead of sleeping)."""
        # A reservation lives on its connection: once the peer is gone the
        # relay cannot reach it, so the slot is freed (and CONNECTs to it
        # get NO_RESERVATION rather than a failed dial).
        self._listener = HostListener(disconnected=self.core.cancel_reservation)

    @property
    def limits(self) -> RelayLimits:
        return self.core.limits

    async def __aenter__(self) -> RelayServer:
        self.host.set_stream_handler(HOP_PROTOCOL, self.handle_hop)
        self.host.add_listener(self._listener)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.host.remove_listener(self._listener)
        self.host.remove_stream_handler(HOP_PROTOCOL)

    def stats(self) -> RelayServerStats:
        self.core.expire(self._monotonic())
        return self.core.stats()

    def reservations(self) -> list[tuple[PeerId, float]]:
        """(peer, wall-clock expiry) for each live reservation."""
        now = self._monotonic()
        self.core.expire(now)
        offset = self._clock() - now
        return [(peer, expires + offset) for peer, expires in self.core.reservations()]

    async def handle_hop(self, stream: RelayStream) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                data = await read_frame(stream, MAX_MESSAGE_SIZE)
            if data is None:
                await stream.close()
                return
            request = decode_hop(data)
        except (RemoteProtocolError, TimeoutError) as exc:
            # The status is a courtesy; the stream is lost either way.
            self.core.refuse(Status.MALFORMED_MESSAGE,
                             "timeout" if isinstance(exc, TimeoutError) else "malformed")
            log.debug("hop request from %s: %r", stream.remote_peer, exc)
            await self._status(stream, Status.MALFORMED_MESSAGE)
            return
        if request.type is HopType.RESERVE:
            await self._reserve(stream)
        elif request.type is HopType.CONNECT:
            await self._connect(stream, request)
        else:
            self.core.refuse(Status.UNEXPECTED_MESSAGE, "unexpected")
            await self._status(stream, Status.UNEXPECTED_MESSAGE)

    async def _status(self, stream: ByteStream, status: Status) -> None:
        try:
            await _send_hop(stream, HopMessage(HopType.STATUS, status=status))
            await stream.close()
        except TransportError:
            stream.reset()

    async def _reserve(self, stream: RelayStream) -> None:
        peer = stream.remote_peer
        if _is_relayed(stream):
            # A reservation must ride a direct connection (the spec's rule).
            self.core.refuse(Status.PERMISSION_DENIED, "relayed_reservation")
            await self._status(stream, Status.PERMISSION_DENIED)
            return
        now = self._monotonic()
        outcome = self.core.reserve(peer, _conn_ip(stream), now)
        if isinstance(outcome, Refused):
            await self._status(stream, outcome.status)
            return
        expire = int(self._clock() + (outcome.expires - now))
        voucher = seal_voucher(self._key, Voucher(self.host.peer_id, peer, expire))
        addrs = tuple(with_p2p(addr, self.host.peer_id).to_bytes() for addr in self._addrs()
                      if "/p2p-circuit" not in str(addr))
        reply = HopMessage(
            HopType.STATUS,
            reservation=Reservation(expire, addrs, voucher),
            limit=outcome.limit,
            status=Status.OK,
        )
        try:
            await _send_hop(stream, reply)
            await stream.close()
        except TransportError:
            stream.reset()
            self.core.cancel_reservation(peer)

    async def _connect(self, stream: RelayStream, request: HopMessage) -> None:
        src = stream.remote_peer
        if request.peer is None:
            self.core.refuse(Status.MALFORMED_MESSAGE, "malformed")
            await self._status(stream, Status.MALFORMED_MESSAGE)
            return
        dst = request.peer.id
        outcome = self.core.admit(src, dst, self._monotonic())
        if not isinstance(outcome, Admitted):
            await self._status(stream, outcome.status)
            return
        relayed = 0
        cut = False
        try:
            target = await self._open_stop(src, dst, outcome.limit, observed_addrs(stream))
            if target is None:
                await self._status(stream, Status.CONNECTION_FAILED)
                return
            try:
                await _send_hop(stream, HopMessage(HopType.STATUS, limit=outcome.limit,
                                                   status=Status.OK))
            except TransportError:
                stream.reset()
                target.reset()
                return
            limits = self.core.limits
            limited = outcome.limit is not None
            circuit_id = outcome.circuit_id
            relayed, cut = await splice(
                stream, target,
                data_limit=limits.circuit_data if limited else None,
                duration=limits.circuit_duration if limited else None,
                on_moved=lambda n: self.core.circuit_progress(circuit_id, n),
            )
        finally:
            self.core.circuit_closed(outcome.circuit_id, relayed, cut_by_limit=cut)
            self.circuit_done.set()

    async def _open_stop(self, src: PeerId, dst: PeerId, limit: Limit | None,
                         src_addrs: tuple[bytes, ...] = ()) -> RelayStream | None:
        """The target's stream after it accepted the stop CONNECT, or None.
        ``src_addrs`` (where ``src`` connects from) ride in the CONNECT's peer."""
        target: RelayStream | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                target = await self.host.new_stream(dst, [STOP_PROTOCOL])
                target.write(frame(encode_stop(StopMessage(StopType.CONNECT,
                                                           Peer(src, src_addrs), limit))))
                await target.drain()
                data = await read_frame(target, MAX_MESSAGE_SIZE)
                if data is None:
                    raise RelayDecodeError("the target closed the stop stream")
                answer = decode_stop(data)
        except (OverlayError, TimeoutError) as exc:
            log.debug("stop CONNECT to %s failed: %r", dst, exc)
            if target is not None:
                target.reset()
            self.core.refuse(Status.CONNECTION_FAILED, "target_unreachable")
            return None
        if answer.type is not StopType.STATUS or answer.status != Status.OK:
            target.reset()
            self.core.refuse(Status.CONNECTION_FAILED, "target_refused")
            return None
        return target
