"""yamux (``/yamux/1.0.0``) over any ``ByteStream``: the asyncio driver.

Usage (the stream is typically a Noise-secured TCP or relayed connection,
after multistream-select agreed on ``PROTOCOL_ID``)::

    async with YamuxSession(secured, is_client=True) as session:
        stream = await session.open_stream()      # or: await session.accept_stream()
        stream.write(b"...")
        await stream.drain()
        reply = await stream.read()

``YamuxSession(stream, is_client, config=None, *, rng=None)``: ``is_client``
is True on the side that dialed the connection (it opens odd stream IDs);
``config`` is a ``YamuxConfig``; construct it inside the running event
loop (the keep-alive clock starts then).  The session owns ``stream`` from
then on:
when it ends it half-closes it (``write_eof``); closing the transport
underneath stays with whoever made it.  Streams are ``YamuxStream``s, which
implement ``overlay.wire.stream.ByteStream`` with the same backpressure as
the QUIC streams: ``drain()`` blocks while more than
``config.send_buffer_limit`` bytes wait for the peer's window or for the
connection, and the peer may send at most ``config.receive_window`` bytes
beyond what ``read`` has returned.

One reader task and one writer task run under the session's ``Supervisor``.  A
protocol violation by the peer (``YamuxProtocolError``) sends Go Away and
ends this session: its streams raise ``SessionClosed``; nothing propagates
further.  The protocol itself is ``overlay.mux.yamux_session.YamuxCore``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

from overlay.errors import (
    ConnectionClosed,
    LocalProtocolError,
    OverlayError,
    StreamClosed,
    StreamReset,
)
from overlay.mux.config import YamuxConfig
from overlay.mux.yamux_frames import GoAwayCode, YamuxProtocolError
from overlay.mux.yamux_events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    GoingAway,
    KeepaliveTimeout,
    PingRtt,
    PingTimedOut,
    SessionClosed,
    StreamEnded,
    StreamOpened,
    StreamWasReset,
    StreamWritable,
)
from overlay.mux.yamux_session import YamuxCore
from overlay.supervisor import Supervisor
from overlay.wire.chunks import ChunkBuffer, read_exactly
from overlay.wire.stream import ByteStream

__all__ = ["PROTOCOL_ID", "YamuxSession", "YamuxStream"]

PROTOCOL_ID: Final = "/yamux/1.0.0"

_log = logging.getLogger(__name__)
_READ_SIZE: Final = 1 << 16
_NOISE_PLAINTEXT: Final = 65535 - 16
"""The largest Noise transport message's plaintext (``overlay.secure``'s
``MAX_PLAINTEXT``; not imported, as ``overlay.secure`` imports this package)."""
_WRITE_BATCH: Final = 4 * _NOISE_PLAINTEXT
"""Bytes the writer asks the core for at once.  The core fills it exactly
when it has the data, so the Noise channel under a session (the usual case)
sends four whole messages instead of one full and one nearly empty."""


class YamuxStream:
    """One yamux stream; a ``ByteStream``."""

    def __init__(self, session: YamuxSession, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self._received = ChunkBuffer()
        self._eof = False
        self._reset = False
        self._send_closed = False
        self._error: ConnectionClosed | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    def __repr__(self) -> str:
        return f"<YamuxStream {self.stream_id}>"

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (at most the receive window)."""
        return self._received.buffered

    # --- receiving ----------------------------------------------------------

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise LocalProtocolError("max_bytes must be positive")
        while not (self._received or self._eof or self._reset or self._error is not None):
            self._readable.clear()
            await self._readable.wait()
        if self._reset:
            raise StreamReset(f"yamux stream {self.stream_id} was reset")
        if self._received:
            return self._take(max_bytes)
        if self._eof:
            return b""
        assert self._error is not None
        raise self._error

    async def readexactly(self, n: int) -> bytes:
        return await read_exactly(self.read, n, f"stream {self.stream_id}")

    def _take(self, max_bytes: int) -> bytes:
        data = self._received.take(max_bytes)
        self.session._consumed(self.stream_id, len(data))
        return data

    # --- sending ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._check_writable()
        if data:
            self.session._send(self.stream_id, data)

    async def drain(self) -> None:
        limit = self.session.config.send_buffer_limit
        while True:
            self._check_writable(allow_closed=True)
            if self.session._core.send_buffered(self.stream_id) <= limit:
                return
            self._writable.clear()
            await self._writable.wait()

    def write_eof(self) -> None:
        if self._send_closed or self._reset or self._error is not None:
            return
        self._send_closed = True
        self.session._close_stream(self.stream_id)

    def reset(self) -> None:
        if self._reset or self._error is not None:
            return
        self._reset = True
        self._received.clear()
        self.session._reset_stream(self.stream_id)
        self._readable.set()
        self._writable.set()

    async def close(self) -> None:
        """Half-close; what is queued is still delivered before the FIN."""
        self.write_eof()

    def _check_writable(self, allow_closed: bool = False) -> None:
        if self._reset:
            raise StreamReset(f"yamux stream {self.stream_id} was reset")
        if self._error is not None:
            raise self._error
        if self._send_closed and not allow_closed:
            raise StreamClosed(f"write after write_eof on stream {self.stream_id}")

    # --- events from the session -------------------------------------------

    def _on_data(self, data: bytes) -> None:
        if self._reset:
            return
        self._received.append(data)
        self._readable.set()

    def _on_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_reset(self) -> None:
        self._reset = True
        self._received.clear()
        self._readable.set()
        self._writable.set()

    def _on_session_end(self, error: ConnectionClosed) -> None:
        if self._error is None:
            self._error = error
        self._readable.set()
        self._writable.set()


class YamuxSession:
    """A yamux session over ``stream``; use as ``async with``."""

    def __init__(
        self,
        stream: ByteStream,
        is_client: bool,
        config: YamuxConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config if config is not None else YamuxConfig()
        self.is_client = is_client
        self._stream = stream
        self._core = YamuxCore(
            is_client,
            self.config,
            rng if rng is not None else random.Random(),
            asyncio.get_running_loop().time(),
        )
        self._streams: dict[int, YamuxStream] = {}
        self._accept_queue: deque[YamuxStream] = deque()
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._wake_writer = asyncio.Event()
        self._changed = asyncio.Event()  # streams acked/closed, go-away, end
        self._backlog_low = asyncio.Event()
        self._done = asyncio.Event()
        self._closing = False
        self._go_away_sent = False
        self._error: ConnectionClosed | None = None
        self._jobs: Supervisor | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._close_scope: asyncio.Timeout | None = None

    # --- lifetime -----------------------------------------------------------

    async def __aenter__(self) -> YamuxSession:
        if self._jobs is not None:
            raise LocalProtocolError("a YamuxSession can be entered once")
        self._jobs = Supervisor("yamux", _log)
        await self._jobs.__aenter__()
        # The writer first: it is inside its ``try`` before the reader can
        # fail, so cancelling it always runs ``_finish``.
        self._writer_task = self._jobs.spawn(self._writer, "yamux writer")
        self._reader_task = self._jobs.spawn(self._reader, "yamux reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close gracefully (``close()``: flush, Go Away) and wait for the
        end; if the block raised or this wait is cancelled, end at once."""
        self.close()
        assert self._jobs is not None
        try:
            if exc_type is None:
                await self._done.wait()
        finally:
            await self._jobs.aclose()
            if not self._done.is_set():  # the writer was cancelled before it ran
                self._finish()

    def close(self) -> None:
        """Flush what the streams queued as far as the peer's windows allow
        (for at most ``config.close_timeout``), send Go Away, then end the
        session.  Idempotent.

        Go Away goes last because py-libp2p drops the whole connection the
        moment it reads one."""
        if self._closing:
            return
        self._closing = True
        if self._close_scope is not None and not self._done.is_set():
            loop = asyncio.get_running_loop()
            self._close_scope.reschedule(loop.time() + self.config.close_timeout)
        self._wake_writer.set()
        self._changed.set()

    async def aclose(self) -> None:
        """``close()`` and wait until the session has ended."""
        self.close()
        if self._jobs is not None:
            await self._done.wait()

    async def wait_closed(self) -> None:
        """Wait until the session has ended (closed by either side, or
        failed), without closing it; the owner of a connection built on the
        session waits here."""
        if self._jobs is None:
            raise LocalProtocolError("use the YamuxSession in `async with` first")
        await self._done.wait()

    @property
    def is_closed(self) -> bool:
        return self._core.terminated

    @property
    def error(self) -> YamuxProtocolError | KeepaliveTimeout | None:
        """Why the session ended (the peer's protocol violation or an
        unanswered keep-alive), unless the connection simply closed."""
        return self._core.error

    @property
    def stream_count(self) -> int:
        """Streams not yet closed both ways nor reset."""
        return self._core.stream_count

    @property
    def remote_go_away(self) -> int | None:
        """The code of the peer's Go Away, if it sent one."""
        return self._core.remote_go_away

    # --- streams ------------------------------------------------------------

    async def open_stream(self) -> YamuxStream:
        """Open a stream; waits while the peer has not acknowledged
        ``config.max_ack_backlog`` of ours.  Raises ``SessionClosed``,
        ``GoingAway`` or ``TooManyStreams``."""
        self._check_running()
        while not self._core.can_open_stream() and not self._core.terminated:
            if self._closing or self._core.remote_go_away is not None:
                break  # the core raises GoingAway
            if self._core.outbound_streams >= self.config.max_outbound_streams:
                break  # the core raises TooManyStreams
            self._changed.clear()
            await self._changed.wait()
        if self._closing and not self._core.terminated:
            raise GoingAway("the session is closing")
        stream_id = self._core.open_stream()
        stream = YamuxStream(self, stream_id)
        self._register(stream)
        self._wake_writer.set()
        return stream

    async def accept_stream(self) -> YamuxStream:
        """The next stream the peer opened.  Raises ``SessionClosed`` when
        the session ends, ``GoingAway`` after the peer's Go Away; streams
        that arrived before either are still handed out first."""
        if self._jobs is None:
            raise LocalProtocolError("use the YamuxSession in `async with` first")
        while not self._accept_queue:
            if self._core.terminated or self._closing:
                raise self._session_error()
            if self._core.remote_go_away is not None:
                raise GoingAway(f"the peer sent Go Away ({self._core.remote_go_away})")
            self._changed.clear()
            await self._changed.wait()
        stream = self._accept_queue.popleft()
        self._core.accept_stream(stream.stream_id)
        self._wake_writer.set()
        return stream

    async def ping(self) -> float:
        """Round-trip time of one yamux ping, in seconds."""
        self._check_running()
        loop = asyncio.get_running_loop()
        value = self._core.ping(loop.time())
        future: asyncio.Future[float] = loop.create_future()
        self._pings[value] = future
        self._wake_writer.set()
        try:
            return await future
        finally:
            self._pings.pop(value, None)

    def _register(self, stream: YamuxStream) -> None:
        # Streams the core forgot (FIN both ways, reset) get no more events;
        # drop them now and then so a long session does not keep them all.
        if len(self._streams) > 2 * self._core.stream_count + 64:
            live = set(self._core.open_streams())
            self._streams = {k: v for k, v in self._streams.items() if k in live}
        self._streams[stream.stream_id] = stream

    def _check_running(self) -> None:
        if self._jobs is None:
            raise LocalProtocolError("use the YamuxSession in `async with` first")
        if self._core.terminated:
            raise self._session_error()

    def _session_error(self) -> ConnectionClosed:
        if self._error is None:
            error = self._core.error
            if isinstance(error, SessionClosed):  # a keep-alive timeout says it all
                self._error = error
            else:
                self._error = SessionClosed(
                    "yamux session closed" if error is None else f"yamux session failed: {error}"
                )
        return self._error

    # --- calls from streams ---------------------------------------------------

    def _send(self, stream_id: int, data: bytes) -> None:
        self._core.send(stream_id, data)
        self._wake_writer.set()

    def _close_stream(self, stream_id: int) -> None:
        if not self._core.terminated:
            self._core.close_stream(stream_id)
            self._wake_writer.set()

    def _reset_stream(self, stream_id: int) -> None:
        self._core.reset_stream(stream_id)
        self._streams.pop(stream_id, None)
        self._wake_writer.set()

    def _consumed(self, stream_id: int, n: int) -> None:
        self._core.on_consumed(stream_id, n)
        if self._core.control_backlog:
            self._wake_writer.set()

    # --- tasks ----------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            await self._read_loop()
        except (OverlayError, OSError) as exc:
            _log.debug("yamux connection read failed: %r", exc)
            self._core.receive_eof()
            self._dispatch(self._core.events())
            self._wake_writer.set()
        except BaseException as exc:
            # A bug: the writer ends the session (``_finish``: its streams
            # raise SessionClosed) and the supervisor logs the traceback.
            # Cancellation is the session closing: the writer ends on its own.
            if not isinstance(exc, asyncio.CancelledError) and self._writer_task is not None:
                self._writer_task.cancel()
            raise

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._core.terminated:
            while self._core.control_backlog > self.config.max_control_backlog:
                self._backlog_low.clear()
                await self._backlog_low.wait()
            data = await self._stream.read(_READ_SIZE)
            if not data:
                self._core.receive_eof()
            else:
                self._core.receive_data(data, loop.time())
            self._dispatch(self._core.events())
            self._wake_writer.set()

    async def _writer(self) -> None:
        try:
            async with asyncio.timeout(None) as scope:
                self._close_scope = scope
                if self._closing:  # close() came before this task started
                    loop = asyncio.get_running_loop()
                    scope.reschedule(loop.time() + self.config.close_timeout)
                await self._write_loop()
        except TimeoutError:
            _log.debug("yamux close timed out with data unsent")
            self._core.go_away(GoAwayCode.NORMAL)
            try:
                self._stream.write(self._core.data_to_send(0))  # control frames only
            except (OverlayError, OSError) as exc:
                _log.debug("yamux could not send its Go Away: %r", exc)
        except (OverlayError, OSError) as exc:
            _log.debug("yamux connection write failed: %r", exc)
        finally:
            self._finish()

    async def _write_loop(self) -> None:
        while True:
            data = self._core.data_to_send(_WRITE_BATCH)
            self._dispatch(self._core.events())
            self._backlog_low.set()
            if data:
                self._stream.write(data)
                await self._with_timers(self._stream.drain, resume=True)
                continue
            if self._core.terminated:
                return
            if self._closing and not self._core.has_unsent_data():
                if self._core.control_backlog or not self._go_away_sent:
                    self._go_away_sent = True
                    self._core.go_away(GoAwayCode.NORMAL)
                    continue
                return
            self._wake_writer.clear()
            await self._with_timers(self._wake_writer.wait, resume=False)

    async def _with_timers(self, wait: Callable[[], Awaitable[object]], resume: bool) -> None:
        """Await ``wait()`` and serve the core's timers (keep-alive, ping
        timeouts) meanwhile, so a connection stuck in ``drain()`` is still
        declared dead when its keep-alive goes unanswered.  Both waits are
        safe to cancel and repeat; ``resume`` repeats the wait after a timer
        (a drain), otherwise the writer loops to send what the timer queued."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(self._core.next_deadline()):
                    await wait()
                return
            except TimeoutError:
                self._core.on_timer(loop.time())
                self._dispatch(self._core.events())
                if self._core.terminated or not resume:
                    return

    def _finish(self) -> None:
        self._core.receive_eof()  # no-op if the core already ended
        self._dispatch(self._core.events())
        try:
            self._stream.write_eof()
        except (OverlayError, OSError) as exc:
            _log.debug("yamux could not half-close its connection: %r", exc)
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._done.set()

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data)
            elif isinstance(event, StreamWritable):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._writable.set()
            elif isinstance(event, StreamOpened):
                stream = YamuxStream(self, event.stream_id)
                self._register(stream)
                self._accept_queue.append(stream)
            elif isinstance(event, StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_eof()
            elif isinstance(event, StreamWasReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._on_reset()
            elif isinstance(event, PingRtt):
                future = self._pings.get(event.value)
                if future is not None and not future.done():
                    future.set_result(event.rtt)
            elif isinstance(event, PingTimedOut):
                future = self._pings.get(event.value)
                if future is not None and not future.done():
                    future.set_exception(TimeoutError("the peer did not answer our ping"))
            elif isinstance(event, GoAwayReceived):
                _log.debug("yamux peer sent Go Away %d", event.code)
            elif isinstance(event, ConnectionTerminated):
                if event.error is not None:
                    _log.debug("yamux peer violated the protocol: %s", event.error)
                error = self._session_error()
                for stream in self._streams.values():
                    stream._on_session_end(error)
                for stream in self._accept_queue:
                    stream._on_session_end(error)
                for future in self._pings.values():
                    if not future.done():
                        future.set_exception(error)
        if events:
            self._changed.set()
