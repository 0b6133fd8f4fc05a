"""Client side of the stream API (used by the CLI, usable by any program).

    async with await ApiClient.connect(home.default_api_socket) as client:
        me = await client.call("identity")
        await client.call("ping", {"addr": addr, "count": 3}, on_event=print)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from overlay.daemon.errors import ApiError, ApiProtocolError, DaemonError, DaemonNotRunning
from overlay.daemon.framing import read_message, write_message
from overlay.daemon.protocol import MAX_MESSAGE_SIZE

__all__ = ["ApiClient", "EventCallback"]

EventCallback = Callable[[dict[str, Any]], None]


class ApiClient:
    """One API connection; requests run one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 path: Path, limit: int = MAX_MESSAGE_SIZE) -> None:
        self._reader = reader
        self._writer = writer
        self.path = path
        self._limit = limit
        self._ids = itertools.count(1)
        self._detached = False

    @classmethod
    async def connect(cls, path: Path | str, timeout: float = 5.0) -> ApiClient:
        """Connect to a daemon; ``DaemonNotRunning`` if nothing answers."""
        path = Path(path)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(
                    os.fspath(path), limit=MAX_MESSAGE_SIZE)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunning(path) from exc
        except TimeoutError as exc:
            raise DaemonError(f"the daemon at {path} does not accept connections") from exc
        except OSError as exc:
            raise DaemonError(f"cannot connect to {path}: {exc.strerror or exc}") from exc
        return cls(reader, writer, path)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._detached:
            return
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _send(self, op: str, args: Mapping[str, Any] | None) -> int:
        if self._detached:
            raise DaemonError("this API connection now relays a stream")
        request_id = next(self._ids)
        message: dict[str, Any] = dict(args or {})
        message["id"] = request_id
        message["op"] = op
        try:
            await write_message(self._writer, message, self._limit)
        except ConnectionError as exc:
            raise DaemonError(f"lost the connection to the daemon at {self.path}: {exc}") from exc
        return request_id

    async def _final(self, request_id: int, on_event: EventCallback | None) -> dict[str, Any]:
        while True:
            try:
                message = await read_message(self._reader, self._limit)
            except ConnectionError as exc:
                raise DaemonError(f"lost the connection to the daemon at {self.path}: {exc}") from exc
            if message is None:
                raise ApiProtocolError("the daemon closed the connection before replying")
            if message.get("id") not in (request_id, None):
                raise ApiProtocolError(f"reply for unknown request {message.get('id')!r}")
            if "event" in message:
                if on_event is not None:
                    on_event(message)
                continue
            if message.get("ok") is True:
                return message
            error = message.get("error")
            if isinstance(error, dict):
                raise ApiError(str(error.get("code", "failed")), str(error.get("message", "")))
            raise ApiProtocolError(f"malformed reply: {message!r}"[:200])

    async def call(self, op: str, args: Mapping[str, Any] | None = None, *,
                   on_event: EventCallback | None = None) -> dict[str, Any]:
        """Send one request; return its final ok reply or raise ``ApiError``.

        Events of streaming ops go to ``on_event`` as they arrive.
        """
        request_id = await self._send(op, args)
        return await self._final(request_id, on_event)

    async def stream_open(
        self, protocols: Sequence[str], *, peer: str | None = None, addr: str | None = None,
    ) -> tuple[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a libp2p stream; return the reply and the raw relay ends.

        Afterwards this connection carries only the stream's bytes; call
        ``writer.write_eof()`` to half-close and ``writer.close()`` when done.
        """
        args: dict[str, Any] = {"protocols": list(protocols)}
        if peer is not None:
            args["peer"] = peer
        if addr is not None:
            args["addr"] = addr
        return await self._take_over("stream_open", args)

    async def stream_accept(
        self, stream_id: int
    ) -> tuple[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter]:
        """Take an inbound stream announced by a ``stream`` event."""
        return await self._take_over("stream_accept", {"stream_id": stream_id})

    async def _take_over(
        self, op: str, args: Mapping[str, Any]
    ) -> tuple[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter]:
        reply = await self.call(op, args)
        self._detached = True
        return reply, self._reader, self._writer

    async def next_event(self) -> dict[str, Any] | None:
        """Read the next message of a long-running op (``stream_handler_register``)."""
        return await read_message(self._reader, self._limit)

    def half_close(self) -> None:
        """Shut down the sending side; replies can still be read.  Ends a
        ``stream_handler_register`` request, whose final reply follows."""
        self._writer.write_eof()

    async def send_request(self, op: str, args: Mapping[str, Any] | None = None) -> int:
        """Send a request without waiting for its reply; returns its id."""
        return await self._send(op, args)
