"""The exit side of ``/ovl/exit/1.0.0`` (docs/apps.md, "Exits").

For each inbound stream: read the header (10 s at most), check the
client against the allowlist (names resolved to the peers their records
name), the port against the port allowlist and the client's limits, then
resolve the host with the system resolver (in the loop's executor, off
the event loop), drop every address the never-private rule refuses,
connect to the first remaining address that answers, answer ``OK`` and
pump both ways through ``MeteredStream``, which charges the client's byte
budget and rate.  Every refusal is answered with its status byte, logged
(rate-limited) and counted in ``limit_hits`` (``overlay stats``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from overlay.apps.exit_policy import ClientBook, ExitConfig, IPAddress, destination_refusal
from overlay.apps.exit_proto import (
    MAX_HEADER,
    ExitHeaderError,
    ExitRequest,
    ExitStatus,
    decode_request,
)
from overlay.apps.policy import is_allowed
from overlay.apps.pump import Counters, pump
from overlay.errors import OverlayError, StreamClosed, StreamReset, TransportError
from overlay.host.stream import NegotiatedStream
from overlay.limits import LimitHits
from overlay.wire.stream import ByteStream

__all__ = ["ExitServer", "MeteredStream"]

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0

NamePeers = Callable[[str], Awaitable[tuple[str, ...]]]
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The system resolver's addresses for ``host`` (an IP literal as is);
    ``getaddrinfo`` runs in the loop's executor."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in out:
                out.append(address)
    return out


class _Refused(Exception):
    def __init__(self, status: ExitStatus, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.cause = cause


class MeteredStream:
    """A ``ByteStream`` that charges every byte read or written to one
    client of a ``ClientBook``: past the byte budget it resets, and it
    waits out the client's rate."""

    def __init__(self, stream: ByteStream, book: ClientBook, client: str,
                 over: Callable[[], None]) -> None:
        self._stream = stream
        self._book = book
        self._client = client
        self._over = over
        self._pending = 0

    async def _charge(self, amount: int) -> None:
        wait = self._book.charge(self._client, amount, time.monotonic())
        if wait is None:
            self._over()
            self._stream.reset()
            raise StreamReset("the client's byte limit at this exit is used up")
        if wait > 0:
            await asyncio.sleep(wait)  # the rate limit itself, not synchronisation

    async def read(self, max_bytes: int = 65536) -> bytes:
        data = await self._stream.read(max_bytes)
        await self._charge(len(data))
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self._stream.readexactly(n)
        await self._charge(n)
        return data

    def write(self, data: bytes) -> None:
        self._pending = len(data)
        self._stream.write(data)

    async def drain(self) -> None:
        pending, self._pending = self._pending, 0
        await self._stream.drain()
        if pending:
            await self._charge(pending)

    def write_eof(self) -> None:
        self._stream.write_eof()

    def reset(self) -> None:
        self._stream.reset()

    async def close(self) -> None:
        await self._stream.close()


class ExitServer:
    def __init__(self, config: ExitConfig, name_peers: NamePeers,
                 resolve: Resolve = system_resolve) -> None:
        self.config = config
        self._name_peers = name_peers
        self._resolve = resolve
        self.book = ClientBook(config)
        self.limit_hits = LimitHits()
        self.counters = Counters()
        self.refused: dict[str, int] = {}
        """Streams refused, by status name."""
        self.announced = asyncio.Event()
        """Set once the provider record went out (to at least one peer)."""
        self.released = asyncio.Condition()
        """Notified whenever a client's connection ends (``book`` changed)."""

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"connections": c.connections, "active": c.active, "failed": c.failed,
                "bytes_to_clients": c.up, "bytes_from_clients": c.down,
                 "refused": dict(sorted(self.refused.items())),
                "clients": self.book.snapshot(), "ports": list(self.config.ports)}

    def _refuse_count(self, refused: _Refused, peer: str, request: ExitRequest | None) -> None:
        name = refused.status.name.lower()
        self.refused[name] = self.refused.get(name, 0) + 1
        report = self.limit_hits.hit(refused.cause, time.monotonic())
        if report:
            where = f"{request.host}:{request.port}" if request is not None else "?"
            log.info("exit: refused %s → %s: %s (%s; %d such)", peer, where, refused,
                     refused.cause, report)

    async def _read_request(self, stream: NegotiatedStream) -> ExitRequest:
        data = b""
        async with asyncio.timeout(HEADER_TIMEOUT):
            while True:
                decoded = decode_request(data)
                if decoded is not None:
                    return decoded[0]
                need = 3 - len(data) if len(data) < 3 else 3 + data[2] - len(data)
                if len(data) + need > MAX_HEADER:  # decode_request refuses first
                    raise ExitHeaderError("header too long")
                data += await stream.readexactly(need)

    async def _allowed(self, peer: str) -> bool:
        allow = self.config.allow
        if self.config.open_to_anyone or peer in allow:
            return True
        if not allow:
            return False
        resolved: list[str] = []
        for entry in allow:
            if "." in entry:
                try:
                    resolved.extend(await self._name_peers(entry))
                except (OverlayError, TimeoutError) as exc:
                    log.info("exit allowlist: cannot resolve %s: %s", entry, exc)
        return is_allowed(allow, peer, resolved)

    async def _connect(self, request: ExitRequest) -> tuple[asyncio.StreamReader,
                                                            asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                addresses = await self._resolve(request.host, request.port)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise _Refused(ExitStatus.RESOLVE_FAILED, "exit.resolve_failed",
                           f"cannot resolve {request.host}: {exc}") from None
        if not addresses:
            raise _Refused(ExitStatus.RESOLVE_FAILED, "exit.resolve_failed",
                           f"{request.host} has no address")
        allowed = [a for a in addresses
                   if destination_refusal(a, self.config.lab_networks) is None]
        if not allowed:
            why = destination_refusal(addresses[0], self.config.lab_networks)
            raise _Refused(ExitStatus.DESTINATION_REFUSED, "exit.destination_refused",
                           f"{request.host} is a {why} ({addresses[0]})")
        errors: list[str] = []
        for address in allowed:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    return await asyncio.open_connection(str(address), request.port)
            except (OSError, TimeoutError) as exc:
                errors.append(f"{address}: {getattr(exc, 'strerror', None) or 'timed out'}")
        raise _Refused(ExitStatus.UNREACHABLE, "exit.unreachable",
                       f"cannot connect to {request.host}:{request.port} ({'; '.join(errors)})")

    async def _release(self, peer: str) -> None:
        self.book.release(peer)
        async with self.released:
            self.released.notify_all()

    async def _answer(self, stream: NegotiatedStream, status: ExitStatus) -> None:
        try:
            stream.write(bytes((status,)))
            await stream.drain()
            stream.write_eof()
        except (StreamClosed, StreamReset, TransportError):
            stream.reset()

    async def handle(self, stream: NegotiatedStream) -> None:
        """The host's handler for ``/ovl/exit/1.0.0``."""
        peer = str(stream.remote_peer)
        request: ExitRequest | None = None
        try:
            request = await self._read_request(stream)
        except ExitHeaderError as exc:
            self._refuse_count(_Refused(ExitStatus.BAD_REQUEST, "exit.bad_request", str(exc)),
                               peer, None)
            await self._answer(stream, ExitStatus.BAD_REQUEST)
            return
        except (StreamClosed, StreamReset, TransportError, TimeoutError) as exc:
            log.debug("exit stream from %s: no header: %s", peer, exc)
            stream.reset()
            return
        admitted = False
        try:
            if not await self._allowed(peer):
                raise _Refused(ExitStatus.NOT_ALLOWED, "exit.client_not_allowed",
                               "not in the allowlist")
            if request.port not in self.config.ports:
                raise _Refused(ExitStatus.PORT_REFUSED, "exit.port_refused",
                               f"port {request.port} is not allowed")
            cause = self.book.admit(peer, time.monotonic())
            if cause is not None:
                raise _Refused(ExitStatus.LIMIT, cause, "limit reached")
            admitted = True
            reader, writer = await self._connect(request)
        except _Refused as refused:
            if admitted:
                await self._release(peer)
            self._refuse_count(refused, peer, request)
            await self._answer(stream, refused.status)
            return
        except BaseException:  # cancelled (the daemon stops) while connecting
            if admitted:
                self.book.release(peer)
            stream.reset()
            raise
        try:
            def over() -> None:
                self._refuse_count(_Refused(ExitStatus.LIMIT, "exit.bytes_per_client",
                                            "byte limit used up"), peer, request)

            metered = MeteredStream(stream, self.book, peer, over)
            stream.write(bytes((ExitStatus.OK,)))
            # "up" is the destination's answer going to the client.
            await pump(reader, writer, metered, self.counters)
        except (StreamClosed, StreamReset, TransportError):
            stream.reset()
            writer.transport.abort()
        finally:
            await self._release(peer)
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
