"""TCP listeners whose connections run as jobs of one owner, and the
outgoing connect of the exposer.

``asyncio.start_server`` would run each connection in a task nobody
awaits; here each accepted connection becomes a job of the group's
``Supervisor``, capped at ``max_connections`` (beyond it a connection is
closed at once); one connection's failure is logged and costs only that
connection, and closing the group aborts, cancels and awaits every one.

A handler gets the accepted socket itself (``Accepted``) rather than
asyncio streams: a forward opens its service stream first and then takes
what the client already sent (``take_sent``) without waiting, so those
bytes leave behind the stream's header in the same QUIC packet instead of
one loop turn later in a packet of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType

from overlay.errors import LocalProtocolError
from overlay.supervisor import Supervisor

__all__ = ["Accepted", "ConnectionGroup", "Listener", "connect_tcp", "format_hostport"]

log = logging.getLogger(__name__)

BACKLOG = 128
ACCEPT_BACKOFF = 0.5
"""Seconds the accept loop pauses when the process is out of descriptors
(or buffers): accepting again at once would spin."""
_FIRST_READ = 65536
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_CLIENT_ONLY = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN}
"""Accept errors that concern the one client that was being accepted."""

Handler = Callable[["Accepted"], Awaitable[None]]


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Accepted:
    """One accepted connection: a raw non-blocking socket until
    ``streams()`` hands it to asyncio."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._writer: asyncio.StreamWriter | None = None
        self._detached = False

    @property
    def sock(self) -> socket.socket:
        return self._sock

    def detach(self) -> socket.socket:
        """Hand the socket over (to ``pump_socket``, which closes it); this
        object no longer closes or aborts it."""
        if self._writer is not None or self._detached:
            raise LocalProtocolError("detach after streams() or detach()")
        self._detached = True
        return self._sock

    async def recv(self, max_bytes: int) -> bytes:
        """Read from the raw socket (before ``streams()`` or ``detach()``)."""
        return await asyncio.get_running_loop().sock_recv(self._sock, max_bytes)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self._sock, data)

    def take_sent(self) -> bytes:
        """What the client has sent so far (b"" for nothing yet), without
        waiting; only before ``streams()``.  Raises ``ConnectionError`` if
        the client reset the connection."""
        if self._writer is not None or self._detached:
            raise LocalProtocolError("take_sent after streams() or detach()")
        try:
            return self._sock.recv(_FIRST_READ)
        except (BlockingIOError, InterruptedError):
            return b""

    async def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The connection as asyncio streams (once)."""
        if self._writer is not None or self._detached:
            raise LocalProtocolError("streams() called twice, or after detach()")
        reader, writer = await asyncio.open_connection(sock=self._sock)
        self._writer = writer
        return reader, writer

    def abort(self) -> None:
        """Close at once, as asyncio's ``transport.abort()`` does: what the
        client sent and nobody read makes the kernel answer with a reset."""
        if self._detached:
            return  # the pump's: cancelling it aborts the socket
        if self._writer is not None:
            self._writer.transport.abort()
            return
        self._sock.close()

    async def aclose(self) -> None:
        if self._detached:
            return
        if self._writer is None:
            self._sock.close()
            return
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class Listener:
    """One bound TCP listener; ``address`` has the real port."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        self.sock = sock
        self.what = what
        self.accepting: asyncio.Task[None] | None = None
        sockname = sock.getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))

    @property
    def text(self) -> str:
        return format_hostport(*self.address)


class ConnectionGroup:
    def __init__(self, max_connections: int = 1024) -> None:
        self._max = max_connections
        self._sup: Supervisor | None = None
        self._open: set[Accepted] = set()
        self._listeners: list[Listener] = []
        self.refused = 0
        """Connections closed at once because ``max_connections`` were open."""

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def __aenter__(self) -> ConnectionGroup:
        sup = Supervisor("tcp connections", log)
        await sup.__aenter__()
        self._sup = sup
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for listener in list(self._listeners):
            await self.close_listener(listener)
        for conn in list(self._open):
            conn.abort()
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.aclose()
        self._open.clear()  # also those of connections cancelled before they ran

    async def listen(self, host: str, port: int, handler: Handler, what: str) -> Listener:
        """Bind ``host:port`` (port 0: any) and serve each connection with
        ``handler``; raises ``OSError`` when the address cannot be bound."""
        sup = self._sup
        if sup is None:
            raise LocalProtocolError("the connection group is not running")
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        listener = Listener(sock, what)
        self._listeners.append(listener)
        listener.accepting = sup.spawn(partial(self._accept_loop, listener, handler),
                                       f"accept {what}")
        return listener

    async def close_listener(self, listener: Listener) -> None:
        """Stop accepting; connections already open keep running."""
        if listener in self._listeners:
            self._listeners.remove(listener)
        task, listener.accepting = listener.accepting, None
        if task is not None:
            task.cancel()
            # The socket is closed only once sock_accept has let go of it.
            await asyncio.wait([task])
        listener.sock.close()

    async def _accept_loop(self, listener: Listener, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener.sock)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.warning("%s: cannot accept: %s", listener.what, exc)
                    await asyncio.sleep(ACCEPT_BACKOFF)
                elif exc.errno not in _CLIENT_ONLY:
                    raise
                continue
            sock.setblocking(False)
            sup = self._sup
            if sup is None or len(self._open) >= self._max:
                self.refused += 1
                Accepted(sock).abort()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Accepted(sock)
            self._open.add(conn)
            # One connection's failure is its own: the supervisor logs it.
            sup.spawn(partial(self._serve, conn, handler), listener.what)

    async def _serve(self, conn: Accepted, handler: Handler) -> None:
        try:
            await handler(conn)
        finally:
            self._open.discard(conn)
            await conn.aclose()


async def connect_tcp(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to the IP address ``host``.

    On loopback the kernel completes the handshake inside ``connect()``,
    and then this returns without yielding to the loop: the exposer's
    status byte goes out in the same loop turn (and QUIC packet) as the
    protocol negotiation's answer.  Raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((host, port))
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                try:
                    sock.getpeername()
                except OSError:  # ENOTCONN: still under way
                    await asyncio.get_running_loop().sock_connect(sock, (host, port))
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock
