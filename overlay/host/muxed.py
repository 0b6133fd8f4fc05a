"""A host ``Connection`` over a yamux session on a secured byte stream.

A relayed circuit (and any other raw stream: TCP, one day) becomes a
connection once Noise has secured it and yamux multiplexes it
(``overlay.secure.upgrade``).  ``MuxedConnection.run`` is the connection's
lifetime: it owns the yamux session, and it ends the connection when the
relay's time limit passes or the stream underneath ends.  The relay's data
limit is the relay's to enforce: it resets the circuit, which ends the
session like any other loss of the stream.
"""

from __future__ import annotations

import asyncio
import logging

from multiaddr import Multiaddr

from overlay.errors import ConnectionClosed, OverlayError
from overlay.host.transport_types import ConnectionLimit, Path
from overlay.identity import PeerId
from overlay.mux import YamuxSession, YamuxStream
from overlay.wire.stream import ByteStream

__all__ = ["ConnectionLimitReached", "MuxedConnection"]

log = logging.getLogger(__name__)


class ConnectionLimitReached(ConnectionClosed):
    """The relay's time limit for this connection passed."""


class MuxedConnection:
    """``Connection`` over ``session`` (made on ``raw``, not yet entered).

    Spawn ``run()`` in a long-lived TaskGroup and ``await started()``
    before handing the connection out.
    """

    def __init__(
        self,
        session: YamuxSession,
        raw: ByteStream,
        *,
        remote_peer: PeerId,
        remote_multiaddr: Multiaddr,
        is_initiator: bool,
        path: Path,
        limit: ConnectionLimit | None = None,
        remote_address: tuple[str, int] | None = None,
    ) -> None:
        self._session = session
        self._raw = raw
        self._remote_peer = remote_peer
        self._remote_multiaddr = remote_multiaddr
        self._is_initiator = is_initiator
        self._path: Path = path
        self._limit = limit
        self._remote_address = remote_address
        self._started = asyncio.Event()
        self._ended = asyncio.Event()
        self._closing = False
        self._reason: ConnectionClosed | None = None
        self._rtt: float | None = None

    def __repr__(self) -> str:
        role = "out" if self._is_initiator else "in"
        return f"<MuxedConnection {role} {self._path} {self._remote_peer} {self._remote_multiaddr}>"

    # -- the Connection protocol --------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        return self._remote_peer

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self._remote_address

    @property
    def remote_multiaddr(self) -> Multiaddr:
        return self._remote_multiaddr

    @property
    def path(self) -> Path:
        return self._path

    @property
    def limit(self) -> ConnectionLimit | None:
        return self._limit

    @property
    def is_initiator(self) -> bool:
        return self._is_initiator

    @property
    def is_closed(self) -> bool:
        return self._closing or self._ended.is_set() or self._session.is_closed

    @property
    def close_reason(self) -> ConnectionClosed | None:
        """Why the connection closed, once it has."""
        if not self.is_closed:
            return None
        if self._reason is None:
            error = self._session.error
            self._reason = ConnectionClosed(
                "yamux session closed" if error is None else f"yamux session failed: {error}"
            )
        return self._reason

    @property
    def smoothed_rtt(self) -> float | None:
        """The round trip of a yamux ping sent when the connection started
        (None until it is answered)."""
        return self._rtt

    @property
    def open_stream_count(self) -> int:
        """Streams still open on it (DCUtR closes a relayed connection the
        direct one replaced once this reaches 0)."""
        return self._session.stream_count

    async def open_stream(self) -> YamuxStream:
        return await self._session.open_stream()

    async def accept_stream(self) -> YamuxStream:
        return await self._session.accept_stream()

    def close(self, code: int = 0, reason: str = "", /) -> None:
        """Send yamux Go Away (the code has no yamux equivalent) and end."""
        if self._closing:
            return
        self._closing = True
        if self._reason is None:
            self._reason = ConnectionClosed(f"closed by us ({reason or code})")
        self._session.close()

    async def wait_closed(self) -> None:
        await self._ended.wait()

    def abort_for_test(self) -> None:
        """Drop the stream underneath without a Go Away, as a crash would."""
        self._closing = True
        self._reason = ConnectionClosed("aborted")
        self._raw.reset()

    # -- lifetime --------------------------------------------------------------

    async def started(self) -> None:
        """Wait until ``run`` has entered the session; raises
        ``ConnectionClosed`` if it ended first."""
        await self._started.wait()
        if self._ended.is_set():
            raise self.close_reason or ConnectionClosed("the connection ended at once")

    async def run(self) -> None:
        """Own the session until the connection ends (spawn this)."""
        clean = False
        try:
            async with self._session:
                self._started.set()
                async with asyncio.TaskGroup() as tg:
                    rtt = tg.create_task(self._measure_rtt())
                    await self._until_end()
                    rtt.cancel()
                clean = self._session.error is None
        finally:
            self._ended.set()
            self._started.set()
            if not clean:
                # The relay should free the circuit now, not at its timeout.
                self._raw.reset()

    async def _until_end(self) -> None:
        duration = self._limit.duration if self._limit is not None else None
        try:
            async with asyncio.timeout(duration):
                await self._session.wait_closed()
        except TimeoutError:
            if self._reason is None:
                self._reason = ConnectionLimitReached(
                    f"the relay's time limit of {duration:g} s passed"
                )
            self._closing = True
            self._session.close()
            await self._session.wait_closed()

    async def _measure_rtt(self) -> None:
        try:
            self._rtt = await self._session.ping()
        except (OverlayError, TimeoutError) as exc:
            log.debug("yamux ping on %r: %r", self, exc)

