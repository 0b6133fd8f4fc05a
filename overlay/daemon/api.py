"""The daemon's stream API server: a Unix socket speaking framed JSON.

Ops are looked up in a dispatch table; the daemon registers the node ops
(``identity``, ``ping`` …) and later subsystems add theirs (``dht_*``,
``name_*``) with ``ApiServer.register``.  Each client connection is a job
of the server's ``Supervisor``; whatever a client sends, only its own
connection is dropped.

Limits (all clients are the same user, so they are counted in total):
a connection with no request in progress is closed after ``idle_timeout``;
requests on one connection are served one at a time (pipelined ones wait
in the socket, costing the daemon nothing); when ``max_connections`` are
open, the connection idle the longest (at least ``min_idle_to_evict``) is
closed to make room, so idle clients cannot lock the CLI out.  Refusals
are counted (``limit_hits``) and logged once a minute at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from overlay.daemon.error_codes import error_code_for
from overlay.daemon.errors import (
    ApiError,
    ApiProtocolError,
    BadRequest,
    DaemonAlreadyRunning,
    DaemonError,
    MalformedMessage,
)
from overlay.daemon.framing import read_message, write_message
from overlay.daemon.protocol import (
    MAX_MESSAGE_SIZE,
    ErrorCode,
    error_reply,
    event_message,
    ok_reply,
    parse_request,
    request_id_of,
)
from overlay.daemon.schema import validate, value_of
from overlay.errors import MessageTooLarge, OverlayError
from overlay.limits import LimitHits
from overlay.supervisor import Supervisor, outcome_of

__all__ = [
    "ApiCall",
    "ApiServer",
    "ApiServerConfig",
    "OpHandler",
    "error_code_for",
    "MAX_SOCKET_PATH_BYTES",
]

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

OpHandler = Callable[["ApiCall"], Awaitable[Mapping[str, Any]]]
"""An op: receives the call, returns the fields of its final ok reply."""

_T = TypeVar("_T")

_ReadOutcome = dict[str, Any] | None | OverlayError | OSError
"""The next message, None at EOF, or why it could not be read."""

@dataclass(frozen=True, slots=True)
class ApiServerConfig:
    max_message_size: int = MAX_MESSAGE_SIZE
    """Largest request or reply body in bytes; larger requests close the connection."""
    max_connections: int = 256
    """Concurrent client connections; beyond it the longest-idle one is
    closed to make room, or the new client if none is idle."""
    idle_timeout: float = 30.0
    """Seconds a connection may wait between requests before it is closed."""
    min_idle_to_evict: float = 1.0
    """Seconds a connection that made requests must have been idle to be
    closed for a new one (a CLI between two requests is not idle)."""
    min_idle_unused: float = 0.01
    """The same for a connection that never sent a request (the CLI sends
    its first within a millisecond of connecting)."""

    def __post_init__(self) -> None:
        if not self.idle_timeout > 0 or self.min_idle_to_evict < 0 or self.min_idle_unused < 0:
            raise ValueError("idle_timeout must be positive, min_idle_to_evict not negative")
        if not 64 <= self.max_message_size <= 64 << 20:
            raise ValueError("max_message_size must be between 64 bytes and 64 MiB")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


class _Missing:
    pass


_MISSING = _Missing()


class ApiCall:
    """One request being served: its arguments, event emission, and takeover
    of the connection for raw byte relay (``stream_open``)."""

    def __init__(
        self,
        request_id: int,
        op: str,
        args: Mapping[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limit: int,
        read_ahead: Callable[[], asyncio.Future[_ReadOutcome]] | None = None,
    ) -> None:
        self.request_id = request_id
        self.op = op
        self.args = args
        self._reader = reader
        self._writer = writer
        self._limit = limit
        self._read_ahead = read_ahead
        self.taken_over = False
        self.hung_up = False
        """The client hung up while ``unless_hung_up`` watched (whether or
        not that cancelled the work)."""

    async def emit(self, event: str, **fields: Any) -> None:
        """Send ``{"id": n, "event": event, ...}`` before the final reply."""
        if self.taken_over:
            raise RuntimeError("the connection was taken over for raw relay")
        await write_message(self._writer, event_message(self.request_id, event, fields),
                            self._limit)

    async def take_over(
        self, fields: Mapping[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Send the final ok reply, then hand the raw connection to the op.

        Bytes the client pipelined after its request stay in the reader.  The
        server closes the connection when the op returns.
        """
        await write_message(self._writer, ok_reply(self.request_id, fields), self._limit)
        self.taken_over = True
        return self._reader, self._writer

    async def unless_hung_up(self, work: Awaitable[_T], may_cancel: Callable[[], bool]) -> _T:
        """Await ``work`` while watching the connection.  If the client
        half-closes or disconnects while ``may_cancel()`` holds, ``work`` is
        cancelled and ``ApiError(cancelled)`` is raised; once ``may_cancel()``
        is false ``work`` runs to its end and its reply is sent as usual
        (the client can still read it after a half-close).  A request the
        client pipelines meanwhile ends the watch and is served next."""
        current = asyncio.current_task()
        if self._read_ahead is None or current is None:
            return await work
        ahead = self._read_ahead()
        done = cancelled = False

        def on_next(next_read: asyncio.Future[_ReadOutcome]) -> None:
            # Runs while ``work`` is suspended; cancelling there reaches it.
            nonlocal cancelled
            if done or next_read.cancelled() or next_read.exception() is not None:
                return
            outcome = next_read.result()
            if outcome is None or isinstance(outcome, (ConnectionError, ApiProtocolError)):
                self.hung_up = True
                if may_cancel():
                    cancelled = True
                    current.cancel()

        ahead.add_done_callback(on_next)
        try:
            return await work
        except asyncio.CancelledError:
            if cancelled and current.uncancel() == 0:
                raise ApiError(ErrorCode.CANCELLED,
                               f"`{self.op}` cancelled: the client hung up") from None
            raise
        finally:
            done = True
            ahead.remove_done_callback(on_next)

    async def wait_client_eof(self) -> None:
        """Wait until the client half-closes or disconnects (for ops that
        last as long as the connection); bytes it sends meanwhile are ignored."""
        while True:
            try:
                data = await self._reader.read(65536)
            except ConnectionError:
                return
            if not data:
                return

    def arg(self, name: str) -> Any:
        """An argument of the op's schema (overlay/daemon/schema.py), already
        checked by the server before the op ran, or its default."""
        return value_of(self.op, name, self.args)

    # Argument accessors raise BadRequest naming the field, so every op
    # reports bad input the same way.

    def str_arg(self, name: str, default: str | None | _Missing = _MISSING) -> str | None:
        value = self.args.get(name, default)
        if isinstance(value, _Missing):
            raise BadRequest(f"`{self.op}` needs the string field `{name}`")
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"`{name}` must be a string")
        return value

    def required_str(self, name: str) -> str:
        value = self.str_arg(name)
        if value is None:
            raise BadRequest(f"`{self.op}` needs the string field `{name}`")
        return value

    def int_arg(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.args.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"`{name}` must be an integer")
        if not minimum <= value <= maximum:
            raise BadRequest(f"`{name}` must be between {minimum} and {maximum}")
        return value

    def str_list_arg(self, name: str, max_items: int = 64) -> list[str]:
        value = self.args.get(name)
        if isinstance(value, str):
            value = [value]
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, str) and v for v in value)):
            raise BadRequest(f"`{name}` must be a non-empty list of strings")
        if len(value) > max_items:
            raise BadRequest(f"`{name}` has more than {max_items} entries")
        return list(value)


class _Client:
    """One connection's state as the limits see it."""

    __slots__ = ("writer", "idle_since", "task", "used")

    def __init__(self, writer: asyncio.StreamWriter, now: float) -> None:
        self.writer = writer
        self.used = False
        """It sent a request at least once."""
        self.idle_since: float | None = now
        """When it last finished a request (None while one runs)."""
        self.task: asyncio.Task[None] | None = None


class ApiServer:
    """Serves the stream API on a Unix socket created with mode 0600.

    ``async with ApiServer(path) as server:`` binds (refusing if another
    daemon answers there, removing a stale socket file otherwise), serves,
    and on exit closes every client connection and removes the socket.
    """

    def __init__(self, path: Path, config: ApiServerConfig | None = None) -> None:
        self._path = Path(path)
        self._config = config or ApiServerConfig()
        self._ops: dict[str, OpHandler] = {}
        self._sup: Supervisor | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False
        self._inode: tuple[int, int] | None = None
        self._state: dict[asyncio.Task[None], _Client] = {}
        self.limit_hits = LimitHits()
        """Clients refused or closed by a limit, by cause (``api.*``)."""
        self.clients_changed = asyncio.Event()
        """Set whenever a client is accepted or gone (``client_count`` changed)."""

    @property
    def path(self) -> Path:
        return self._path

    @property
    def ops(self) -> list[str]:
        return sorted(self._ops)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def register(self, op: str, handler: OpHandler) -> None:
        """Add an op to the dispatch table (``dht_get``, ``name_resolve`` …)."""
        if op in self._ops:
            raise ValueError(f"op {op!r} is already registered")
        self._ops[op] = handler

    async def __aenter__(self) -> ApiServer:
        encoded = os.fsencode(self._path)
        if len(encoded) > MAX_SOCKET_PATH_BYTES:
            raise DaemonError(
                f"API socket path {self._path} is {len(encoded)} bytes, over the "
                f"system limit of {MAX_SOCKET_PATH_BYTES}; use a shorter --home "
                "or set api_socket in config.toml"
            )
        await _claim_socket_path(self._path)
        sock = _bind_private_unix_socket(self._path)
        st = os.stat(self._path)
        self._inode = (st.st_dev, st.st_ino)
        sup = Supervisor("API", log)
        await sup.__aenter__()
        self._sup = sup
        try:
            self._server = await asyncio.start_unix_server(self._on_client, sock=sock)
        except BaseException:
            sock.close()
            await self._shutdown()
            raise
        log.debug("API listening on %s", self._path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def close(self) -> None:
        """Stop serving: no new clients, running requests cancelled, socket
        removed.  Idempotent; leaving the ``async with`` block also does it."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._sup is not None:
            sup, self._sup = self._sup, None
            await sup.aclose()
        # A task cancelled before its first step never ran its cleanup.
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._inode is not None:
            self._remove_socket_file()
            self._inode = None

    def _remove_socket_file(self) -> None:
        # Only our own socket: a successor daemon may already have replaced it.
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    def _hit(self, cause: str) -> None:
        reported = self.limit_hits.hit(cause, time.monotonic())
        if reported:
            log.warning("API clients limited (%s): %d since the last report", cause, reported)

    def _evict_idle(self, now: float) -> bool:
        """Close the connection idle the longest to make room (one that
        never asked anything first); False if none has been idle long enough."""
        config = self._config

        def evictable(c: _Client) -> bool:
            wait = config.min_idle_to_evict if c.used else config.min_idle_unused
            return c.idle_since is not None and c.task is not None and now - c.idle_since >= wait

        idle = [c for c in self._state.values() if evictable(c)]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (c.used, c.idle_since or 0.0))
        self._hit("api.evicted_idle")
        victim.idle_since = None
        victim.writer.transport.abort()
        if victim.task is not None:
            victim.task.cancel()
        return True

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sup = self._sup
        if self._closing or sup is None:
            writer.transport.abort()
            return
        now = time.monotonic()
        if len(self._clients) >= self._config.max_connections and not self._evict_idle(now):
            self._hit("api.connections")
            writer.transport.abort()
            return
        self._writers.add(writer)
        client = _Client(writer, now)
        # A failing client is logged by the supervisor and costs only itself.
        task = sup.spawn(partial(self._serve_client, reader, writer, client), "API client")
        client.task = task
        self._clients.add(task)
        self._state[task] = client
        task.add_done_callback(self._forget_client)
        self.clients_changed.set()

    def _forget_client(self, task: asyncio.Task[None]) -> None:
        self._clients.discard(task)
        self._state.pop(task, None)
        self.clients_changed.set()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            client: _Client) -> None:
        try:
            await self._message_loop(reader, writer, client)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _message_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            client: _Client) -> None:
        limit = self._config.max_message_size
        sup = self._sup
        if sup is None:
            return  # shutting down
        messages = _MessageReader(reader, limit, sup)
        try:
            await self._serve_messages(messages, reader, writer, limit, client)
        finally:
            messages.close()

    async def _next_message(self, messages: _MessageReader, client: _Client) -> dict[str, Any] | None:
        client.idle_since = time.monotonic()
        try:
            async with asyncio.timeout(self._config.idle_timeout):
                message = await messages.next()
        except TimeoutError:
            self._hit("api.idle_timeout")
            return None
        client.idle_since = None
        client.used = True
        return message

    async def _serve_messages(self, messages: _MessageReader, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, limit: int, client: _Client) -> None:
        while True:
            try:
                message = await self._next_message(messages, client)
            except MessageTooLarge as exc:
                await write_message(writer, error_reply(None, ErrorCode.MESSAGE_TOO_LARGE, str(exc)), limit)
                return
            except MalformedMessage as exc:
                # The framing is intact, so the next message can still be read.
                await write_message(writer, error_reply(None, ErrorCode.MALFORMED_MESSAGE, str(exc)), limit)
                continue
            if message is None:
                return
            try:
                request = parse_request(message)
            except BadRequest as exc:
                await write_message(writer, error_reply(request_id_of(message), exc.code, exc.message), limit)
                continue
            handler = self._ops.get(request.op)
            if handler is None:
                await write_message(writer, error_reply(
                    request.id, ErrorCode.UNKNOWN_OP,
                    f"unknown op {request.op!r}; known ops: {', '.join(self.ops)}"), limit)
                continue
            try:
                validate(request.op, request.args)
            except OverlayError as exc:
                # Checked once here, from the op's schema, before its handler runs.
                await write_message(writer, error_reply(request.id, error_code_for(exc), str(exc)),
                                    limit)
                continue
            call = ApiCall(request.id, request.op, request.args, reader, writer, limit,
                           messages.read_ahead)
            reply = await self._run_op(handler, call)
            if call.taken_over:
                return
            await self._send_reply(writer, call, reply, limit)

    async def _run_op(self, handler: OpHandler, call: ApiCall) -> dict[str, Any]:
        fields = await outcome_of(handler(call))
        if isinstance(fields, OverlayError | TimeoutError):
            code = error_code_for(fields)
            message = str(fields) or type(fields).__name__
            if code == ErrorCode.TIMEOUT and message == "TimeoutError":
                message = f"`{call.op}` timed out"
            log.debug("op %s failed: %s: %s", call.op, code, message)
            return error_reply(call.request_id, code, message)
        if isinstance(fields, Exception):
            # A bug: the client gets an answer it can act on, the log the traceback.
            log.error("op %s failed with an unexpected error", call.op, exc_info=fields)
            if call.taken_over:
                raise fields  # the connection carries raw bytes now: it must go
            return error_reply(call.request_id, ErrorCode.INTERNAL,
                               f"internal error in `{call.op}` ({type(fields).__name__}); "
                               f"the daemon's log has the details")
        return ok_reply(call.request_id, fields)

    async def _send_reply(self, writer: asyncio.StreamWriter, call: ApiCall,
                          reply: dict[str, Any], limit: int) -> None:
        try:
            await write_message(writer, reply, limit)
        except MessageTooLarge as exc:
            await write_message(writer, error_reply(
                call.request_id, ErrorCode.MESSAGE_TOO_LARGE, f"reply too large: {exc}"), limit)


class _MessageReader:
    """A client's messages, one after another.  An op that watches for the
    client hanging up (``ApiCall.unless_hung_up``) starts the read of the
    next message early, as a job of the server's supervisor that delivers
    its outcome to a future; ``next`` then takes that outcome instead of
    starting another read."""

    def __init__(self, reader: asyncio.StreamReader, limit: int, sup: Supervisor) -> None:
        self._reader = reader
        self._limit = limit
        self._sup = sup
        self._ahead: asyncio.Future[_ReadOutcome] | None = None

    def read_ahead(self) -> asyncio.Future[_ReadOutcome]:
        if self._ahead is None:
            ahead: asyncio.Future[_ReadOutcome] = asyncio.get_running_loop().create_future()
            job = self._sup.spawn(partial(self._read_into, ahead), "API read-ahead")
            # Each cancels the other: the read cancelled (even before its
            # first step) cancels the future; the future cancelled (its
            # reader cancelled, or ``close``) cancels the read.
            job.add_done_callback(lambda _job: ahead.cancel())
            ahead.add_done_callback(lambda fut: job.cancel() if fut.cancelled() else None)
            self._ahead = ahead
        return self._ahead

    async def next(self) -> dict[str, Any] | None:
        ahead, self._ahead = self._ahead, None
        outcome = await (ahead if ahead is not None else self._read())
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()

    async def _read_into(self, ahead: asyncio.Future[_ReadOutcome]) -> None:
        try:
            outcome = await self._read()
        except BaseException as exc:  # a bug: the reader of the future gets it too
            if not isinstance(exc, asyncio.CancelledError) and not ahead.done():
                ahead.set_exception(exc)
            raise
        if not ahead.done():
            ahead.set_result(outcome)

    async def _read(self) -> _ReadOutcome:
        # Expected failures are values, handed to whoever reads next.
        try:
            return await read_message(self._reader, self._limit)
        except (OverlayError, OSError) as exc:
            return exc


def _bind_private_unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes bind() create the file 0600, so there is no window in
    # which another user could connect; nothing else runs during this call.
    old_umask = os.umask(0o177)
    try:
        sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise DaemonError(f"cannot create the API socket {path}: {exc.strerror}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.setblocking(False)
    return sock


async def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket; refuse if a daemon answers or it is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} exists and is not a socket; move it away or set api_socket")
    try:
        async with asyncio.timeout(2.0):
            _, writer = await asyncio.open_unix_connection(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale API socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except TimeoutError as exc:
        # A full accept backlog still means someone is serving there.
        raise DaemonAlreadyRunning(path) from exc
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise DaemonAlreadyRunning(path)
