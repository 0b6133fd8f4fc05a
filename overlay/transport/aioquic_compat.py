"""Every access to aioquic internals made by overlay, in one place.

aioquic 1.7 lacks four things libp2p needs (see shared AIOQUIC.md):
mutual TLS with custom certificate checks, a configurable stream limit,
receive windows that follow the application, and a view of the send buffer.
``Libp2pQuicConnection`` adds them by overriding private methods and state
that have been stable since aioquic 1.0.  It also replaces each stream's
send buffer (``_ChunkSender``), whose cost in aioquic grows with the bytes
buffered rather than the bytes written, and the 1-RTT send loop
(``_write_application``), whose cost in aioquic grows with the number of
streams per packet.  tests/transport/test_aioquic_compat.py and
test_send_loop.py fail loudly if any of them changes shape; pyproject pins
aioquic <1.8.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Final

from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic import connection as _conn
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState, QuicNetworkPath
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import (
    QuicDeliveryState,
    QuicPacketBuilder,
    QuicPacketBuilderStop,
)
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.packet import QuicStreamFrame
from aioquic.quic.stream import QuicStream as _AioStream
from aioquic.quic.stream import QuicStreamSender
from cryptography import x509

from overlay.errors import HandshakeError

__all__ = ["CertificateCheck", "Libp2pQuicConnection", "AlertCertificateRequired"]

CertificateCheck = Callable[[Sequence[x509.Certificate]], None]
"""Called inside the TLS handshake with the peer's certificates; raises
``HandshakeError`` to abort the handshake with a TLS alert."""

_END_STATES: Final = _conn.END_STATES
_MAX_STREAM_DATA_CAPACITY: Final = _conn.MAX_STREAM_DATA_FRAME_CAPACITY
_CONNECTION_LIMIT_CAPACITY: Final = _conn.CONNECTION_LIMIT_FRAME_CAPACITY
_MIN_STREAM_FRAME_HEADER: Final = 4
_INITIAL_WINDOW: Final = 10  # datagrams, aioquic's K_INITIAL_WINDOW

# The groups a client offers key shares for.  aioquic offers four (P-256,
# P-384, X25519, X448) and computes a key pair for each; X25519 is what every
# libp2p implementation picks, P-256 covers strict stacks.
_CLIENT_GROUPS: Final = [tls.Group.X25519, tls.Group.SECP256R1]


_SMALL_WRITE: Final = 16384
"""Writes below this are copied into a shared tail chunk, so a stream of
tiny writes costs one buffer, not an object per write."""


class _ChunkSender(QuicStreamSender):
    """aioquic's stream sender with the written bytes kept as a list of
    chunks instead of one bytearray.

    aioquic appends each write to a bytearray and deletes acknowledged
    bytes from its front; once the front has moved, CPython's bytearray
    reallocates and copies the whole buffer on the next append.  With a
    1 MiB drain bound every 256 KiB write then copies about 1.25 MiB, and
    with ten busy streams those buffers no longer fit the CPU cache (the
    sender's largest single cost in profile_transport.py with 10 streams).
    Here a write stores its bytes as they are, a frame copies only its own
    slice, and acknowledged chunks are dropped whole.  Offsets, ranges,
    FIN and reset handling are aioquic's own state, unchanged, so
    ``send_buffered`` and flow control see the same numbers.
    """

    def __init__(self, stream_id: int | None) -> None:
        super().__init__(stream_id=stream_id, writable=True)
        self._chunks: list[bytes | bytearray] = []
        self._starts: list[int] = []  # the stream offset of each chunk
        self._head = 0  # chunks before this index are acknowledged

    def write(self, data: bytes, end_stream: bool = False) -> None:
        if self._buffer_fin is not None:
            raise RuntimeError("Cannot send data after FIN")
        if self._reset_error_code is not None:
            raise RuntimeError("Cannot send data after the stream was reset")
        size = len(data)
        if size:
            self.buffer_is_empty = False
            stop = self._buffer_stop
            self._pending.add(stop, stop + size)
            chunks = self._chunks
            if size < _SMALL_WRITE:
                tail = chunks[-1] if len(chunks) > self._head else None
                if isinstance(tail, bytearray) and len(tail) < _SMALL_WRITE:
                    tail += data
                else:
                    chunks.append(bytearray(data))
                    self._starts.append(stop)
            else:
                chunks.append(bytes(data))
                self._starts.append(stop)
            self._buffer_stop = stop + size
        if end_stream:
            self.buffer_is_empty = False
            self._buffer_fin = self._buffer_stop
            self._pending_eof = True

    def _slice(self, start: int, stop: int) -> bytes:
        chunks, starts = self._chunks, self._starts
        i = bisect_right(starts, start, self._head) - 1
        chunk = chunks[i]
        offset = start - starts[i]
        end = offset + stop - start
        if end <= len(chunk):
            piece = chunk[offset:end]
            return piece if type(piece) is bytes else bytes(piece)
        pieces = [chunk[offset:]]
        left = stop - start - len(pieces[0])
        while left > 0:
            i += 1
            piece = chunks[i][:left]
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)

    def get_frame(self, max_size: int, max_offset: int | None = None) -> QuicStreamFrame | None:
        # aioquic's get_frame, with the data taken by _slice.
        assert self._reset_error_code is None, "cannot call get_frame() after reset()"
        if max_size < 0:
            return None
        try:
            r = self._pending[0]
        except IndexError:
            if self._pending_eof:
                self._pending_eof = False
                fin = self._buffer_fin  # set whenever _pending_eof is
                return QuicStreamFrame(fin=True, offset=self._buffer_stop if fin is None else fin)
            self.buffer_is_empty = True
            return None
        start = r.start
        stop = min(r.stop, start + max_size)
        if max_offset is not None and stop > max_offset:
            stop = max_offset
        if stop <= start:
            return None
        frame = QuicStreamFrame(data=self._slice(start, stop), offset=start)
        self._pending.subtract(start, stop)
        if stop > self.highest_offset:
            self.highest_offset = stop
        if self._buffer_fin == stop:
            frame.fin = True
            self._pending_eof = False
        return frame

    def on_data_delivery(
        self, delivery: QuicDeliveryState, start: int, stop: int, fin: bool
    ) -> None:
        # aioquic's on_data_delivery, dropping whole acknowledged chunks.
        assert not fin or stop == self._buffer_fin, (
            "on_data_delivered() was called with inconsistent fin / stop"
        )
        if self._reset_error_code is not None:
            return
        if delivery == QuicDeliveryState.ACKED:
            if stop > start:
                self._acked.add(start, stop)
                first_range = self._acked[0]
                if first_range.start == self._buffer_start:
                    self._acked.shift()
                    self._buffer_start = first_range.stop
                    self._trim()
            if fin:
                self._acked_fin = True
            if self._buffer_start == self._buffer_fin and self._acked_fin:
                self.is_finished = True
        else:
            if stop > start:
                self.buffer_is_empty = False
                self._pending.add(start, stop)
            if fin:
                self.buffer_is_empty = False
                self._pending_eof = True

    def _trim(self) -> None:
        chunks, starts, head = self._chunks, self._starts, self._head
        acked = self._buffer_start
        while head < len(chunks) and starts[head] + len(chunks[head]) <= acked:
            chunks[head] = b""  # free it now; the slot goes at the next compaction
            head += 1
        if head > 32 and 2 * head > len(chunks):
            del chunks[:head]
            del starts[:head]
            head = 0
        self._head = head


class AlertCertificateRequired(tls.Alert):
    """RFC 8446: the client sent no certificate although one is required."""

    description = tls.AlertDescription.certificate_required


def _run_check(context: tls.Context, check: CertificateCheck) -> None:
    certificate = context._peer_certificate
    if certificate is None:
        raise AlertCertificateRequired("peer sent no certificate")
    try:
        check([certificate, *context._peer_certificate_chain])
    except HandshakeError as exc:
        raise tls.AlertBadCertificate(str(exc)) from exc


class Libp2pQuicConnection(QuicConnection):
    """A QuicConnection with libp2p TLS and application-driven flow control.

    Receive windows only grow as the application reports consumed bytes
    through ``consume``; aioquic itself would double them whenever data
    arrives, read or not.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        certificate_check: CertificateCheck,
        max_inbound_streams: int,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        # Transport parameters are serialised in _initialize, so the limits
        # set here are what the peer learns in the handshake.
        bidi = self._local_max_streams_bidi
        bidi.value = bidi.sent = max_inbound_streams
        # libp2p never uses unidirectional streams; the peer may open none.
        uni = self._local_max_streams_uni
        uni.value = uni.sent = 0
        self._ovl_check = certificate_check
        self._ovl_stream_window = configuration.max_stream_data
        self._ovl_connection_window = configuration.max_data
        self._ovl_consumed: dict[int, int] = {}
        self._ovl_connection_consumed = 0
        # True when some stream may owe the peer a MAX_STREAM_DATA frame:
        # set by consume() and by a lost update, cleared after a pass over
        # the streams wrote them all (see _write_application).
        self._ovl_stream_limits_due = False
        self._ovl_peer_max_udp_payload: int | None = None

    # --- TLS ----------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        context = self.tls
        check = self._ovl_check
        if self._is_client:
            context._supported_groups = list(_CLIENT_GROUPS)
            verify_server = context._client_handle_certificate_verify

            def client_handle_certificate_verify(input_buf: Buffer) -> None:
                _run_check(context, check)
                verify_server(input_buf)

            setattr(context, "_client_handle_certificate_verify", client_handle_certificate_verify)
        else:
            context._request_client_certificate = True
            take_certificate = context._server_handle_certificate
            verify_client = context._server_handle_certificate_verify

            def server_handle_certificate(input_buf: Buffer) -> None:
                take_certificate(input_buf)
                # aioquic accepts an empty Certificate message as "no client
                # authentication"; libp2p requires one.
                if context._peer_certificate is None:
                    raise AlertCertificateRequired("client sent no certificate")

            def server_handle_certificate_verify(input_buf: Buffer) -> None:
                _run_check(context, check)
                verify_client(input_buf)

            setattr(context, "_server_handle_certificate", server_handle_certificate)
            setattr(context, "_server_handle_certificate_verify", server_handle_certificate_verify)

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        # aioquic validates max_udp_payload_size but does not keep it; it is
        # the peer's own limit on what it can receive (RFC 9000 section
        # 18.2), which bounds any datagram size we pick for the path.
        if not from_session_ticket:
            params = pull_quic_transport_parameters(Buffer(data=data))
            self._ovl_peer_max_udp_payload = params.max_udp_payload_size

    # --- datagram size ------------------------------------------------------

    @property
    def peer_max_udp_payload(self) -> int:
        """The largest UDP payload the peer accepts (its transport parameter;
        65527, the protocol's maximum, when it sent none)."""
        value = self._ovl_peer_max_udp_payload
        return 65527 if value is None else value

    @property
    def peer_max_datagram_frame_size(self) -> int | None:
        """The largest DATAGRAM frame the peer accepts (RFC 9221); None if
        it announced no datagram support."""
        size: int | None = self._remote_max_datagram_frame_size
        return size

    @property
    def datagrams_queued(self) -> int:
        """DATAGRAM frames queued and not yet put in a packet."""
        return len(self._datagrams_pending)

    @property
    def max_datagram_size(self) -> int:
        size: int = self._max_datagram_size
        return size

    def set_max_datagram_size(self, size: int) -> None:
        """Send datagrams of up to ``size`` bytes from now on.  aioquic fixes
        the size at creation; the packet builder reads it per flush, while
        congestion control and the pacer keep a copy for their per-packet
        arithmetic (windows stay in bytes, so they carry over)."""
        self._max_datagram_size = size
        loss = self._loss
        loss._pacer._max_datagram_size = size
        cc = loss._cc
        if hasattr(cc, "_max_datagram_size"):
            cc._max_datagram_size = size
        if hasattr(cc, "additive_increase_factor"):  # CUBIC's Reno-friendly region
            cc.additive_increase_factor = size
        # The initial window is ten datagrams (RFC 9002 section 7.2); a
        # window still below ten of the new size would hold the sender back.
        cc.congestion_window = max(cc.congestion_window, _INITIAL_WINDOW * size)

    # --- state queries ------------------------------------------------------

    @property
    def handshake_confirmed(self) -> bool:
        return self._handshake_confirmed

    @property
    def close_event(self) -> ConnectionTerminated | None:
        """Why the connection is closing or closed, as soon as aioquic
        decides it (its ConnectionTerminated event only comes after the
        closing period); ``None`` while it is alive."""
        if self._state in _END_STATES or self._close_pending:
            return self._close_event
        return None

    @property
    def smoothed_rtt(self) -> float | None:
        """aioquic's smoothed round-trip time in seconds, once measured."""
        recovery = self._loss
        if not recovery._rtt_initialized:
            return None
        rtt: float = recovery._rtt_smoothed
        return rtt

    @property
    def peer_cid(self) -> bytes:
        """The connection ID our packets to the peer carry now."""
        cid: bytes = self._peer_cid.cid
        return cid

    @property
    def first_flight(self) -> bool:
        """True until a packet from the peer was decrypted."""
        return self._state is QuicConnectionState.FIRSTFLIGHT

    @property
    def effective_idle_timeout(self) -> float:
        """The idle timeout in force: the smaller of both sides' values."""
        return self._idle_timeout()

    def bidi_stream_credit(self) -> int:
        """How many more bidirectional streams the peer lets us open now."""
        return self._remote_max_streams_bidi - self._local_next_stream_id_bidi // 4

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to the stream and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def receive_final_size(self, stream_id: int) -> int:
        """The final size of a stream the peer reset (its highest offset)."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.receiver.highest_offset

    # --- flow control -------------------------------------------------------

    def consume(self, stream_id: int | None, n: int) -> bool:
        """Report ``n`` bytes as consumed (read or discarded) by the
        application, on ``stream_id`` or, for ``None``, only connection-wide.
        Returns True when a window update is due, i.e. worth transmitting."""
        due = False
        if stream_id is not None:
            total = self._ovl_consumed.get(stream_id, 0) + n
            self._ovl_consumed[stream_id] = total
            stream = self._streams.get(stream_id)
            if stream is not None and stream.max_stream_data_local:
                due = total + self._ovl_stream_window - stream.max_stream_data_local >= (
                    self._ovl_stream_window // 2
                )
                if due:
                    self._ovl_stream_limits_due = True
        self._ovl_connection_consumed += n
        return due or (
            self._ovl_connection_consumed
            + self._ovl_connection_window
            - self._local_max_data.value
            >= self._ovl_connection_window // 2
        )

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._get_or_create_stream_for_send(stream_id)
        sender = stream.sender
        if type(sender) is QuicStreamSender and not (
            sender._buffer_stop or sender._buffer_fin is not None or sender.is_finished
            or sender._reset_error_code is not None
        ):
            # Nothing written yet: swap in the chunked buffer before the first byte.
            sender = stream.sender = _ChunkSender(stream_id)
        sender.write(data, end_stream=end_stream)

    def forget_stream(self, stream_id: int) -> None:
        """Drop per-stream accounting once its receive side is finished."""
        self._ovl_consumed.pop(stream_id, None)

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: _AioStream
    ) -> None:
        window = self._ovl_stream_window
        local = stream.max_stream_data_local
        if local and not stream.receiver.is_finished:
            target = self._ovl_consumed.get(stream.stream_id or 0, 0) + window
            # Batch updates: only announce once half a window was consumed.
            if target - local >= window // 2:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id or 0)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_stream_frame(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: _AioStream, max_offset: int
    ) -> int:
        # aioquic offers every stream with data a place in every packet it
        # builds; once one stream has filled the packet the others are
        # refused only after computing a frame header.  A STREAM frame
        # header takes at least 4 bytes (type, 1-byte stream ID, 2-byte
        # length), and get_frame() refuses a packet without room for it,
        # so this exit changes nothing but the cost (with 10 streams, ~9
        # wasted calls per packet).
        if builder.remaining_flight_space < _MIN_STREAM_FRAME_HEADER:
            return 0
        used: int = super()._write_stream_frame(builder, space, stream, max_offset)
        return used

    def _on_max_stream_data_delivery(self, delivery: QuicDeliveryState, stream: _AioStream) -> None:
        super()._on_max_stream_data_delivery(delivery, stream)
        if delivery != QuicDeliveryState.ACKED:
            self._ovl_stream_limits_due = True  # aioquic marked it for resending

    # --- the 1-RTT send loop ------------------------------------------------

    def _write_application(
        self, builder: QuicPacketBuilder, network_path: QuicNetworkPath, now: float
    ) -> None:
        # aioquic's _write_application, frame for frame and in the same
        # order, with two costs taken out of every packet it builds (with
        # ten streams, a quarter of the sender's CPU against 1472-byte
        # datagrams, bench/README.md): it offered every stream a
        # MAX_STREAM_DATA frame, and every stream a STREAM frame even after
        # the first had filled the packet, then rebuilt its service order.
        # Here stream limits are visited only while an update may be due,
        # and the stream loop stops at a full packet; the service order is
        # aioquic's (streams that sent move to the back), so a stream that
        # was not reached is first in line for the next packet.
        if self._cryptos[tls.Epoch.ONE_RTT].send.is_valid():
            crypto = self._cryptos[tls.Epoch.ONE_RTT]
            crypto_stream: _AioStream | None = self._crypto_streams[tls.Epoch.ONE_RTT]
            packet_type = QuicPacketType.ONE_RTT
        elif self._cryptos[tls.Epoch.ZERO_RTT].send.is_valid():
            crypto = self._cryptos[tls.Epoch.ZERO_RTT]
            crypto_stream = None
            packet_type = QuicPacketType.ZERO_RTT
        else:
            return
        space = self._spaces[tls.Epoch.ONE_RTT]
        pacer = self._loss._pacer
        while True:
            # Pacing applies unless an ACK is due.
            if space.ack_at is None or space.ack_at >= now:
                self._pacing_at = pacer.next_send_time(now=now)
                if self._pacing_at is not None:
                    break
            builder.start_packet(packet_type, crypto)
            if (packet_type == QuicPacketType.ONE_RTT and space.ack_at is not None
                    and space.ack_at <= now):
                self._write_ack_frame(builder=builder, space=space, now=now)
            if self._handshake_complete:
                self._write_control_frames(builder, network_path, space, now)
            if self._ovl_stream_limits_due:
                for stream in self._streams.values():
                    self._write_stream_limits(builder=builder, space=space, stream=stream)
                self._ovl_stream_limits_due = False  # all written: none raised Stop
            if self._ping_pending:
                self._write_ping_frame(builder, self._ping_pending)
                self._ping_pending.clear()
            if self._probe_pending:
                self._write_ping_frame(builder, comment="probe")
                self._probe_pending = False
            if crypto_stream is not None and not crypto_stream.sender.buffer_is_empty:
                self._write_crypto_frame(builder=builder, space=space, stream=crypto_stream)
            while self._datagrams_pending:
                try:
                    self._write_datagram_frame(
                        builder=builder,
                        data=self._datagrams_pending[0],
                        frame_type=QuicFrameType.DATAGRAM_WITH_LENGTH,
                    )
                    self._datagrams_pending.popleft()
                except QuicPacketBuilderStop:
                    break
            discarded = self._write_streams(builder, space)
            if builder.packet_is_empty:
                # Discarded streams may let the peer open new ones, which the
                # next packet announces with MAX_STREAMS.
                if not discarded:
                    break
            else:
                pacer.update_after_send(now=now)

    def _write_control_frames(
        self, builder: QuicPacketBuilder, network_path: QuicNetworkPath,
        space: QuicPacketSpace, now: float,
    ) -> None:
        """aioquic's frames for an established connection, before stream data."""
        if not (network_path.is_validated or network_path.local_challenge_sent):
            self._write_path_challenge_frame(builder=builder, network_path=network_path)
            # RFC 9000 section 8.2.4: abandon path validation after three
            # times the larger of the current PTO and a new path's.
            if network_path.validation_deadline is None:
                network_path.validation_deadline = now + 3 * max(
                    self._loss.get_probe_timeout(), 2 * self._configuration.initial_rtt
                )
        if self._handshake_done_pending:
            self._write_handshake_done_frame(builder=builder)
            self._handshake_done_pending = False
        while network_path.remote_challenges:
            self._write_path_response_frame(
                builder=builder, challenge=network_path.remote_challenges[0]
            )
            network_path.remote_challenges.popleft()
        for connection_id in self._host_cids:
            if not connection_id.was_sent:
                self._write_new_connection_id_frame(builder=builder, connection_id=connection_id)
        for sequence_number in self._retire_connection_ids[:]:
            self._write_retire_connection_id_frame(builder=builder, sequence_number=sequence_number)
            self._retire_connection_ids.pop(0)
        if self._streams_blocked_pending:
            if self._streams_blocked_bidi:
                self._write_streams_blocked_frame(
                    builder=builder, frame_type=QuicFrameType.STREAMS_BLOCKED_BIDI,
                    limit=self._remote_max_streams_bidi,
                )
            if self._streams_blocked_uni:
                self._write_streams_blocked_frame(
                    builder=builder, frame_type=QuicFrameType.STREAMS_BLOCKED_UNI,
                    limit=self._remote_max_streams_uni,
                )
            self._streams_blocked_pending = False
        self._write_connection_limits(builder=builder, space=space)

    def _write_streams(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> bool:
        """STOP_SENDING, RESET_STREAM and STREAM frames in aioquic's service
        order, until the packet is full; returns whether a finished stream
        was discarded."""
        queue: list[_AioStream] = self._streams_queue
        sent: list[_AioStream] = []
        discarded: set[_AioStream] = set()
        try:
            for stream in queue:
                if builder.remaining_flight_space < _MIN_STREAM_FRAME_HEADER:
                    break  # full: no frame fits, and aioquic would raise Stop on one
                if stream.is_finished:
                    stream_id = stream.stream_id or 0  # None only for crypto streams
                    self._streams.pop(stream_id)
                    if _conn.stream_is_client_initiated(stream_id) != self._is_client:
                        # The peer may open a new stream for each one that
                        # closes (RFC 9000 section 4.6).
                        self._stream_limit(stream_id).value += 1
                    discarded.add(stream)
                    continue
                sender = stream.sender
                if stream.receiver.stop_pending:
                    self._write_stop_sending_frame(builder=builder, stream=stream)
                if sender.reset_pending:
                    self._write_reset_stream_frame(builder=builder, stream=stream)
                elif not stream.is_blocked and not sender.buffer_is_empty:
                    used = self._write_stream_frame(
                        builder=builder, space=space, stream=stream,
                        max_offset=min(
                            sender.highest_offset + self._remote_max_data
                            - self._remote_max_data_used,
                            stream.max_stream_data_remote,
                        ),
                    )
                    self._remote_max_data_used += used
                    if used > 0:
                        sent.append(stream)
        finally:
            # Streams that sent go to the back, in the order they sent.
            if discarded or len(sent) > 1:
                gone = discarded.union(sent)
                queue[:] = [stream for stream in queue if stream not in gone]
                queue.extend(sent)
            elif sent:
                queue.remove(sent[0])
                queue.append(sent[0])
        return bool(discarded)

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        max_data = self._local_max_data
        window = self._ovl_connection_window
        target = self._ovl_connection_consumed + window
        if target - max_data.value >= window // 2:
            max_data.value = target
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            # Like aioquic: batch MAX_STREAMS until the peer has fewer streams
            # left to open than the update would grant.
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=_CONNECTION_LIMIT_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value
