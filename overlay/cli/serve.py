"""`overlay serve PROTOCOL --to HOST:PORT` and `overlay serve PROTOCOL --
COMMAND [ARGS…]`: serve a libp2p protocol from the command line, as
inetd or socat do for TCP.

The command registers PROTOCOL with the daemon (``stream_handler_register``
on a connection kept open for as long as it runs: when it exits, the
registration ends).  For each ``stream`` event it opens one more API
connection, takes the stream with ``stream_accept`` and either connects it
to the TCP target or starts COMMAND with its stdin and stdout wired to the
stream (stderr stays the terminal's; ``OVERLAY_PEER_ID`` and
``OVERLAY_PROTOCOL`` tell it who called).  Bytes are pumped a chunk at a
time with ``drain()`` between chunks, so a fast side waits for a slow one
and no stream is held in memory; EOF crosses in each direction on its own
(half-close).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    CliError,
    CliParser,
    Parents,
    UsageError,
    add_command,
    api_socket,
)
from overlay.cli.core import bounded_int
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError, DaemonError
from overlay.daemon.home import Home
from overlay.daemon.schema import cli_type
from overlay.errors import OverlayError

__all__ = ["add_serve_parser", "pump", "parse_tcp_target"]

log = logging.getLogger(__name__)

CHUNK = 65536
"""Bytes moved per read; drain() after each write bounds what is buffered."""


def parse_tcp_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT``; ``ValueError`` names the problem."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:8080")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be 1 to 65535")
    return host, int(port_text)


def _tcp_target_arg(text: str) -> tuple[str, int]:
    try:
        return parse_tcp_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_protocol_arg = cli_type("stream_handler_register", "protocol")


class _IntermixedParser(CliParser):
    """Lets options come after PROTOCOL and before `--` (`serve /p --json --
    cat`): plain argparse has already matched the empty COMMAND list by then
    and calls the rest unrecognized."""

    _nested = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._nested:  # the intermixed parse calls back in, twice
            return super().parse_known_args(args, namespace)
        self._nested = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._nested = False


def add_serve_parser(sub: Any, parents: Parents) -> None:
    p = add_command(sub, "serve", parents=parents.pick(), run=_cmd_serve,
                    help="serve a protocol: each inbound stream to a TCP port or a command",
                    description="Register PROTOCOL with the daemon and hand each inbound "
                                "stream to a TCP service (--to HOST:PORT) or to a new "
                                "COMMAND process whose stdin/stdout are the stream (like "
                                "inetd).  Runs until interrupted; the protocol is "
                                "unregistered when it exits.",
                    examples=["overlay serve /echo/1.0.0 -- cat",
                              "overlay serve /http/1.1 --to 127.0.0.1:8080"])
    p.__class__ = _IntermixedParser
    p.add_argument("protocol", metavar="PROTOCOL", type=_protocol_arg,
                   help="the libp2p protocol ID to serve, such as /echo/1.0.0")
    p.add_argument("--to", metavar="HOST:PORT", type=_tcp_target_arg,
                   help="connect each stream to this TCP address")
    p.add_argument("--max-streams", type=bounded_int(1, 4096), default=64,
                   help="streams handled at once; more are refused (default 64)")
    # After `--` everything is the command's, even words starting with `-`.
    p.add_argument("command", metavar="-- COMMAND [ARGS...]", nargs="*",
                   help="run COMMAND per stream, its stdin and stdout wired to the stream")


@dataclass(frozen=True, slots=True)
class _Target:
    tcp: tuple[str, int] | None
    command: tuple[str, ...]

    def describe(self) -> str:
        if self.tcp is not None:
            host, port = self.tcp
            return f"tcp {f'[{host}]' if ':' in host else host}:{port}"
        return " ".join(self.command)


def _target(ns: argparse.Namespace) -> _Target:
    command = list(ns.command)
    if command and command[0] == "--":
        command = command[1:]
    if ns.to is not None and command:
        raise UsageError("give either --to HOST:PORT or -- COMMAND, not both")
    if ns.to is None and not command:
        raise UsageError("nothing to serve with: give --to HOST:PORT or -- COMMAND [ARGS...]")
    return _Target(ns.to, tuple(command))


# -- the byte pump -------------------------------------------------------------------


async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> int:
    """Copy until EOF, then half-close ``dst``; returns the bytes moved.

    ConnectionError (either side gone) propagates to the caller."""
    moved = 0
    while data := await src.read(CHUNK):
        dst.write(data)
        await dst.drain()
        moved += len(data)
    if dst.can_write_eof():
        dst.write_eof()
    else:
        dst.close()
    return moved


async def _to_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  target: tuple[str, int]) -> None:
    try:
        tcp_reader, tcp_writer = await asyncio.open_connection(*target)
    except OSError as exc:
        writer.transport.abort()  # the daemon resets the libp2p stream
        raise CliError(f"cannot connect to {target[0]}:{target[1]}: "
                       f"{exc.strerror or exc}") from None
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(pump(reader, tcp_writer))
            group.create_task(pump(tcp_reader, writer))
    except* ConnectionError:
        # One side vanished: abort both, so the peer sees a reset, not EOF.
        writer.transport.abort()
        tcp_writer.transport.abort()
    finally:
        tcp_writer.close()
        with contextlib.suppress(OSError):
            await tcp_writer.wait_closed()


async def _to_command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      command: Sequence[str], peer: str, protocol: str) -> None:
    env = {**os.environ, "OVERLAY_PEER_ID": peer, "OVERLAY_PROTOCOL": protocol}
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
    except OSError as exc:
        writer.transport.abort()
        raise CliError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def feed() -> None:
        # A failed read (the stream was reset) propagates; a failed write
        # only means the command stopped reading: what it writes still goes out.
        while data := await reader.read(CHUNK):
            try:
                stdin.write(data)
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                return
        stdin.close()  # the peer's EOF is the command's
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(feed())
            group.create_task(pump(stdout, writer))
        await proc.wait()
    except* ConnectionError:
        writer.transport.abort()  # the client side went away: the peer sees a reset
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _handle(socket_path: Path, stream_id: int, target: _Target,
                  slots: asyncio.Semaphore) -> None:
    try:
        async with await ApiClient.connect(socket_path) as client:
            reply, reader, writer = await client.stream_accept(stream_id)
            peer = str(reply.get("peer_id", ""))
            protocol = str(reply.get("protocol", ""))
            if target.tcp is not None:
                await _to_tcp(reader, writer, target.tcp)
            else:
                await _to_command(reader, writer, target.command, peer, protocol)
    except* (OverlayError, OSError) as failures:
        # One stream's failure is reported and the server goes on.
        for exc in failures.exceptions:
            print(f"overlay serve: stream {stream_id}: {exc}", file=sys.stderr, flush=True)
    finally:
        slots.release()


async def _serve(home: Home, protocol: str, target: _Target, max_streams: int,
                 as_json: bool) -> None:
    socket_path = api_socket(home)
    async with await ApiClient.connect(socket_path) as control:
        try:
            async with asyncio.TaskGroup() as group:
                await _control_loop(control, group, socket_path, protocol, target,
                                    max_streams, as_json)
        except* (OverlayError, OSError) as failures:
            # The handlers report their own failures: this is the control
            # connection's, one line for `main`.
            raise failures.exceptions[0] from None


async def _control_loop(control: ApiClient, group: asyncio.TaskGroup, socket_path: Path,
                        protocol: str, target: _Target, max_streams: int,
                        as_json: bool) -> None:
    slots = asyncio.Semaphore(max_streams)
    await control.send_request("stream_handler_register", {"protocol": protocol})
    registered = await control.next_event()
    _raise_for(registered)
    if as_json:
        print(json.dumps({"event": "serving", "protocol": protocol,
                          "to": target.describe()}), flush=True)
    else:
        print(f"serving {protocol} → {target.describe()}", flush=True)
    while True:
        message = await control.next_event()
        _raise_for(message)
        assert message is not None
        if message.get("event") != "stream":
            continue
        stream_id = message.get("stream_id")
        if not isinstance(stream_id, int):
            continue
        if slots.locked():
            # Not accepting it lets the daemon reset it after its timeout.
            print(f"overlay serve: {max_streams} streams busy; refusing stream "
                  f"{stream_id} from {message.get('peer_id')}", file=sys.stderr, flush=True)
            continue
        await slots.acquire()
        if as_json:
            print(json.dumps({"event": "stream", "stream_id": stream_id,
                              "peer_id": message.get("peer_id")}), flush=True)
        group.create_task(_handle(socket_path, stream_id, target, slots))


def _raise_for(message: dict[str, Any] | None) -> None:
    if message is None:
        raise CliError("the daemon closed the connection (stopped?)")
    error = message.get("error")
    if message.get("ok") is False and isinstance(error, dict):
        raise ApiError(str(error.get("code", "failed")), str(error.get("message", "")))


def _cmd_serve(ns: argparse.Namespace, home: Home) -> int:
    target = _target(ns)

    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            await _serve(home, ns.protocol, target, ns.max_streams, ns.json)
        except asyncio.CancelledError:
            if not stopped:
                raise
            task.uncancel()  # our own signal-driven stop: a clean exit
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return EXIT_OK

    return asyncio.run(main())
