"""Byte pump between an API socket connection and a libp2p stream.

Each direction runs until EOF and then half-closes the other side, so a
client can send a request, shut down its write side and still read the
whole answer.  A reset on either side aborts both.

A Unix socket cannot carry a reset: an aborted pump looks like a clean EOF
to the client.  So every pump is entered in a ``PumpLedger`` under an id the
client gets in its ``take_over`` reply, and a client that read EOF asks the
``stream_outcome`` op whether the stream ended or broke (the CLI then exits
non-zero instead of reporting a truncated transfer as success).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from overlay.errors import StreamClosed, StreamReset, TransportError
from overlay.wire.stream import ByteStream

__all__ = ["pump_stream", "PUMP_CHUNK", "PumpLedger", "PumpOutcome"]

log = logging.getLogger(__name__)

PUMP_CHUNK = 65536
"""Bytes moved per read; both sides apply their own backpressure via drain()."""


@dataclass(frozen=True, slots=True)
class PumpOutcome:
    """How a pump ended: bytes moved each way, and why it broke (None: both
    directions reached EOF)."""

    up: int
    down: int
    failure: str | None = None


@dataclass(slots=True)
class _Entry:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: PumpOutcome | None = None


class PumpLedger:
    """The outcomes of recent pumps by id; at most ``keep`` are remembered
    (the oldest finished ones are forgotten first)."""

    def __init__(self, keep: int = 1024) -> None:
        self._keep = keep
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def open(self) -> str:
        """A new id for a pump about to start."""
        token = secrets.token_urlsafe(12)
        self._entries[token] = _Entry()
        while len(self._entries) > self._keep:
            oldest = next((k for k, e in self._entries.items() if e.outcome is not None), None)
            if oldest is None:
                break  # all still running: their owners close them
            del self._entries[oldest]
        return token

    def close(self, token: str, outcome: PumpOutcome) -> None:
        entry = self._entries.get(token)
        if entry is not None:
            entry.outcome = outcome
            entry.done.set()

    def known(self, token: str) -> bool:
        return token in self._entries

    async def outcome(self, token: str, wait: float) -> PumpOutcome | None:
        """The outcome of pump ``token``, waiting up to ``wait`` seconds for
        it to end; None if it still runs.  Raises ``KeyError`` if unknown."""
        entry = self._entries[token]
        if entry.outcome is None and wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await entry.done.wait()
            except TimeoutError:
                pass
        return entry.outcome

    async def run(self, token: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  stream: ByteStream) -> PumpOutcome:
        """``pump_stream`` recorded under ``token`` (opened by ``open``)."""
        outcome = PumpOutcome(0, 0, "the daemon stopped")
        try:
            outcome = await pump_stream(reader, writer, stream)
        finally:
            self.close(token, outcome)
        return outcome


class _Aborted(Exception):
    """One side failed; the other must be torn down instead of half-closed."""


async def _socket_to_stream(reader: asyncio.StreamReader, stream: ByteStream) -> int:
    moved = 0
    while True:
        try:
            data = await reader.read(PUMP_CHUNK)
        except ConnectionError as exc:
            raise _Aborted(f"API socket failed: {exc}") from exc
        if not data:
            try:
                stream.write_eof()
            except (StreamClosed, StreamReset, TransportError) as exc:
                raise _Aborted(f"libp2p stream failed: {exc}") from exc
            return moved
        try:
            stream.write(data)
            await stream.drain()
        except (StreamClosed, StreamReset, TransportError) as exc:
            raise _Aborted(f"libp2p stream failed: {exc}") from exc
        moved += len(data)


async def _stream_to_socket(stream: ByteStream, writer: asyncio.StreamWriter) -> int:
    moved = 0
    while True:
        try:
            data = await stream.read(PUMP_CHUNK)
        except (StreamReset, TransportError) as exc:
            raise _Aborted(f"libp2p stream failed: {exc}") from exc
        try:
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return moved
            writer.write(data)
            await writer.drain()
        except ConnectionError as exc:
            raise _Aborted(f"API socket failed: {exc}") from exc
        moved += len(data)


async def pump_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: ByteStream
) -> PumpOutcome:
    """Pump until both directions reached EOF or one side failed.

    Returns the bytes moved (socket → stream, stream → socket) and, if it
    broke, why.  On failure the stream is reset and the socket aborted; the
    caller still closes the writer.  Never raises for peer or client
    misbehaviour.
    """
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            up = group.create_task(_socket_to_stream(reader, stream))
            down = group.create_task(_stream_to_socket(stream, writer))
    except* _Aborted as failures:
        failure = failures.exceptions[0]
    if failure is not None:
        log.debug("pump aborted: %s", failure)
        stream.reset()
        writer.transport.abort()
        return PumpOutcome(0, 0, str(failure))
    return PumpOutcome(up.result(), down.result())
