"""The daemon's SOCKS5 and HTTP proxy, both on one port.

The first byte tells them apart: 0x05 opens a SOCKS5 greeting, anything
else is an HTTP request.  SOCKS5 serves CONNECT without authentication
(``socks5h``: the client leaves names to us); HTTP serves CONNECT,
absolute-form requests for plain ``http://`` (forwarded with
``Connection: close``, one request per connection) and, for requests to
the proxy itself, ``GET /proxy.pac``.

Hosts in the zone (``*.ovl``) go to the named peer's exposed service by
port (80: ``http``; any other: the service published with that port);
other hosts are dialed by the connector's ``direct`` dialer: from this
machine, or through the chosen exit (``exit_client``, docs/apps.md
"Exits").  Failures are SOCKS5 reply codes or small
HTML pages naming the reason (``policy``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from overlay.apps import http_proxy, socks5
from overlay.apps.connector import Connector, Pipelining, StatusGate
from overlay.apps.errors import HttpRequestError, Reason, SocksError, TargetError
from overlay.apps.policy import http_status_for, socks_reply_for
from overlay.apps.pump import Counters, pump_socket, release
from overlay.apps.tcp import Accepted, ConnectionGroup, Listener
from overlay.errors import StreamClosed, StreamReset, TransportError
from overlay.wire.stream import ByteStream

__all__ = ["ProxyServer", "ProxyStats"]

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 30.0
"""Seconds a client has to send its greeting, request or HTTP head."""
_MAX_SOCKS = 600
_READ = 4096


@dataclass(slots=True)
class ProxyStats:
    counters: Counters = field(default_factory=Counters)
    socks: int = 0
    http: int = 0
    pac: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Failed requests by reason (``unknown_name``, ``bad_request`` …)."""

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class ProxyServer:
    def __init__(self, group: ConnectionGroup, connector: Connector) -> None:
        self._group = group
        self._connector = connector
        self.stats = ProxyStats()
        self.listener: Listener | None = None

    async def start(self, host: str, port: int) -> Listener:
        self.listener = await self._group.listen(host, port, self._handle, "proxy client")
        return self.listener

    def pac(self, host_header: str | None = None) -> str:
        """The PAC file.  It names the proxy as the browser reached it (the
        request's Host), so a proxy bound to 0.0.0.0 is not advertised as
        0.0.0.0; the bound address otherwise."""
        assert self.listener is not None
        host, port = self.listener.address
        if host_header:
            try:
                seen = http_proxy.parse_authority(host_header, port)
            except HttpRequestError:
                pass
            else:
                host, port = seen.host, seen.port
        return http_proxy.pac_file(host, port, self._connector.zone,
                                   everything=self._connector.via_exit)

    async def _handle(self, conn: Accepted) -> None:
        # The head is read from the raw socket and the socket then handed
        # to pump_socket: no asyncio streams for the whole connection.
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                first = await conn.recv(_READ)
        except (TimeoutError, OSError):
            return
        if not first:
            return
        try:
            if first[0] == socks5.SOCKS_VERSION:
                self.stats.socks += 1
                await self._socks(conn, first)
            else:
                self.stats.http += 1
                await self._http(conn, first)
        except OSError as exc:  # the client went away while we answered
            log.debug("proxy client: %s", exc)

    async def _open(self, host: str, port: int, pipelined: Pipelining) -> ByteStream:
        """The target's stream; the proxy's own address is refused, so a
        request for it cannot loop until every connection slot is taken."""
        if self.listener is not None and port == self.listener.address[1] and (
                host in (self.listener.address[0], "localhost", "127.0.0.1", "::1")):
            raise TargetError(Reason.BAD_TARGET, "that is this proxy's own address")
        return await self._connector.open_port(host, port, pipelined)

    # -- SOCKS5 ----------------------------------------------------------------------

    async def _socks(self, conn: Accepted, data: bytes) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                greeting, data = await _read_until(conn, data, socks5.parse_greeting,
                                                   _MAX_SOCKS)
                if not greeting.accepts_no_auth:
                    await conn.send(socks5.encode_method_choice(socks5.NO_ACCEPTABLE))
                    self.stats.error("socks_auth")
                    return
                await conn.send(socks5.encode_method_choice(socks5.NO_AUTH))
                request, data = await _read_until(conn, data, socks5.parse_request,
                                                  _MAX_SOCKS)
        except SocksError as exc:
            self.stats.error("bad_request")
            if exc.reply is not None:
                await conn.send(socks5.encode_reply(socks5.Reply(exc.reply)))
            log.debug("SOCKS5 client: %s", exc)
            return
        except (TimeoutError, OSError, EOFError):
            return
        try:
            # The client sends nothing before our reply: waiting for the
            # exposer's status costs a round trip, paid only while the
            # service is not known to answer (Pipelining.WARM).
            stream = await self._open(request.host, request.port, Pipelining.WARM)
        except TargetError as exc:
            self.stats.error(exc.reason.value)
            log.info("SOCKS5 %s:%d: %s", request.host, request.port, exc)
            await conn.send(socks5.encode_reply(socks_reply_for(exc.reason)))
            return
        await self._splice(conn, stream, data, socks5.encode_reply(socks5.Reply.SUCCEEDED))

    # -- HTTP -------------------------------------------------------------------------

    async def _http(self, conn: Accepted, data: bytes) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                request, rest = await _read_until(
                    conn, data, http_proxy.parse_head, http_proxy.MAX_HEAD_BYTES + 4)
        except HttpRequestError as exc:
            self.stats.error("bad_request")
            await conn.send(http_proxy.error_response(exc.status, "bad_request", str(exc)))
            return
        except (TimeoutError, OSError, EOFError):
            return
        target = request.connect or request.url
        if target is None:
            await conn.send(self._local_page(request))
            return
        connect = request.connect is not None
        try:
            # A plain request goes out behind the stream's header at once:
            # nothing reaches the client before the status is read, so a
            # refusal is still a readable page.  CONNECT is like SOCKS5.
            stream = await self._open(target.host, target.port,
                                      Pipelining.WARM if connect else Pipelining.ALWAYS)
            early = rest if connect else http_proxy.origin_head(request) + rest
            if not connect and isinstance(stream, StatusGate):
                self._send_early(stream, early)
                early = b""
                await stream.check()
        except TargetError as exc:
            self.stats.error(exc.reason.value)
            log.info("HTTP proxy %s:%d: %s", target.host, target.port, exc)
            await conn.send(http_proxy.error_response(http_status_for(exc.reason),
                                                      exc.reason.value, str(exc)))
            return
        await self._splice(conn, stream, early,
                           b"HTTP/1.1 200 Connection established\r\n\r\n" if connect else b"")

    def _local_page(self, request: http_proxy.HttpRequest) -> bytes:
        """A request for the proxy itself: the PAC file, or a page saying how to use it."""
        path = request.path.split("?", 1)[0]
        if path == "/proxy.pac" and request.method in ("GET", "HEAD"):
            self.stats.pac += 1
            body = self.pac(request.header("host")).encode("ascii")
            response = http_proxy.simple_response(
                200, body, "application/x-ns-proxy-autoconfig")
            if request.method == "HEAD":
                response = response[:len(response) - len(body)]
            return response
        self.stats.error("not_found")
        assert self.listener is not None
        return http_proxy.error_response(
            404, "not_found", f"This is the overlay proxy. Point a browser's automatic proxy "
            f"configuration at http://{self.listener.text}/proxy.pac, or use it as an HTTP "
            f"or SOCKS5 proxy for .{self._connector.zone} names.")

    def _send_early(self, stream: ByteStream, early: bytes) -> None:
        """Write what the client sent with its request; a stream that
        failed meanwhile is the target's failure."""
        try:
            stream.write(early)
        except (StreamClosed, StreamReset, TransportError) as exc:
            stream.reset()
            raise TargetError(Reason.PEER_OFFLINE, f"the stream failed: {exc}") from None
        self.stats.counters.up += len(early)

    async def _splice(self, conn: Accepted, stream: ByteStream, early: bytes,
                      reply: bytes) -> None:
        """Pump between the client and ``stream``; ``reply`` (the SOCKS5 or
        CONNECT answer) reaches the client first."""
        try:
            if reply:
                await conn.send(reply)
            if early:
                # What the client sent behind its request goes first.
                stream.write(early)
                self.stats.counters.up += len(early)
            await pump_socket(conn.detach(), stream, self.stats.counters)
        except (OSError, StreamClosed, StreamReset, TransportError) as exc:
            log.debug("proxy client: %s", exc)
            stream.reset()
        finally:
            await release(stream)
        if isinstance(stream, StatusGate) and stream.error is not None:
            # Refused after a pipelined reply: the pump reset the client.
            self.stats.error(stream.error.reason.value)
            log.info("proxy: %s", stream.error)


_T = TypeVar("_T")
_Parser = Callable[[bytes], "tuple[_T, int] | None"]


async def _read_until(conn: Accepted, data: bytes, parse: _Parser[_T],
                      limit: int) -> tuple[_T, bytes]:
    """Feed ``parse`` until it returns a message; ``data`` holds what was
    read already.  Returns the message and the bytes after it; raises
    ``EOFError`` when the client stops first.  The parsers enforce their own
    size limits; ``limit`` is a backstop."""
    buffer = bytearray(data)
    while True:
        parsed = parse(bytes(buffer))
        if parsed is not None:
            message, used = parsed
            return message, bytes(buffer[used:])
        if len(buffer) > limit:
            raise EOFError("request too large")
        chunk = await conn.recv(_READ)
        if not chunk:
            raise EOFError("the client closed before its request was complete")
        buffer += chunk
