"""The yamux session as a pure state machine (no I/O, no clock, no globals).

Inputs: ``receive_data(bytes, now)`` / ``receive_eof()`` from the
connection, and application commands (``open_stream``, ``accept_stream``,
``send``, ``close_stream``, ``reset_stream``, ``on_consumed``, ``ping``,
``go_away``).  Outputs: ``data_to_send(limit)`` (bytes for the connection)
and ``events()`` (frozen dataclasses).  The asyncio driver is
``overlay.mux.yamux``; what is kept per stream is
``overlay.mux.yamux_stream_state``.

Flow control: a stream's receive window shrinks as Data arrives and is
given back only through ``on_consumed``, so a slow reader holds the sender
back and a stream never buffers more than ``config.receive_window``.  Data
waiting for send window stays in per-stream queues until
``data_to_send`` frames it, round-robin, so the connection's own
backpressure reaches ``send_buffered`` too.

Frame shapes are chosen to suit every libp2p implementation: SYN and ACK
travel on Window Update frames (as go and rust send them), FIN and RST on
empty Data frames, and Data frames with a payload carry no flag.
py-libp2p 0.8 does not read the payload of a Data frame that has SYN or
ACK set, and sees FIN only on Data frames.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Final

from overlay.errors import LimitExceeded, LocalProtocolError, StreamClosed, StreamReset
from overlay.mux.config import YamuxConfig
from overlay.mux.yamux_events import (
    AckBacklogFull,
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    GoingAway,
    KeepaliveTimeout,
    PingRtt,
    PingTimedOut,
    SessionClosed,
    StreamAcked,
    StreamEnded,
    StreamIdError,
    StreamOpened,
    StreamWasReset,
    StreamWritable,
    TooManyStreams,
    WindowExceeded,
)
from overlay.mux.yamux_frames import (
    HEADER_SIZE,
    HEADER_STRUCT,
    INITIAL_WINDOW,
    KNOWN_FLAGS,
    MAX_DATA_LENGTH,
    VERSION,
    Flag,
    FrameTooLarge,
    FrameType,
    GoAwayCode,
    Header,
    YamuxProtocolError,
    decode_header,
    encode_header,
)
from overlay.mux.yamux_stream_state import StreamRecord, StreamState

__all__ = ["YamuxCore", "StreamState"]

_U32: Final = 0xFFFFFFFF


def _frame(frame_type: FrameType, flags: Flag, stream_id: int, length: int) -> bytes:
    return encode_header(frame_type, flags, stream_id, length)


class YamuxCore:
    """One side of a yamux session.  ``is_client`` picks odd stream IDs."""

    def __init__(
        self, is_client: bool, config: YamuxConfig, rng: random.Random, now: float = 0.0
    ) -> None:
        self.config = config
        self.is_client = is_client
        self._rng = rng
        self._streams: dict[int, StreamRecord] = {}
        # Counts kept with every change, so a flood of SYNs costs O(1) each.
        self._outbound = 0
        self._unacked = 0  # ours, not yet acknowledged by the peer
        self._inbound = 0
        self._unaccepted = 0  # the peer's, not yet taken by the application
        self._next_id = 1 if is_client else 2
        self._last_remote_id = 0
        self._events: list[Event] = []
        self._control = bytearray()
        self._ready: deque[int] = deque()
        self._in_ready: set[int] = set()
        self._inbuf = bytearray()  # a header split between two inputs (< 12 bytes)
        self._payload_left = 0  # bytes of the current Data frame still due
        self._payload_header: Header | None = None
        self._payload_stream: StreamRecord | None = None  # None: payload is discarded
        self._pings: dict[int, float] = {}  # value -> when sent
        self._keepalive: int | None = None  # value of our keep-alive ping
        self._last_received = now
        self.last_rtt: float | None = None
        """RTT of the latest answered ping (keep-alive or ours)."""
        self._local_go_away = False
        self._remote_go_away: int | None = None
        self._terminated = False
        self.error: YamuxProtocolError | KeepaliveTimeout | None = None
        """Why the session ended, unless the connection simply closed."""

    # --- queries --------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        return self._terminated

    @property
    def control_backlog(self) -> int:
        """Bytes of control frames waiting for ``data_to_send``."""
        return len(self._control)

    @property
    def remote_go_away(self) -> int | None:
        """The code of the peer's Go Away, or None."""
        return self._remote_go_away

    def can_open_stream(self) -> bool:
        """True if ``open_stream`` would not raise a limit error now."""
        return (
            self._outbound < self.config.max_outbound_streams
            and self._unacked < self.config.max_ack_backlog
        )

    @property
    def outbound_streams(self) -> int:
        """Our streams that are open (not closed both ways, not reset)."""
        return self._outbound

    def send_buffered(self, stream_id: int) -> int:
        """Bytes queued on ``stream_id`` and not yet framed for sending."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.queued

    def send_window(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.send_window

    def receive_window(self, stream_id: int) -> int:
        """Bytes the peer may still send on ``stream_id`` right now."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.recv_window

    def stream_state(self, stream_id: int) -> StreamState:
        stream = self._streams.get(stream_id)
        return StreamState.CLOSED if stream is None else stream.state()

    def open_streams(self) -> list[int]:
        return list(self._streams)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def has_unsent_data(self) -> bool:
        """True while some stream holds data or a FIN not yet framed."""
        return any(s.queued or (s.fin_queued and not s.fin_sent) for s in self._streams.values())

    # --- outputs --------------------------------------------------------------

    def events(self) -> list[Event]:
        """Every event since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self, limit: int = 1 << 16) -> bytes:
        """Control frames, then Data frames round-robin over the streams that
        have window, up to ``limit`` bytes: the last Data frame is cut to
        fit, so a caller that asks for whole messages of the layer below
        (Noise's 65519 bytes) gets them.  Only control frames and a closing
        stream's empty FIN frame may pass ``limit``."""
        parts: list[bytes | memoryview] = []
        size = len(self._control)
        if size:
            parts.append(bytes(self._control))
            self._control.clear()
        was_over: dict[int, StreamRecord] = {}  # streams above send_buffer_limit
        bound = self.config.send_buffer_limit
        max_frame = self.config.max_frame_size
        ready = self._ready
        while ready and size + HEADER_SIZE < limit:
            stream_id = ready.popleft()
            self._in_ready.discard(stream_id)
            stream = self._streams.get(stream_id)
            if stream is None:
                continue
            while True:
                n = min(stream.queued, stream.send_window, max_frame, limit - size - HEADER_SIZE)
                if not n:
                    break
                if stream.queued > bound:
                    was_over[stream_id] = stream
                parts.append(HEADER_STRUCT.pack(VERSION, FrameType.DATA, 0, stream_id, n))
                stream.take(n, parts)
                size += HEADER_SIZE + n
                if ready or size + HEADER_SIZE >= limit:
                    break  # one frame per stream and turn while others wait
            if not stream.queued and stream.fin_queued and not stream.fin_sent:
                parts.append(_frame(FrameType.DATA, Flag.FIN, stream_id, 0))
                size += HEADER_SIZE
                stream.fin_sent = True
                self._maybe_forget(stream)
            elif stream.sendable():
                self._mark_ready(stream)
        for stream in was_over.values():
            if stream.queued <= bound:
                self._events.append(StreamWritable(stream.id))
        return b"".join(parts)

    # --- application commands -------------------------------------------------

    def open_stream(self) -> int:
        """Open a stream (its SYN is queued); returns the stream ID."""
        self._check_open()
        if self._local_go_away or self._remote_go_away is not None:
            raise GoingAway("the session is going away: no new streams")
        if self._outbound >= self.config.max_outbound_streams:
            raise TooManyStreams(f"{self._outbound} streams are open towards the peer")
        if self._unacked >= self.config.max_ack_backlog:
            raise AckBacklogFull("too many of our streams wait for the peer's ACK")
        stream_id = self._next_id
        if stream_id > _U32:
            raise GoingAway("stream IDs are exhausted")
        self._next_id += 2
        stream = StreamRecord(stream_id, outbound=True, recv_window=self.config.receive_window)
        self._streams[stream_id] = stream
        self._outbound += 1
        self._unacked += 1
        self._control += _frame(
            FrameType.WINDOW_UPDATE, Flag.SYN, stream_id, self.config.receive_window - INITIAL_WINDOW
        )
        return stream_id

    def accept_stream(self, stream_id: int) -> None:
        """The application took the peer's stream: acknowledge it (and grant
        any window beyond the initial 256 KiB)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.outbound or stream.accepted:
            return
        stream.accepted = True
        self._unaccepted -= 1
        if not stream.acked:
            extra = self.config.receive_window - INITIAL_WINDOW
            stream.acked = True
            stream.recv_window += extra
            self._control += _frame(FrameType.WINDOW_UPDATE, Flag.ACK, stream_id, extra)

    def send(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` on the stream; ``data_to_send`` frames it as the
        peer's window allows."""
        stream = self._writable_stream(stream_id)
        if not data:
            return
        stream.queue.append(memoryview(bytes(data)))
        stream.queued += len(data)
        if stream.sendable():
            self._mark_ready(stream)

    def close_stream(self, stream_id: int) -> None:
        """Half-close: a FIN follows the queued data.  Idempotent."""
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None or stream.fin_queued:
            return
        stream.fin_queued = True
        self._mark_ready(stream)

    def reset_stream(self, stream_id: int) -> None:
        """Abort the stream both ways (RST); queued data is dropped."""
        stream = self._streams.get(stream_id)
        if stream is None or self._terminated:
            return
        self._forget(stream)
        self._control += _frame(FrameType.DATA, Flag.RST, stream_id, 0)

    def on_consumed(self, stream_id: int, n: int) -> None:
        """The application read ``n`` bytes of ``stream_id``: once half the
        window is consumed, give it back to the peer."""
        stream = self._streams.get(stream_id)
        if stream is None or n == 0:
            return
        if not 0 < n <= stream.unconsumed:
            raise LocalProtocolError(
                f"consumed {n} bytes of stream {stream_id}, only {stream.unconsumed} were received"
            )
        stream.unconsumed -= n
        if stream.remote_fin:
            return  # the peer sends nothing more: no credit needed
        stream.credit += n
        if stream.credit >= self.config.receive_window // 2 and not self._terminated:
            self._control += _frame(FrameType.WINDOW_UPDATE, Flag.NONE, stream_id, stream.credit)
            stream.recv_window += stream.credit
            stream.credit = 0

    def ping(self, now: float) -> int:
        """Send a ping; a ``PingRtt`` with the returned value reports its RTT."""
        self._check_open()
        if len(self._pings) >= self.config.max_pending_pings:
            raise LimitExceeded(f"{len(self._pings)} pings already wait for an answer")
        value = self._rng.getrandbits(32)
        while value in self._pings:
            value = self._rng.getrandbits(32)
        self._pings[value] = now
        self._control += _frame(FrameType.PING, Flag.SYN, 0, value)
        return value

    def next_deadline(self) -> float | None:
        """When ``on_timer`` next has something to do (a keep-alive ping is
        due or a ping times out); None if never."""
        if self._terminated:
            return None
        deadlines = []
        if self._pings:
            deadlines.append(min(self._pings.values()) + self.config.ping_timeout)
        if self._keepalive_possible():
            assert self.config.keepalive_interval is not None
            deadlines.append(self._last_received + self.config.keepalive_interval)
        return min(deadlines, default=None)

    def _keepalive_possible(self) -> bool:
        return (
            self.config.keepalive_interval is not None
            and self._keepalive is None
            and len(self._pings) < self.config.max_pending_pings
        )

    def on_timer(self, now: float) -> None:
        """Expire unanswered pings (``PingTimedOut``; an unanswered keep-alive
        ends the session with ``KeepaliveTimeout``) and send a keep-alive
        ping once the peer has been silent for ``keepalive_interval``."""
        if self._terminated:
            return
        timeout = self.config.ping_timeout
        for value, sent in list(self._pings.items()):
            # The same sum as next_deadline: a difference could round below.
            if now >= sent + timeout:
                del self._pings[value]
                if value == self._keepalive:
                    self._terminate(
                        KeepaliveTimeout(f"no answer to a keep-alive ping in {timeout} s")
                    )
                    return
                self._events.append(PingTimedOut(value))
        interval = self.config.keepalive_interval
        if self._keepalive_possible():
            assert interval is not None
            if now >= self._last_received + interval:
                self._keepalive = self.ping(now)

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Tell the peer we open and accept no more streams; existing streams
        go on.  Idempotent."""
        if self._local_go_away or self._terminated:
            return
        self._local_go_away = True
        self._control += _frame(FrameType.GO_AWAY, Flag.NONE, 0, int(code))

    # --- input ----------------------------------------------------------------

    def receive_eof(self) -> None:
        """The connection under the session ended."""
        if not self._terminated:
            self._terminate(None)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the connection.  A violation queues a Go Away
        (PROTOCOL_ERROR) and ends the session with ``ConnectionTerminated``;
        it is never raised."""
        if self._terminated:
            return
        self._last_received = now
        with memoryview(data) as view:
            try:
                self._receive(data, view, now)
            except YamuxProtocolError as exc:
                self._violation(exc)

    def _receive(self, data: bytes, view: memoryview, now: float) -> None:
        # Payload is cut straight out of ``data``; only a header split
        # between two inputs is buffered.  Consecutive pieces for one stream
        # (its frames in a row) become one DataReceived: one copy (none when
        # the piece is all of ``data``) and one event per run, not per frame.
        end = len(view)
        pos = 0
        run: list[memoryview] = []
        run_id = 0
        try:
            if self._inbuf:
                need = HEADER_SIZE - len(self._inbuf)
                self._inbuf += view[:need]
                if len(self._inbuf) < HEADER_SIZE:
                    return
                header = decode_header(self._inbuf, MAX_DATA_LENGTH)
                self._inbuf.clear()
                pos = need
                self._on_header(header, now)
            while not self._terminated:
                left = self._payload_left
                if left:
                    n = min(left, end - pos)
                    if not n:
                        return
                    stream = self._payload_stream
                    if stream is not None and stream.id in self._streams:
                        stream.unconsumed += n
                        if run and run_id != stream.id:
                            self._data_run(run_id, run, data)
                        run_id = stream.id
                        run.append(view[pos : pos + n])
                    pos += n
                    self._payload_left = left - n
                    if left == n and self._payload_header is not None:
                        self._data_run(run_id, run, data)  # its flags may end the stream
                        self._end_data_frame()
                    elif left == n:
                        self._payload_stream = None
                    continue
                if end - pos < HEADER_SIZE:
                    self._inbuf += view[pos:]
                    return
                version, raw_type, flags, stream_id, length = HEADER_STRUCT.unpack_from(view, pos)
                pos += HEADER_SIZE
                if version == VERSION and raw_type == FrameType.DATA and not flags & KNOWN_FLAGS:
                    # A Data frame without flags: the bulk of every transfer.
                    self._on_plain_data(stream_id, length)
                else:
                    self._data_run(run_id, run, data)
                    self._on_header(decode_header(view[pos - HEADER_SIZE : pos], MAX_DATA_LENGTH), now)
        finally:
            self._data_run(run_id, run, data)

    def _data_run(self, stream_id: int, run: list[memoryview], data: bytes) -> None:
        """Emit the pieces in ``run`` as one DataReceived, and empty it."""
        if not run:
            return
        if len(run) == 1:
            piece = run[0]
            chunk = data if len(piece) == len(data) and type(data) is bytes else bytes(piece)
        else:
            chunk = b"".join(run)
        run.clear()
        self._events.append(DataReceived(stream_id, chunk))

    # --- frame handling -------------------------------------------------------

    def _on_header(self, header: Header, now: float) -> None:
        if header.type is FrameType.PING:
            self._on_ping(header, now)
        elif header.type is FrameType.GO_AWAY:
            if self._remote_go_away is None:
                self._remote_go_away = header.length
                self._events.append(GoAwayReceived(header.length))
        else:
            self._on_stream_frame(header)

    def _on_ping(self, header: Header, now: float) -> None:
        if header.flags & Flag.SYN:
            self._control += _frame(FrameType.PING, Flag.ACK, 0, header.length)
        elif header.flags & Flag.ACK:
            sent = self._pings.pop(header.length, None)
            if sent is None:
                return
            self.last_rtt = now - sent
            if header.length == self._keepalive:
                self._keepalive = None
            else:
                self._events.append(PingRtt(header.length, now - sent))

    def _on_stream_frame(self, header: Header) -> None:
        if header.stream_id == 0:
            raise StreamIdError(f"{header.type.name} frame on the session stream 0")
        stream = self._stream_for(header)
        if header.type is FrameType.DATA:
            if stream is not None:
                if header.length > stream.recv_window:
                    raise WindowExceeded(
                        f"{header.length} bytes on stream {stream.id} whose window is "
                        f"{stream.recv_window}"
                    )
                if header.length and stream.remote_fin:
                    raise YamuxProtocolError(f"data on stream {stream.id} after its FIN")
                stream.recv_window -= header.length
            self._payload_stream = stream
            self._payload_header = header
            self._payload_left = header.length
            if not header.length:
                self._end_data_frame()
            return
        if stream is not None:
            if stream.send_window + header.length > _U32:
                raise YamuxProtocolError(f"window of stream {stream.id} overflows 32 bits")
            stream.send_window += header.length
            if stream.sendable():
                self._mark_ready(stream)
            self._end_flags(stream, header.flags)

    def _on_plain_data(self, stream_id: int, length: int) -> None:
        """``_on_stream_frame`` for a Data frame without flags, with the
        checks ``decode_header`` and ``_on_stream_frame`` make, in their order."""
        if length > MAX_DATA_LENGTH:
            raise FrameTooLarge(length, MAX_DATA_LENGTH)
        if stream_id == 0:
            raise StreamIdError("DATA frame on the session stream 0")
        stream = self._streams.get(stream_id)
        if stream is not None:
            if length > stream.recv_window:
                raise WindowExceeded(
                    f"{length} bytes on stream {stream.id} whose window is {stream.recv_window}"
                )
            if length and stream.remote_fin:
                raise YamuxProtocolError(f"data on stream {stream.id} after its FIN")
            stream.recv_window -= length
        self._payload_stream = stream
        self._payload_header = None  # no flags to apply at its end
        self._payload_left = length
        if not length:
            self._end_data_frame()

    def _end_data_frame(self) -> None:
        stream, header = self._payload_stream, self._payload_header
        self._payload_stream = self._payload_header = None
        if stream is not None and header is not None and stream.id in self._streams:
            self._end_flags(stream, header.flags)

    def _end_flags(self, stream: StreamRecord, flags: Flag) -> None:
        if flags & Flag.RST:
            self._forget(stream)
            self._events.append(StreamWasReset(stream.id))
            return
        if flags & Flag.FIN and not stream.remote_fin:
            stream.remote_fin = True
            self._events.append(StreamEnded(stream.id))
            self._maybe_forget(stream)

    def _stream_for(self, header: Header) -> StreamRecord | None:
        """The stream a Data/Window Update frame is for, creating it on SYN;
        None if the frame is to be ignored (a stream we reset or refused)."""
        stream_id = header.stream_id
        if header.flags & Flag.SYN:
            return self._on_syn(stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return None  # in flight when we reset or forgot it
        if header.flags & Flag.ACK and stream.outbound and not stream.acked:
            stream.acked = True
            self._unacked -= 1
            self._events.append(StreamAcked(stream_id))
        return stream

    def _on_syn(self, stream_id: int) -> StreamRecord | None:
        remote_parity = 0 if self.is_client else 1
        if stream_id % 2 != remote_parity:
            raise StreamIdError(f"the peer opened stream {stream_id}, which has our parity")
        if stream_id <= self._last_remote_id:
            raise StreamIdError(f"SYN for stream {stream_id} reuses an ID or goes backwards")
        self._last_remote_id = stream_id
        if (
            self._local_go_away
            or self._remote_go_away is not None
            or self._inbound >= self.config.max_inbound_streams
            or self._unaccepted >= self.config.accept_backlog
        ):
            # Refusing costs the peer one stream, not the session.
            self._control += _frame(FrameType.DATA, Flag.RST, stream_id, 0)
            return None
        stream = StreamRecord(stream_id, outbound=False, recv_window=INITIAL_WINDOW)
        self._streams[stream_id] = stream
        self._inbound += 1
        self._unaccepted += 1
        self._events.append(StreamOpened(stream_id))
        return stream

    # --- helpers --------------------------------------------------------------

    def _mark_ready(self, stream: StreamRecord) -> None:
        if stream.id not in self._in_ready:
            self._in_ready.add(stream.id)
            self._ready.append(stream.id)

    def _maybe_forget(self, stream: StreamRecord) -> None:
        if stream.fin_sent and stream.remote_fin:
            self._forget(stream)

    def _forget(self, stream: StreamRecord) -> None:
        del self._streams[stream.id]
        if stream.outbound:
            self._outbound -= 1
            self._unacked -= not stream.acked
        else:
            self._inbound -= 1
            self._unaccepted -= not stream.accepted

    def _writable_stream(self, stream_id: int) -> StreamRecord:
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamReset(f"stream {stream_id} was reset or is unknown")
        if stream.fin_queued:
            raise StreamClosed(f"write after write_eof on stream {stream_id}")
        return stream

    def _check_open(self) -> None:
        if self._terminated:
            raise SessionClosed("the yamux session is closed")

    def _violation(self, error: YamuxProtocolError) -> None:
        self._control += _frame(FrameType.GO_AWAY, Flag.NONE, 0, GoAwayCode.PROTOCOL_ERROR)
        self._terminate(error)

    def _terminate(self, error: YamuxProtocolError | KeepaliveTimeout | None) -> None:
        self._terminated = True
        self.error = error
        self._streams.clear()
        self._outbound = self._unacked = self._inbound = self._unaccepted = 0
        self._ready.clear()
        self._in_ready.clear()
        self._pings.clear()
        self._inbuf.clear()
        self._payload_left = 0
        self._payload_stream = self._payload_header = None
        self._events.append(ConnectionTerminated(error))

