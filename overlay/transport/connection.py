"""One QUIC connection: drives a sans-IO aioquic connection for the endpoint.

The endpoint feeds datagrams in; this class turns aioquic's events into
stream wake-ups, sends what aioquic produces, and keeps one timer armed at
aioquic's next deadline.  No task is spawned: everything runs in callbacks
and in the awaiting application coroutines.
"""

from __future__ import annotations

import asyncio
import errno
import datetime
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress
from cryptography import x509
from multiaddr import Multiaddr

from overlay.errors import (
    ConnectionClosed,
    DialError,
    HandshakeError,
    LocalProtocolError,
    PeerIdMismatch,
    TransportError,
)
from overlay.identity import PeerId, PublicKey
from overlay.supervisor import contain
from overlay.transport.addressing import peer_ip, quic_multiaddr, short_address
from overlay.transport.aioquic_compat import Libp2pQuicConnection
from overlay.transport.config import TransportConfig
from overlay.transport.errors import ClosedWithCode, EndpointClosed, PeerUnreachable
from overlay.transport.icmp import quoted_dcid
from overlay.transport.stream import RESET_ERROR_CODE, QuicStream
from overlay.transport.tls import CertificateVerifier

__all__ = ["QuicConn"]

log = logging.getLogger(__name__)

ALPN = "libp2p"
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})
# One UDP GSO send carries at most 64 segments and one IP datagram's bytes.
_BATCH_SEGMENTS = 64
_BATCH_BYTES = 65000
_MAX_REASON = 256
# Room a 1-RTT packet needs besides one DATAGRAM frame's payload: header
# (1 + connection ID + packet number), AEAD tag, frame type and length.
_DATAGRAM_OVERHEAD = 64
_MAX_DATAGRAMS_QUEUED = 256
# Datagrams kept until a handler is set: the peer may send at once, before
# the host has told its services about the new connection.
_MAX_EARLY_DATAGRAMS = 32
_MAX_EARLY_BYTES = 64 * 1024


class _Owner(Protocol):
    """What a connection needs from its endpoint."""

    @property
    def local_address(self) -> tuple[str, int]: ...

    def _send_datagram(self, data: bytes, addr: NetworkAddress) -> OSError | None: ...

    def _send_batch(self, datagrams: list[bytes], addr: NetworkAddress) -> bool: ...

    def _add_cid(self, cid: bytes, conn: QuicConn) -> None: ...

    def _remove_cid(self, cid: bytes) -> None: ...

    def _connection_ready(self, conn: QuicConn) -> None: ...

    def _connection_closed(self, conn: QuicConn) -> None: ...

    def _connection_terminated(self, conn: QuicConn) -> None: ...


def _clip(reason: str) -> str:
    """A reason phrase that fits a CONNECTION_CLOSE frame in one packet."""
    return reason.encode("utf-8")[:_MAX_REASON].decode("utf-8", "ignore")


class QuicConn:
    """An authenticated libp2p QUIC connection."""

    def __init__(
        self,
        owner: _Owner,
        quic_factory: Callable[[Callable[[Sequence[x509.Certificate]], None]], Libp2pQuicConnection],
        config: TransportConfig,
        *,
        is_initiator: bool,
        verifier: CertificateVerifier,
        expected_peer: PeerId | None = None,
    ) -> None:
        self.config = config
        self._verifier = verifier
        self.is_initiator = is_initiator
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._expected_peer = expected_peer
        self._remote_peer: PeerId | None = None
        self._remote_public_key: PublicKey | None = None
        # Why the handshake failed: what dial() raises.
        self._handshake_error: TransportError | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._is_ready = False
        self._datagram_size_picked = False
        self._error: ConnectionClosed | None = None
        self._closed = asyncio.Event()
        self._terminated = False
        self._quic = quic_factory(self._check_certificate)
        self._cids: set[bytes] = set()
        self._streams: dict[int, QuicStream] = {}
        self._next_peer_stream = 1 if is_initiator else 0
        self._implicit_peer_streams: set[int] = set()
        self._incoming: deque[QuicStream] = deque()
        self._incoming_event = asyncio.Event()
        self._credit_event = asyncio.Event()
        self._drain_waiters: set[QuicStream] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = self._loop.call_later(
            config.handshake_timeout, self._on_handshake_timeout
        )
        self._ping_uid = 0
        self._input_from_peer = False
        self._datagram_handler: Callable[[bytes], None] | None = None
        self._early_datagrams: list[bytes] | None = []
        self._early_bytes = 0
        self.datagrams_dropped = 0
        """Datagrams ``send_datagram`` refused because too many were queued."""
        self.last_received: float | None = None
        """Monotonic time of the last datagram from the peer's current
        address (re-punching tells a dead path from a quiet one by it)."""
        self.last_data_received: float | None = None
        """Same, for the last one that carried stream data or a DATAGRAM frame."""
        self._app_input = False
        self._add_cid(self._quic.host_cid)

    def __repr__(self) -> str:
        peer = self._remote_peer or self._expected_peer
        role = "out" if self.is_initiator else "in"
        return f"<QuicConn {role} {peer} {self.remote_address}>"

    # --- public API ---------------------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        if self._remote_peer is None:
            raise TransportError("the handshake has not authenticated the peer yet")
        return self._remote_peer

    @property
    def remote_public_key(self) -> PublicKey:
        if self._remote_public_key is None:
            raise TransportError("the handshake has not authenticated the peer yet")
        return self._remote_public_key

    @property
    def remote_address(self) -> tuple[str, int]:
        addr = self._quic.get_peer_address()
        return ("", 0) if addr is None else short_address(addr)

    @property
    def remote_multiaddr(self) -> Multiaddr:
        """The remote socket address as a QUIC multiaddr (without ``/p2p``)."""
        return quic_multiaddr(*self.remote_address)

    @property
    def path(self) -> Literal["direct"]:
        """A QUIC connection always goes straight to the peer."""
        return "direct"

    @property
    def limit(self) -> None:
        """QUIC connections carry no relay limits."""
        return None

    @property
    def local_address(self) -> tuple[str, int]:
        return self._owner.local_address

    @property
    def is_closed(self) -> bool:
        return self._error is not None

    @property
    def smoothed_rtt(self) -> float | None:
        """QUIC's smoothed round-trip estimate in seconds (None before the
        first acknowledgement)."""
        return self._quic.smoothed_rtt

    @property
    def close_reason(self) -> ConnectionClosed | None:
        """Why the connection closed, once it has."""
        return self._error

    async def open_stream(self) -> QuicStream:
        """Open a bidirectional stream, waiting while the peer's stream limit
        is reached; raises ``ConnectionClosed``."""
        while True:
            if self._error is not None:
                raise self._error
            if self._quic.bidi_stream_credit() > 0:
                break
            self._credit_event.clear()
            await self._credit_event.wait()
        stream_id = self._quic.get_next_available_stream_id()
        # An empty write creates the stream in aioquic without sending a frame.
        self._quic.send_stream_data(stream_id, b"")
        stream = QuicStream(self, stream_id)
        self._streams[stream_id] = stream
        return stream

    async def accept_stream(self) -> QuicStream:
        """The next stream the peer opened; raises ``ConnectionClosed``."""
        while True:
            if self._error is not None:
                raise self._error
            if self._incoming:
                return self._incoming.popleft()
            self._incoming_event.clear()
            await self._incoming_event.wait()

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE with an application code)."""
        if not 0 <= code < 1 << 62:
            raise LocalProtocolError("QUIC error codes are 62-bit unsigned integers")
        if self._error is not None:
            return
        self._quic.close(error_code=code, reason_phrase=_clip(reason))
        self._mark_closed(ConnectionClosed(f"connection closed locally: {reason or code}"))
        self._transmit()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def open_stream_count(self) -> int:
        """Streams not yet finished both ways (``MuxedConnection`` has it too)."""
        return len(self._streams)

    def send_ping(self) -> None:
        """A QUIC PING now: the peer acknowledges it at once, so a live path
        shows in ``last_received`` within a round trip."""
        if self._error is None and self._is_ready:
            self._ping_uid += 1
            self._quic.send_ping(self._ping_uid)
            self._schedule_transmit()

    @property
    def datagram_handler(self) -> Callable[[bytes], None] | None:
        """Called with each QUIC DATAGRAM frame's payload the peer sends
        (RFC 9221).  Until one is first set, the first 32 (64 KiB at most)
        are kept and handed to it then; other frames that arrive without a
        handler are dropped."""
        return self._datagram_handler

    @datagram_handler.setter
    def datagram_handler(self, handler: Callable[[bytes], None] | None) -> None:
        self._datagram_handler = handler
        early, self._early_datagrams = self._early_datagrams, None
        if handler is not None and early:
            for data in early:
                handler(data)

    @property
    def datagram_capacity(self) -> int:
        """The largest payload ``send_datagram`` takes now: 0 if the peer
        announced no datagram support (or before the handshake), else what
        fits in one packet and in the peer's ``max_datagram_frame_size``."""
        if not self._is_ready or self._error is not None:
            return 0
        peer_limit = self._quic.peer_max_datagram_frame_size
        if peer_limit is None:
            return 0
        # The peer counts the frame type and length in its limit.
        return max(0, min(peer_limit - 4, self._quic.max_datagram_size - _DATAGRAM_OVERHEAD))

    def send_datagram(self, data: bytes) -> bool:
        """Send ``data`` in one unreliable DATAGRAM frame (RFC 9221).  Returns
        False, sending nothing, when it is larger than ``datagram_capacity``
        or too many datagrams wait for congestion control: like an IP
        router's queue, the newest packet is dropped."""
        if len(data) > self.datagram_capacity:
            return False
        if self._quic.datagrams_queued >= _MAX_DATAGRAMS_QUEUED:
            self.datagrams_dropped += 1
            return False
        self._quic.send_datagram_frame(data)
        self._schedule_transmit()
        return True

    # --- handshake ----------------------------------------------------------

    async def _wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    def _check_certificate(self, chain: Sequence[x509.Certificate]) -> None:
        """Runs inside the TLS handshake (see aioquic_compat)."""
        try:
            public_key = self._verifier(chain, datetime.datetime.now(datetime.UTC))
            peer = PeerId.from_public_key(public_key)
            if self._expected_peer is not None and peer != self._expected_peer:
                raise PeerIdMismatch(str(self._expected_peer), str(peer))
        except HandshakeError as exc:
            self._handshake_error = exc
            raise
        self._remote_public_key = public_key
        self._remote_peer = peer

    def _on_handshake_done(self) -> None:
        if self._is_ready or self._error is not None:
            return
        if self._remote_peer is None:
            # The libp2p checks never ran; never hand out such a connection.
            self._fail(HandshakeError("peer was not authenticated"), code=0x1)
            return
        self._is_ready = True
        self._cancel_handshake_timer()
        if not self._ready.done():
            self._ready.set_result(None)
        self._arm_keepalive()
        if not self.is_initiator:
            self._owner._connection_ready(self)

    def _pick_datagram_size(self) -> None:
        """Larger datagrams to a loopback peer, once the handshake is
        confirmed: the peer's transport parameters are known then, and no
        more Initial packets follow (a client pads those to the full
        datagram size, which the receiver then walks byte by byte)."""
        ip = peer_ip(self.remote_address[0])
        quic = self._quic
        size = min(self.config.loopback_datagram_size, quic.peer_max_udp_payload)
        if ip is not None and ip.is_loopback and size > quic.max_datagram_size:
            quic.set_max_datagram_size(size)

    def _on_handshake_timeout(self) -> None:
        self._handshake_timer = None
        if self._is_ready:
            return
        timeout = self.config.handshake_timeout
        if self.is_initiator and self._quic.first_flight:
            self._fail(DialError(f"no QUIC response within {timeout:g} s"), code=0x1)
        else:
            self._fail(HandshakeError(f"handshake timed out after {timeout:g} s"), code=0x1)

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _fail(self, error: TransportError, code: int) -> None:
        reason = str(error)
        self._quic.close(error_code=code, reason_phrase=_clip(reason))
        closed = error if isinstance(error, ConnectionClosed) else ConnectionClosed(reason)
        if not self._is_ready:
            self._handshake_error = self._handshake_error or error
        self._mark_closed(closed)
        self._transmit()

    # --- input from the endpoint --------------------------------------------

    def _datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        now = time.monotonic()
        self._guarded(lambda: self._quic.receive_datagram(data, addr, now), from_peer=True)
        # A client drops packets from an address the server moved to (RFC
        # 9000 section 9): those do not show the path alive.
        if addr == self._quic.get_peer_address():
            self.last_received = now
            if self._app_input:
                self.last_data_received = now
        self._app_input = False

    def _on_timer(self) -> None:
        at = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        self._guarded(lambda: self._quic.handle_timer(max(time.monotonic(), at)), transmit=True)

    def _guarded(
        self, feed: Callable[[], None], *, transmit: bool = False, from_peer: bool = False
    ) -> None:
        """Feed aioquic one input, handle its events and optionally send.
        ``from_peer``: the input is a datagram, so a close it causes was the
        peer's doing (a timer input closes on silence: the idle timeout)."""
        self._input_from_peer = from_peer

        def step() -> None:
            feed()
            self._after_input()
            if transmit:
                self._transmit()

        contain(step, self._crash)

    def _crash(self, exc: Exception) -> None:
        """An unexpected error inside aioquic or our event handling.

        This is the supervisor boundary of one connection: whatever a peer
        provoked costs that connection only, never the endpoint's socket
        (uvloop closes a datagram transport whose protocol raises).  The
        aioquic state is not trusted afterwards, so nothing more is sent.
        """
        log.error("QUIC connection %r failed internally", self, exc_info=exc)
        self._mark_closed(ConnectionClosed(f"internal error: {exc!r}"))
        self._terminate()

    def _after_input(self) -> None:
        self._process_events()
        if self._error is None:
            close = self._quic.close_event
            if close is not None:
                self._mark_closed(self._error_from(close))
        if self._error is None:
            if not self._datagram_size_picked and self._quic.handshake_confirmed:
                self._datagram_size_picked = True
                self._pick_datagram_size()
            if not self._is_ready and self.is_initiator and self._quic.handshake_confirmed:
                # Only reached with confirm_handshake: the server sent
                # HANDSHAKE_DONE, so it accepted our certificate.
                self._on_handshake_done()
            if self._drain_waiters:
                self._wake_drainers()
            if self._quic.bidi_stream_credit() > 0:
                self._credit_event.set()
        self._schedule_transmit()

    def _process_events(self) -> None:
        quic = self._quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                self._app_input = True
                stream = self._stream_for_event(event.stream_id)
                if stream is None:
                    quic.consume(None, len(event.data))
                else:
                    stream._on_data(event.data, event.end_stream)
                    self._maybe_forget(stream)
            elif isinstance(event, events.StreamReset):
                stream = self._stream_for_event(event.stream_id)
                if stream is not None:
                    stream._on_reset(quic.receive_final_size(event.stream_id))
                    self._maybe_forget(stream)
            elif isinstance(event, events.StopSendingReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_stop_sending()
                    self._drain_waiters.discard(stream)
                    self._maybe_forget(stream)
            elif isinstance(event, events.DatagramFrameReceived):
                self._app_input = True
                handler = self._datagram_handler
                if handler is not None and self._error is None:
                    handler(event.data)
                elif (early := self._early_datagrams) is not None and (
                        len(early) < _MAX_EARLY_DATAGRAMS
                        and self._early_bytes + len(event.data) <= _MAX_EARLY_BYTES):
                    early.append(event.data)
                    self._early_bytes += len(event.data)
            elif isinstance(event, events.HandshakeCompleted):
                if event.alpn_protocol != ALPN:
                    self._fail(HandshakeError(f"ALPN {event.alpn_protocol!r} is not libp2p"), 0x1)
                elif not (self.is_initiator and self.config.confirm_handshake):
                    self._on_handshake_done()
            elif isinstance(event, events.ConnectionIdIssued):
                self._add_cid(event.connection_id)
            elif isinstance(event, events.ConnectionIdRetired):
                self._cids.discard(event.connection_id)
                self._owner._remove_cid(event.connection_id)
            elif isinstance(event, events.ConnectionTerminated):
                self._mark_closed(self._error_from(event))
                self._terminate()

    def _stream_for_event(self, stream_id: int) -> QuicStream | None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        # Only bidirectional streams exist (the peer may open no other).
        if stream_id % 4 != self._next_peer_stream % 4:
            return None  # ours, already forgotten
        if stream_id >= self._next_peer_stream:
            # Opening a stream implicitly opens the lower-numbered ones
            # (RFC 9000 section 2.1); remember them as not yet seen.
            self._implicit_peer_streams.update(range(self._next_peer_stream, stream_id, 4))
            self._next_peer_stream = stream_id + 4
        elif stream_id in self._implicit_peer_streams:
            self._implicit_peer_streams.discard(stream_id)
        else:
            return None  # the peer's, already forgotten
        stream = QuicStream(self, stream_id)
        self._streams[stream_id] = stream
        self._incoming.append(stream)
        self._incoming_event.set()
        return stream

    def _error_from(self, event: events.ConnectionTerminated) -> ConnectionClosed:
        if not self._is_ready:
            if self._handshake_error is not None:
                error: TransportError = self._handshake_error
            else:
                error = HandshakeError(
                    f"handshake failed: {event.reason_phrase or 'closed'} (code 0x{event.error_code:x})"
                )
            if not self._ready.done():
                self._ready.set_exception(error)
                # Nobody may await a failed inbound handshake.
                self._ready.exception()
        return ClosedWithCode(
            f"connection closed: {event.reason_phrase or 'no reason'} (code 0x{event.error_code:x})",
            code=event.error_code,
            phrase=event.reason_phrase,
            application=event.frame_type is None,
            by_peer=self._input_from_peer,
        )

    # --- output -------------------------------------------------------------

    def _schedule_transmit(self) -> None:
        if self._transmit_handle is None and not self._terminated:
            self._transmit_handle = self._loop.call_soon(self._transmit)

    def _transmit(self) -> None:
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        if self._terminated:
            return
        send = self._owner._send_datagram
        # After the handshake, runs of equal-sized datagrams to one address
        # go out in one system call (UDP GSO, when the endpoint has it): the
        # kernel cuts them apart, and a receiver with GRO takes them in as
        # one.  js-libp2p's receiver dropped 70-300 datagrams per transfer
        # from one-by-one sends and 0-30 from batches, and its CPU per MB
        # fell by a third (bench/README.md, issue #12).
        batch = self._owner._send_batch if self._is_ready else None
        out = self._quic.datagrams_to_send(time.monotonic())
        i, n = 0, len(out)
        while i < n:
            data, addr = out[i]
            j = i + 1
            if batch is not None:
                size = len(data)
                # All but the last segment must have the first one's size.
                while (j < n and j - i < _BATCH_SEGMENTS and (j - i + 1) * size <= _BATCH_BYTES
                       and out[j][1] == addr and len(out[j][0]) <= size
                       and len(out[j - 1][0]) == size):
                    j += 1
                if j - i > 1 and batch([d for d, _ in out[i:j]], addr):
                    i = j
                    continue
            for data, addr in out[i:j]:
                error = send(data, addr)
                if error is not None and not self._is_ready and error.errno in _UNREACHABLE:
                    # No route: waiting out the handshake timeout would only
                    # delay the same answer.
                    self._handshake_error = DialError(
                        f"cannot reach {addr[0]} port {addr[1]}: {error.strerror or error}"
                    )
                    self._abandon(ConnectionClosed(str(self._handshake_error)))
                    return
            i = j
        self._arm_timer()

    def _arm_timer(self) -> None:
        at = self._quic.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            # aioquic runs on time.monotonic(); convert to a delay because
            # the loop's own clock may differ (uvloop's is coarser).
            self._timer = self._loop.call_later(max(0.0, at - time.monotonic()), self._on_timer)

    def _arm_keepalive(self) -> None:
        interval = self.config.keepalive_interval
        if interval is None or self._error is not None:
            return
        # The peer may have asked for a shorter idle timeout than ours.
        interval = min(interval, self._quic.effective_idle_timeout / 2)
        self._keepalive = self._loop.call_later(interval, self._on_keepalive)

    def _on_keepalive(self) -> None:
        self._keepalive = None
        if self._error is not None:
            return
        self._ping_uid += 1
        self._quic.send_ping(self._ping_uid)
        self._transmit()
        self._arm_keepalive()

    # --- stream plumbing (called by QuicStream) ----------------------------

    def _send(self, stream: QuicStream, data: bytes, end_stream: bool) -> None:
        self._quic.send_stream_data(stream.stream_id, data, end_stream)
        if end_stream:
            self._maybe_forget(stream)
        self._schedule_transmit()

    def _send_buffered(self, stream: QuicStream) -> int:
        return self._quic.send_buffered(stream.stream_id)

    def _wait_drain(self, stream: QuicStream) -> None:
        self._drain_waiters.add(stream)

    def _wake_drainers(self) -> None:
        limit = self.config.send_buffer_limit
        for stream in list(self._drain_waiters):
            if self._quic.send_buffered(stream.stream_id) <= limit:
                self._drain_waiters.discard(stream)
                stream._on_writable()

    def _consumed(self, stream: QuicStream, n: int) -> None:
        if n <= 0 or self._terminated:
            return
        tracked = self._streams.get(stream.stream_id) is stream
        if self._quic.consume(stream.stream_id if tracked else None, n):
            self._schedule_transmit()

    def _reset(self, stream: QuicStream, stop_receive: bool) -> None:
        self._drain_waiters.discard(stream)
        self._quic.reset_stream(stream.stream_id, RESET_ERROR_CODE)
        if stop_receive:
            self._quic.stop_stream(stream.stream_id, RESET_ERROR_CODE)
        self._maybe_forget(stream)
        self._schedule_transmit()

    def _maybe_forget(self, stream: QuicStream) -> None:
        if stream._finished and self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            self._quic.forget_stream(stream.stream_id)

    # --- lifecycle ----------------------------------------------------------

    def _add_cid(self, cid: bytes) -> None:
        self._cids.add(cid)
        self._owner._add_cid(cid, self)

    def _mark_closed(self, error: ConnectionClosed) -> None:
        """Fail everything waiting on this connection; aioquic may still be
        sending CONNECTION_CLOSE or draining."""
        if self._error is not None:
            return
        self._error = error
        self._cancel_handshake_timer()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if not self._ready.done():
            failure: TransportError = self._handshake_error or (
                error if isinstance(error, EndpointClosed) else HandshakeError(str(error))
            )
            self._ready.set_exception(failure)
            self._ready.exception()
        for stream in list(self._streams.values()):
            stream._on_connection_closed(error)
        for stream in self._incoming:
            stream._on_connection_closed(error)
        self._streams.clear()
        self._incoming.clear()
        self._drain_waiters.clear()
        self._incoming_event.set()
        self._credit_event.set()
        self._closed.set()
        self._owner._connection_closed(self)

    def _terminate(self) -> None:
        """aioquic is done with the connection: release it from the endpoint."""
        if self._terminated:
            return
        self._terminated = True
        for handle in (self._timer, self._transmit_handle):
            if handle is not None:
                handle.cancel()
        self._timer = None
        self._transmit_handle = None
        for cid in self._cids:
            self._owner._remove_cid(cid)
        self._cids.clear()
        self._owner._connection_terminated(self)

    def _port_unreachable(self, quoted: bytes) -> bool:
        """ICMP says the peer's port is closed; ``quoted`` is the start of
        our datagram that provoked it.  Fails the connection (a dial with
        ``DialError``) if the quote carries our connection ID; returns
        whether it did."""
        if self._terminated:
            return False
        cid = self._quic.peer_cid
        if quoted_dcid(quoted, len(cid)) != cid:
            return False  # not ours, or forged
        host, port = self.remote_address
        message = f"{host} port {port} is unreachable (ICMP: nothing listens there)"
        if not self._is_ready:
            self._handshake_error = DialError(message)
        self._abandon(PeerUnreachable(message))
        return True

    def _abandon(
        self, error: ConnectionClosed, reason: str | None = None, code: int = 0
    ) -> None:
        """The endpoint is going away: fail and release without waiting for
        the closing period; with a ``reason``, tell the peer first."""
        if reason is not None and self._error is None:
            self._quic.close(error_code=code, reason_phrase=_clip(reason))
            self._mark_closed(error)
            self._transmit()
        self._mark_closed(error)
        self._terminate()
