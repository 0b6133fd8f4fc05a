"""The slice of the transport the host uses, as Protocols.

``overlay.transport.QuicEndpoint``/``QuicConn`` satisfy these; keeping the
host written against them lets tests drive it over any transport.
"""

from __future__ import annotations

from typing import Protocol

from overlay.errors import ConnectionClosed
from overlay.identity import PeerId
from overlay.wire.stream import ByteStream

__all__ = ["Connection", "Endpoint"]


class Connection(Protocol):
    @property
    def remote_peer(self) -> PeerId: ...

    @property
    def remote_address(self) -> tuple[str, int]: ...

    @property
    def is_initiator(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def close_reason(self) -> ConnectionClosed | None: ...

    @property
    def smoothed_rtt(self) -> float | None: ...

    async def open_stream(self) -> ByteStream: ...

    async def accept_stream(self) -> ByteStream: ...

    def close(self, code: int = 0, reason: str = "", /) -> None: ...

    async def wait_closed(self) -> None: ...


class Endpoint(Protocol):
    @property
    def local_address(self) -> tuple[str, int]: ...

    async def dial(
        self, address: tuple[str, int], expected_peer: PeerId | None, /
    ) -> Connection: ...

    async def accept(self) -> Connection: ...

    async def aclose(self) -> None: ...

    def abort_for_test(self) -> None: ...
