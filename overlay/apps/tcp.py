"""TCP listeners whose connections run as tasks of one owner.

``asyncio.start_server`` would run each connection in a task nobody
awaits; here each accepted connection becomes a job of the group's
``Supervisor``, capped at ``max_connections`` (beyond it a connection is
closed at once); one connection's failure is logged and costs only that
connection, and closing the group aborts, cancels and awaits every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType

from overlay.errors import LocalProtocolError
from overlay.supervisor import Supervisor

__all__ = ["ConnectionGroup", "Listener", "format_hostport"]

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Listener:
    """One bound TCP listener; ``address`` has the real port."""

    def __init__(self, server: asyncio.Server, what: str) -> None:
        self.server = server
        self.what = what
        sockname = server.sockets[0].getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))

    @property
    def text(self) -> str:
        return format_hostport(*self.address)


class ConnectionGroup:
    def __init__(self, max_connections: int = 1024) -> None:
        self._max = max_connections
        self._sup: Supervisor | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._listeners: list[Listener] = []
        self.refused = 0
        """Connections closed at once because ``max_connections`` were open."""

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    async def __aenter__(self) -> ConnectionGroup:
        sup = Supervisor("tcp connections", log)
        await sup.__aenter__()
        self._sup = sup
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for listener in list(self._listeners):
            await self.close_listener(listener)
        for writer in list(self._writers):
            writer.transport.abort()
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.aclose()
        self._writers.clear()  # also those of connections cancelled before they ran

    async def listen(self, host: str, port: int, handler: Handler, what: str) -> Listener:
        """Bind ``host:port`` (port 0: any) and serve each connection with
        ``handler``; raises ``OSError`` when the address cannot be bound."""
        if self._sup is None:
            raise LocalProtocolError("the connection group is not running")

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sup = self._sup
            if sup is None or len(self._writers) >= self._max:
                self.refused += 1
                writer.transport.abort()
                return
            self._writers.add(writer)
            # One connection's failure is its own: the supervisor logs it.
            sup.spawn(partial(self._serve, reader, writer, handler), what)

        server = await asyncio.start_server(on_client, host, port)
        listener = Listener(server, what)
        self._listeners.append(listener)
        return listener

    async def close_listener(self, listener: Listener) -> None:
        """Stop accepting; connections already open keep running."""
        if listener in self._listeners:
            self._listeners.remove(listener)
        listener.server.close()
        # wait_closed() would wait for the open connections too (3.12+).

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     handler: Handler) -> None:
        try:
            await handler(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
