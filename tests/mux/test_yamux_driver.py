"""The asyncio yamux driver: backpressure, many streams, violations, close."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from overlay.mux import GoingAway, SessionClosed, YamuxConfig, YamuxSession, YamuxStream
from overlay.mux.yamux_frames import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    Flag,
    FrameType,
    GoAwayCode,
    UnknownVersion,
    decode_header,
    encode_header,
)
from overlay.mux.yamux_events import KeepaliveTimeout, WindowExceeded
from overlay.wire.memory import MemoryStream, memory_stream_pair
from overlay.wire.stream import ByteStream, GatedStream

from .tcp import tcp_pair

KiB = 1024


@asynccontextmanager
async def session_pair(
    transport: str = "memory",
    client_config: YamuxConfig | None = None,
    server_config: YamuxConfig | None = None,
) -> AsyncIterator[tuple[YamuxSession, YamuxSession]]:
    async with AsyncExitStack() as stack:
        left: ByteStream
        right: ByteStream
        if transport == "memory":
            left, right = memory_stream_pair()
        else:
            left, right = await stack.enter_async_context(tcp_pair())
        client = await stack.enter_async_context(YamuxSession(left, True, client_config))
        server = await stack.enter_async_context(YamuxSession(right, False, server_config))
        yield client, server


async def read_all(stream: ByteStream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate()`` holds (bounded by the caller's
    timeout): a state the driver's tasks reach by themselves, with no event
    of its own to wait on."""
    while not predicate():
        await asyncio.sleep(0)


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_stalled_reader_bounds_the_sender_by_the_window(transport: str) -> None:
    config = YamuxConfig(send_buffer_limit=64 * KiB)
    chunk = 16 * KiB
    payload = os.urandom(4 << 20)
    async with asyncio.timeout(30), session_pair(transport, config, config) as (client, server):
        sender = await client.open_stream()
        sender.write(b"!")
        receiver = await server.accept_stream()
        assert await receiver.readexactly(1) == b"!"
        written = 0
        blocked = asyncio.Event()
        max_queued = 0

        async def send() -> None:
            nonlocal written, max_queued
            for i in range(0, len(payload), chunk):
                sender.write(payload[i : i + chunk])
                written += chunk
                queued = client._core.send_buffered(sender.stream_id)
                max_queued = max(max_queued, queued)
                if queued > config.send_buffer_limit:
                    blocked.set()
                await sender.drain()
            await sender.close()

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(send())
            await blocked.wait()
            await until(lambda: receiver.buffered == INITIAL_WINDOW - 1)
            # The reader is stalled: the sender is held at the window plus
            # its own send-buffer bound, whatever the payload size.
            for _ in range(20):
                await asyncio.sleep(0)
            assert not task.done()
            assert receiver.buffered == INITIAL_WINDOW - 1  # never more than the window
            assert written <= INITIAL_WINDOW + config.send_buffer_limit + chunk
            assert client._core.send_window(sender.stream_id) == 0
            got = await read_all(receiver)
        assert got == payload
        assert max_queued <= config.send_buffer_limit + chunk


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_hundred_concurrent_streams_exact_bytes(transport: str) -> None:
    async with asyncio.timeout(60), session_pair(transport) as (client, server):

        async def echo_server() -> None:
            async with asyncio.TaskGroup() as tg:
                for _ in range(100):
                    stream = await server.accept_stream()
                    tg.create_task(echo(stream))

        async def echo(stream: YamuxStream) -> None:
            data = await read_all(stream)
            for i in range(0, len(data), 40_000):
                stream.write(data[i : i + 40_000][::-1])
                await stream.drain()
            await stream.close()

        async def one(i: int) -> None:
            data = os.urandom(20_000 + 997 * i)
            stream = await client.open_stream()
            expected = b"".join(
                data[j : j + 40_000][::-1] for j in range(0, len(data), 40_000)
            )
            async with asyncio.TaskGroup() as tg:
                reply = tg.create_task(read_all(stream))
                for j in range(0, len(data), 30_000):
                    stream.write(data[j : j + 30_000])
                    await stream.drain()
                await stream.close()
            assert reply.result() == expected

        async with asyncio.TaskGroup() as tg:
            tg.create_task(echo_server())
            for i in range(100):
                tg.create_task(one(i))
        assert len({s for s in client._core.open_streams()}) == 0


@asynccontextmanager
async def raw_peer() -> AsyncIterator[tuple[YamuxSession, MemoryStream]]:
    """Our client session against a hand-driven remote end."""
    left, raw = memory_stream_pair()
    async with YamuxSession(left, is_client=True) as session:
        yield session, raw


async def read_frame(raw: MemoryStream) -> tuple[FrameType, Flag, int, int, bytes]:
    header = decode_header(await raw.readexactly(HEADER_SIZE))
    payload = await raw.readexactly(header.payload_length)
    return header.type, header.flags, header.stream_id, header.length, payload


async def test_protocol_violation_ends_the_session_only() -> None:
    async with asyncio.timeout(10), raw_peer() as (session, raw):
        stream = await session.open_stream()
        assert (await read_frame(raw))[:3] == (FrameType.WINDOW_UPDATE, Flag.SYN, 1)
        raw.write(b"\x07" + bytes(11))  # an unknown version
        assert (await read_frame(raw))[:4] == (
            FrameType.GO_AWAY,
            Flag.NONE,
            0,
            GoAwayCode.PROTOCOL_ERROR,
        )
        assert await raw.read() == b""  # and the connection is half-closed
        assert isinstance(session.error, UnknownVersion)
        with pytest.raises(SessionClosed):
            await stream.read()
        with pytest.raises(SessionClosed):
            stream.write(b"x")
        with pytest.raises(SessionClosed):
            await session.accept_stream()
        with pytest.raises(SessionClosed):
            await session.open_stream()
    assert session.is_closed


async def test_peer_exceeding_the_window_gets_go_away() -> None:
    async with asyncio.timeout(10), raw_peer() as (session, raw):
        raw.write(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        stream = await session.accept_stream()
        raw.write(encode_header(FrameType.DATA, Flag.NONE, 2, INITIAL_WINDOW + 1))
        frames = [await read_frame(raw), await read_frame(raw)]
        assert frames[0][:3] == (FrameType.WINDOW_UPDATE, Flag.ACK, 2)
        assert frames[1][:4] == (FrameType.GO_AWAY, Flag.NONE, 0, GoAwayCode.PROTOCOL_ERROR)
        assert isinstance(session.error, WindowExceeded)
        with pytest.raises(SessionClosed):
            await stream.read()


async def test_ping_answers_and_rtt() -> None:
    async with asyncio.timeout(10), session_pair() as (client, server):
        rtt = await client.ping()
        assert 0 <= rtt < 5
        assert await server.ping() >= 0
    async with asyncio.timeout(10), raw_peer() as (session, raw):
        raw.write(encode_header(FrameType.PING, Flag.SYN, 0, 0xDEADBEEF))
        assert await read_frame(raw) == (FrameType.PING, Flag.ACK, 0, 0xDEADBEEF, b"")


async def test_close_sends_go_away_and_flushes_queued_data() -> None:
    async with asyncio.timeout(10), session_pair() as (client, server):
        stream = await client.open_stream()
        stream.write(b"last words")
        await stream.close()
        await client.aclose()
        assert client.is_closed
        accepted = await server.accept_stream()
        assert await read_all(accepted) == b"last words"
        with pytest.raises((GoingAway, SessionClosed)):
            await server.accept_stream()
        assert server.remote_go_away == GoAwayCode.NORMAL


async def test_open_waits_for_the_ack_backlog() -> None:
    config = YamuxConfig(max_ack_backlog=2)
    async with asyncio.timeout(10), session_pair(client_config=config) as (client, server):
        await client.open_stream()
        await client.open_stream()
        async with asyncio.TaskGroup() as tg:
            third = tg.create_task(client.open_stream())
            for _ in range(20):
                await asyncio.sleep(0)
            assert not third.done()  # two of ours are unacknowledged
            await server.accept_stream()  # its ACK frees one slot
        assert third.result().stream_id == 5


async def test_connection_loss_fails_streams_with_session_closed() -> None:
    left, right = memory_stream_pair()
    async with asyncio.timeout(10), YamuxSession(left, True) as client:
        async with YamuxSession(right, False) as server:
            stream = await client.open_stream()
            stream.write(b"x")
            accepted = await server.accept_stream()
            assert await accepted.readexactly(1) == b"x"
            right.reset()
            with pytest.raises(SessionClosed):
                await stream.read()
            with pytest.raises(SessionClosed):
                await accepted.read()


async def test_close_gives_up_on_window_blocked_data_after_close_timeout() -> None:
    config = YamuxConfig(close_timeout=0.2)
    async with asyncio.timeout(10), session_pair(client_config=config) as (client, server):
        stream = await client.open_stream()
        stream.write(bytes(INITIAL_WINDOW + 1000))  # the server never reads it
        accepted = await server.accept_stream()
        await until(lambda: accepted.buffered == INITIAL_WINDOW)
        await client.aclose()  # returns although 1000 bytes could never leave
        assert client.is_closed
        with pytest.raises(SessionClosed):
            stream.write(b"x")
        await until(lambda: server.remote_go_away is not None or server.is_closed)


async def test_a_peer_that_never_reads_cannot_grow_our_ping_answers() -> None:
    pings = 50_000
    flood = b"".join(encode_header(FrameType.PING, Flag.SYN, 0, i) for i in range(pings))
    async with asyncio.timeout(20), raw_peer() as (session, raw):
        config = session.config

        async def send_flood() -> None:
            for i in range(0, len(flood), 60_000):
                raw.write(flood[i : i + 60_000])
                await raw.drain()

        async with asyncio.TaskGroup() as tg:
            flooding = tg.create_task(send_flood())
            await until(lambda: session._core.control_backlog > config.max_control_backlog)
            for _ in range(50):
                await asyncio.sleep(0)
            # The reader stopped: answers queue up to the bound plus one read.
            assert session._core.control_backlog <= config.max_control_backlog + 65536
            assert not flooding.done()
            answers = 0
            while answers < pings:
                kind, flags, _, value, _ = await read_frame(raw)
                assert (kind, flags, value) == (FrameType.PING, Flag.ACK, answers)
                answers += 1
        assert not session.is_closed


async def test_keepalive_detects_a_silent_peer() -> None:
    config = YamuxConfig(keepalive_interval=0.05, ping_timeout=0.1)
    left, raw = memory_stream_pair()
    async with asyncio.timeout(10), YamuxSession(left, True, config) as session:
        stream = await session.open_stream()
        assert (await read_frame(raw))[:2] == (FrameType.WINDOW_UPDATE, Flag.SYN)
        kind, flags, _, _, _ = await read_frame(raw)  # the keep-alive; never answered
        assert (kind, flags) == (FrameType.PING, Flag.SYN)
        with pytest.raises(KeepaliveTimeout):
            await stream.read()
        assert isinstance(session.error, KeepaliveTimeout)


async def test_keepalive_is_answered_between_live_sessions() -> None:
    config = YamuxConfig(keepalive_interval=0.02, ping_timeout=5.0)
    async with asyncio.timeout(10), session_pair("memory", config, config) as (client, server):
        await until(lambda: client._core.last_rtt is not None and server._core.last_rtt is not None)
        assert not client.is_closed and not server.is_closed


async def test_user_ping_times_out() -> None:
    config = YamuxConfig(keepalive_interval=None, ping_timeout=0.05)
    left, _raw = memory_stream_pair()
    async with asyncio.timeout(10), YamuxSession(left, True, config) as session:
        with pytest.raises(TimeoutError):
            await session.ping()
        assert not session.is_closed


@pytest.mark.parametrize("seed", range(20))
async def test_garbage_from_the_peer_never_escapes_the_session(seed: int) -> None:
    rng = random.Random(seed)
    frames = [encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0)]
    for _ in range(rng.randrange(1, 30)):
        kind = rng.randrange(5)
        if kind < 4:
            length = rng.randrange(0, 300) if kind == 0 else rng.getrandbits(32)
            frame = encode_header(FrameType(kind), Flag(rng.randrange(16)), rng.randrange(6), length)
            frames.append(frame + (rng.randbytes(length) if kind == 0 else b""))
        else:
            frames.append(rng.randbytes(rng.randrange(1, 40)))
    async with asyncio.timeout(10), raw_peer() as (session, raw):
        raw.write(b"".join(frames))
        raw.write_eof()
        with pytest.raises((SessionClosed, GoingAway)):
            while True:
                stream = await session.accept_stream()
                stream.reset()
        assert session.is_closed or session.remote_go_away is not None


async def test_wait_closed_returns_when_the_peer_closes_and_not_before() -> None:
    async with asyncio.timeout(10), session_pair() as (client, server):
        waiter = asyncio.ensure_future(server.wait_closed())
        await client.ping()  # both sessions have run a round trip
        assert not waiter.done()
        client.close()
        await waiter
        assert server.is_closed


class _BreaksOnNextRead(GatedStream):
    """A stream whose reads fail with a bug once ``broken`` is set."""

    broken = False

    async def _before_read(self) -> None:
        if self.broken:
            raise RuntimeError("a bug under the session")


async def test_a_bug_in_the_reader_ends_the_session_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    left, right = memory_stream_pair()
    buggy = _BreaksOnNextRead(left)
    async with asyncio.timeout(10), YamuxSession(buggy, True) as client:
        async with YamuxSession(right, False) as server:
            stream = await client.open_stream()
            stream.write(b"x")
            accepted = await server.accept_stream()
            assert await accepted.readexactly(1) == b"x"
            buggy.broken = True
            accepted.write(b"y")  # the client's reader takes it, then its next read fails
            assert await stream.readexactly(1) == b"y"  # what arrived is still read
            with pytest.raises(SessionClosed, match="yamux session closed"):
                await stream.read()
            await client.wait_closed()
            assert client.is_closed and client.error is None
            await server.wait_closed()  # the client half-closed its transport
    bugs = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(bugs) == 1 and "yamux reader" in bugs[0].getMessage()
    assert bugs[0].exc_info is not None and bugs[0].exc_info[0] is RuntimeError


async def test_an_error_in_the_block_ends_the_session_at_once() -> None:
    left, right = memory_stream_pair()
    async with asyncio.timeout(10), YamuxSession(right, False) as server:
        with pytest.raises(ValueError):
            async with YamuxSession(left, True) as client:
                stream = await client.open_stream()
                stream.write(b"x")
                assert await (await server.accept_stream()).readexactly(1) == b"x"
                raise ValueError("the owner failed")
        assert client.is_closed
        with pytest.raises(SessionClosed):
            await stream.read()
        await server.wait_closed()
        assert server.remote_go_away is None  # no graceful close: no Go Away


async def test_a_session_left_before_its_tasks_ran_still_ends() -> None:
    left, right = memory_stream_pair()
    async with asyncio.timeout(10), YamuxSession(right, False) as server:
        with pytest.raises(ValueError):
            async with YamuxSession(left, True) as client:
                raise ValueError("at once")
        assert client.is_closed
        await client.wait_closed()
        await server.wait_closed()  # the client half-closed its transport
