"""`overlay serve` as a real CLI process on one in-process daemon, reached
from a second daemon's `stream_open` over loopback QUIC: a command per
stream (`-- cat`) and a TCP target (`--to`), bytes exact both ways, EOF
crossing in each direction, and the protocol gone once serve exits."""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from overlay.cli.admin import wait_for_exit
from overlay.cli.serve import parse_tcp_target
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.daemon.node import Daemon

from tests.daemon.helpers import REPO, running_daemon

PROTOCOL = "/test/serve/1.0.0"


@asynccontextmanager
async def serve_process(home: Path, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`overlay serve` running until its "serving" line; SIGTERM on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "overlay.cli", "--home", str(home), "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        assert line.startswith(b"serving " + PROTOCOL.encode()), line
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def exchange(opener: Daemon, server: Daemon, payload: bytes) -> bytes:
    """Open a stream from ``opener``, send ``payload`` while reading, half-close."""
    client = await ApiClient.connect(opener.api_path)
    reply, reader, writer = await client.stream_open([PROTOCOL], addr=server.full_addrs()[0])
    assert reply["protocol"] == PROTOCOL

    async def send() -> None:
        view = memoryview(payload)
        for start in range(0, len(view), 100_000):
            writer.write(view[start:start + 100_000])
            await writer.drain()
        writer.write_eof()

    async with asyncio.TaskGroup() as group:
        group.create_task(send())
        received = group.create_task(reader.read())  # until the far side's EOF
    writer.close()
    return received.result()


async def test_serve_command_per_stream_echoes_exact_bytes(short_tmp: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # far beyond every window and pipe buffer
    async with asyncio.timeout(60), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        async with serve_process(a.home.root, PROTOCOL, "--", "cat") as proc:
            assert await exchange(b, a, payload) == payload
            assert await exchange(b, a, b"second stream") == b"second stream"
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        # The registration ended with the serve process.
        client = await ApiClient.connect(b.api_path)
        with pytest.raises(ApiError) as refused:
            await client.stream_open([PROTOCOL], addr=a.full_addrs()[0])
        assert refused.value.code == "protocol_not_supported"
        await client.aclose()


async def test_serve_command_output_ends_with_eof_without_reading(short_tmp: Path) -> None:
    """A command that answers and exits: the opener gets its output and EOF
    even while its own side is still open."""
    async with asyncio.timeout(60), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        async with serve_process(a.home.root, PROTOCOL, "--", "sh", "-c",
                                 'printf "hello %s" "$OVERLAY_PEER_ID"'):
            client = await ApiClient.connect(b.api_path)
            _, reader, writer = await client.stream_open([PROTOCOL], addr=a.full_addrs()[0])
            assert await reader.read() == f"hello {b.peer_id}".encode()
            writer.close()


async def test_serve_to_tcp_target_exact_bytes_and_half_close(short_tmp: Path) -> None:
    got_eof = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        got_eof.set()  # the opener's half-close reached the TCP service
        writer.write(b"<bye>")
        writer.write_eof()
        writer.close()

    payload = os.urandom(2 * 1024 * 1024)
    async with asyncio.timeout(60), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        tcp = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        async with tcp, serve_process(a.home.root, PROTOCOL, "--to", f"127.0.0.1:{port}"):
            assert await exchange(b, a, payload) == payload + b"<bye>"
            assert got_eof.is_set()


def test_tcp_targets_parse_or_name_the_problem() -> None:
    assert parse_tcp_target("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_tcp_target("[::1]:8080") == ("::1", 8080)
    assert parse_tcp_target("localhost:1") == ("localhost", 1)
    for bad in ("127.0.0.1", ":80", "::1:80", "host:0", "host:70000", "host:http"):
        with pytest.raises(ValueError):
            parse_tcp_target(bad)


async def test_opener_vanishing_ends_the_command_and_serve_goes_on(short_tmp: Path) -> None:
    pid_file = short_tmp / "cat.pid"
    async with asyncio.timeout(60), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        async with serve_process(a.home.root, PROTOCOL, "--", "sh", "-c",
                                 f'echo $$ > {pid_file}; exec cat'):
            client = await ApiClient.connect(b.api_path)
            _, reader, writer = await client.stream_open([PROTOCOL], addr=a.full_addrs()[0])
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"  # the command runs
            writer.transport.abort()  # the opener vanishes mid-stream
            await wait_for_exit(int(pid_file.read_text()), timeout=30)
            assert await exchange(b, a, b"still serving") == b"still serving"
