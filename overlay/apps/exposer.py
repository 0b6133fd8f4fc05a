"""The daemon side of ``overlay expose``: serve ``/ovl/tcp/1.0.0`` streams
by connecting each to the exposed local TCP port.

For each inbound stream: read the header (10 s at most), look the service
up, check its allowlist against the stream's remote peer (names in the
allowlist are resolved to the peers their records name), connect to
``host:port`` and answer ``OK``, then pump both ways.  Refusals are
answered with their status byte, so the opener can tell a person why.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping

from overlay.apps.config import Exposure
from overlay.apps.errors import ServiceHeaderError
from overlay.apps.policy import is_allowed
from overlay.apps.pump import CHUNK, Counters, pump_socket
from overlay.apps.service_proto import MAX_SERVICE_NAME, Status, decode_header
from overlay.apps.tcp import connect_tcp
from overlay.errors import OverlayError, StreamClosed, StreamReset, TransportError
from overlay.host.stream import NegotiatedStream

__all__ = ["Exposer", "NamePeers"]

log = logging.getLogger(__name__)

NamePeers = Callable[[str], Awaitable[tuple[str, ...]]]
"""Resolves a name to the peer IDs its record names (empty if none)."""

HEADER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


class Exposer:
    def __init__(self, name_peers: NamePeers) -> None:
        self._name_peers = name_peers
        self.exposures: dict[str, Exposure] = {}
        self.counters: dict[str, Counters] = {}
        self.refused: dict[str, int] = {}
        """Streams refused, by status name (``not_exposed``, ``refused``, ``unreachable``)."""

    def set(self, exposure: Exposure) -> None:
        self.exposures[exposure.service] = exposure
        self.counters.setdefault(exposure.service, Counters())

    def remove(self, service: str) -> Exposure | None:
        self.counters.pop(service, None)
        return self.exposures.pop(service, None)

    def load(self, exposures: Mapping[str, Exposure]) -> None:
        for exposure in exposures.values():
            self.set(exposure)

    async def _read_header(self, stream: NegotiatedStream) -> str:
        data = b""
        async with asyncio.timeout(HEADER_TIMEOUT):
            while True:
                decoded = decode_header(data)
                if decoded is not None:
                    return decoded[0]
                if len(data) > MAX_SERVICE_NAME:  # decode_header refuses first
                    raise ServiceHeaderError("header too long")
                need = 1 if not data else 1 + data[0] - len(data)
                data += await stream.readexactly(need)

    async def _allowed(self, exposure: Exposure, remote: str) -> bool:
        if not exposure.allow or remote in exposure.allow:
            return True
        resolved: list[str] = []
        for entry in exposure.allow:
            if "." in entry:  # a name; peer IDs have no dots
                try:
                    resolved.extend(await self._name_peers(entry))
                except (OverlayError, TimeoutError) as exc:
                    log.info("allowlist of %s: cannot resolve %s: %s", exposure.service,
                             entry, exc)
        return is_allowed(exposure.allow, remote, resolved)

    async def _refuse(self, stream: NegotiatedStream, status: Status) -> None:
        self.refused[status.name.lower()] = self.refused.get(status.name.lower(), 0) + 1
        try:
            stream.write(bytes((status,)))
            await stream.drain()
            stream.write_eof()
        except (StreamClosed, StreamReset, TransportError):
            stream.reset()

    async def handle(self, stream: NegotiatedStream) -> None:
        """The host's handler for ``/ovl/tcp/1.0.0``."""
        try:
            service = await self._read_header(stream)
        except (ServiceHeaderError, StreamClosed, StreamReset, TransportError,
                TimeoutError) as exc:
            log.debug("service stream from %s: bad header: %s", stream.remote_peer, exc)
            stream.reset()
            return
        exposure = self.exposures.get(service)
        if exposure is None:
            await self._refuse(stream, Status.NOT_EXPOSED)
            return
        # Without an allowlist the peer ID is never spelled out (base58 per stream).
        if exposure.allow and not await self._allowed(exposure, str(stream.remote_peer)):
            log.info("service %s: refused %s (not in its allowlist)", service,
                     stream.remote_peer)
            await self._refuse(stream, Status.REFUSED)
            return
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                sock = await connect_tcp(exposure.host, exposure.port)
        except (OSError, TimeoutError) as exc:
            log.info("service %s: cannot connect to %s:%d: %s", service, exposure.host,
                     exposure.port, exc)
            await self._refuse(stream, Status.UNREACHABLE)
            return
        counters = self.counters.setdefault(service, Counters())
        try:
            # On loopback connect_tcp did not yield: OK leaves with the
            # negotiation's answer, in one packet.
            stream.write(bytes((Status.OK,)))
            early = await _pipelined_bytes(stream)
            sent = _send_now(sock, early)
        except (StreamClosed, StreamReset, TransportError, OSError) as exc:
            log.debug("service %s: the stream's first bytes failed: %s", service, exc)
            stream.reset()
            sock.close()
            return
        counters.down += len(early)
        # bytes "up" here are the local service's answer going out.
        await pump_socket(sock, stream, counters, early[sent:])


async def _pipelined_bytes(stream: NegotiatedStream) -> bytes:
    """What the opener sent behind its header and is already here (b"" if
    nothing is): it goes to the local server before the pump starts, a
    loop turn or two sooner.  The read cannot wait, since the bytes are
    buffered."""
    # QUIC and yamux streams both count what they hold; another stream
    # (none today) just leaves the bytes to the pump.
    buffered = getattr(stream.raw, "buffered", 0)
    if not isinstance(buffered, int) or buffered <= 0:
        return b""
    return await stream.read(CHUNK)


def _send_now(sock: socket.socket, data: bytes) -> int:
    """Bytes of ``data`` the fresh socket took without waiting."""
    if not data:
        return 0
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
