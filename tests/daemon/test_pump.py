"""The byte pump between an API socket and a libp2p stream, over an
in-memory stream and a real Unix socket pair."""

import asyncio
import socket

import pytest

from overlay.daemon.pump import PumpOutcome, pump_stream
from overlay.errors import StreamReset
from overlay.wire.memory import memory_stream_pair


async def socket_pair() -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter],
                                 tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return (await asyncio.open_unix_connection(sock=left),
            await asyncio.open_unix_connection(sock=right))


async def test_relays_both_directions_and_propagates_half_close() -> None:
    async with asyncio.timeout(10):
        (client_r, client_w), (daemon_r, daemon_w) = await socket_pair()
        local, remote = memory_stream_pair(limit=4096)
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(pump_stream(daemon_r, daemon_w, local))
            payload = bytes(range(256)) * 1000  # far beyond both buffers
            client_w.write(payload)
            client_w.write_eof()
            got = bytearray()
            while chunk := await remote.read():
                got += chunk
            assert bytes(got) == payload  # EOF arrived after all bytes
            remote.write(b"answer")
            await remote.drain()
            remote.write_eof()
            assert await client_r.read() == b"answer"
        assert pump.result() == PumpOutcome(len(payload), 6)
        client_w.close()
        daemon_w.close()


async def test_remote_reset_aborts_the_socket() -> None:
    async with asyncio.timeout(10):
        (client_r, client_w), (daemon_r, daemon_w) = await socket_pair()
        local, remote = memory_stream_pair()
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(pump_stream(daemon_r, daemon_w, local))
            client_w.write(b"x")
            assert await remote.readexactly(1) == b"x"
            remote.reset()
            try:
                rest = await client_r.read()
            except ConnectionResetError:
                rest = b""
            assert rest == b""
        assert pump.result().failure is not None
        client_w.close()
        daemon_w.close()


async def test_client_disconnect_resets_the_stream() -> None:
    """A client that vanishes (not a half-close) resets the libp2p stream:
    the remote's next writes fail with StreamReset.  A client that only
    half-closed would keep the stream writable, so this fails on plain EOF."""
    async with asyncio.timeout(10):
        (client_r, client_w), (daemon_r, daemon_w) = await socket_pair()
        local, remote = memory_stream_pair(limit=4096)
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(pump_stream(daemon_r, daemon_w, local))
            remote.write(b"data for a client that leaves")
            await remote.drain()
            client_w.transport.abort()
            with pytest.raises(StreamReset):
                while True:  # bounded by the timeout: a pump that never resets fails here
                    remote.write(b"more data" * 100)
                    await remote.drain()
        assert pump.result().failure is not None
        daemon_w.close()


async def test_client_half_close_keeps_the_stream_writable() -> None:
    """The counterpart: after a half-close the remote still answers in full."""
    async with asyncio.timeout(10):
        (client_r, client_w), (daemon_r, daemon_w) = await socket_pair()
        local, remote = memory_stream_pair(limit=4096)
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(pump_stream(daemon_r, daemon_w, local))
            client_w.write_eof()
            assert await remote.read() == b""
            answer = b"y" * 100_000
            remote.write(answer)
            await remote.drain()
            remote.write_eof()
            assert await client_r.read() == answer
        assert pump.result() == PumpOutcome(0, len(answer))
        client_w.close()
        daemon_w.close()
