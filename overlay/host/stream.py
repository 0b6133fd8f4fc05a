"""A stream whose protocol has been negotiated."""

from __future__ import annotations

import asyncio

from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.negotiate import confirm_selection
from overlay.wire.stream import ByteStream, GatedStream

__all__ = ["NegotiatedStream"]


class NegotiatedStream(GatedStream):
    """A ``ByteStream`` with its ``protocol``, ``remote_peer`` and ``conn``.

    After a lazy selection the listener's answer is still in the stream;
    the first read consumes it, so a refusal surfaces there as
    ``ProtocolNotSupported``.
    """

    __slots__ = ("protocol", "remote_peer", "conn", "_unconfirmed", "_lock")

    def __init__(
        self,
        stream: ByteStream,
        protocol: str,
        conn: Connection,
        *,
        confirmed: bool = True,
    ) -> None:
        super().__init__(stream)
        self.protocol = protocol
        self.conn = conn
        self.remote_peer: PeerId = conn.remote_peer
        self._unconfirmed = not confirmed
        self._lock: asyncio.Lock | None = None if confirmed else asyncio.Lock()

    @property
    def raw(self) -> ByteStream:
        return self._stream

    async def _before_read(self) -> None:
        if not self._unconfirmed or self._lock is None:
            return
        async with self._lock:
            if self._unconfirmed:
                await confirm_selection(self._stream, self.protocol)
                self._unconfirmed = False

    def __repr__(self) -> str:
        return f"<NegotiatedStream {self.protocol} with {self.remote_peer}>"
