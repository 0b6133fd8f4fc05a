"""Streams over real QUIC connections: integrity, limits, flow control,
resets, closing and timeouts."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from overlay.errors import ConnectionClosed, LocalProtocolError, StreamClosed, StreamReset
from overlay.transport import QuicStream, TransportConfig

from .conftest import HOSTS, Pair, make_pair


async def _wait_buffered(stream: QuicStream, n: int) -> None:
    """Wait until ``n`` bytes sit unread in the stream (white-box: the
    stream's wake-up event fires on every arrival)."""
    while stream.buffered < n:
        stream._readable.clear()
        await stream._readable.wait()


async def _round_trip(pair: Pair) -> None:
    stream = await pair.conn_a.open_stream()
    stream.write(b"?")
    await stream.close()
    inbound = await pair.conn_b.accept_stream()
    assert await inbound.read() == b"?"
    inbound.write(b"!")
    await inbound.close()
    assert await stream.read() == b"!"


async def _ping_from_b(pair: Pair) -> None:
    """A message from listener to dialer, leaving the listener's accept
    queue untouched (a reply could not pass a full receive window)."""
    stream = await pair.conn_b.open_stream()
    stream.write(b"?")
    await stream.close()
    inbound = await pair.conn_a.accept_stream()
    assert await inbound.read() == b"?"


async def _read_all(stream: QuicStream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


async def test_large_bidirectional_transfer_integrity(pair: Pair) -> None:
    async with asyncio.timeout(10):
        up, down = os.urandom(5 << 20), os.urandom(3 << 20)

        async def client() -> bytes:
            stream = await pair.conn_a.open_stream()
            stream.write(up)
            await stream.close()
            return await _read_all(stream)

        async def server() -> bytes:
            stream = await pair.conn_b.accept_stream()
            stream.write(down)
            await stream.close()
            return await _read_all(stream)

        got_down, got_up = await asyncio.gather(client(), server())
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
        assert got_down == down


async def test_many_concurrent_streams(pair: Pair) -> None:
    async with asyncio.timeout(10):
        count = 100

        async def echo_server() -> None:
            async with asyncio.TaskGroup() as tg:
                for _ in range(count):
                    stream = await pair.conn_b.accept_stream()

                    async def echo(s: QuicStream = stream) -> None:
                        s.write(await _read_all(s))
                        await s.close()

                    tg.create_task(echo())

        async def client(i: int) -> None:
            payload = os.urandom(1000 + 97 * i)
            stream = await pair.conn_a.open_stream()
            stream.write(payload)
            await stream.close()
            assert await _read_all(stream) == payload

        async with asyncio.TaskGroup() as tg:
            tg.create_task(echo_server())
            for i in range(count):
                tg.create_task(client(i))


async def test_inbound_stream_limit_enforced() -> None:
    async with asyncio.timeout(5):
        pair = await make_pair(config_b=TransportConfig(max_inbound_streams=2))
        try:
            first = await pair.conn_a.open_stream()
            second = await pair.conn_a.open_stream()
            for stream in (first, second):
                stream.write(b"hi")
                await stream.drain()
            third = asyncio.ensure_future(pair.conn_a.open_stream())
            inbound = [await pair.conn_b.accept_stream() for _ in range(2)]
            assert [await s.readexactly(2) for s in inbound] == [b"hi", b"hi"]
            # A round trip on an open stream: the limit still holds.
            inbound[0].write(b"yo")
            await inbound[0].drain()
            assert await first.readexactly(2) == b"yo"
            assert not third.done()
            # Finishing a stream in both directions frees a slot.
            await first.close()
            await inbound[0].close()
            assert await inbound[0].read() == b""
            assert await first.read() == b""
            stream = await third
            stream.write(b"3rd")
            await stream.close()
            late = await pair.conn_b.accept_stream()
            assert await late.read() == b"3rd"
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_peer_exceeding_stream_limit_loses_connection() -> None:
    async with asyncio.timeout(5):
        pair = await make_pair(config_b=TransportConfig(max_inbound_streams=2))
        try:
            pair.conn_a._quic._remote_max_streams_bidi = 100  # a misbehaving peer
            for _ in range(3):
                stream = await pair.conn_a.open_stream()
                stream.write(b"x")
            await pair.conn_a.wait_closed()
            assert "0x4" in str(pair.conn_a.close_reason)  # STREAM_LIMIT_ERROR
            await pair.conn_b.wait_closed()
            await _serves_again(pair)
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def _serves_again(pair: Pair) -> None:
    conn = await pair.a.dial(pair.b.local_address)
    inbound = await pair.b.accept()
    stream = await conn.open_stream()
    stream.write(b"ok")
    await stream.close()
    assert await (await inbound.accept_stream()).read() == b"ok"


async def test_receive_window_bounds_buffer_and_drain_resumes() -> None:
    async with asyncio.timeout(10):
        window = 64 * 1024
        pair = await make_pair(
            config_a=TransportConfig(send_buffer_limit=32 * 1024),
            config_b=TransportConfig(stream_receive_window=window,
                                     connection_receive_window=4 * window),
        )
        try:
            payload = os.urandom(2 << 20)
            stream = await pair.conn_a.open_stream()
            stream.write(payload)
            stream.write_eof()
            writer = asyncio.ensure_future(stream.drain())
            inbound = await pair.conn_b.accept_stream()
            await _wait_buffered(inbound, window)
            for _ in range(3):  # give the sender every chance to overrun
                await _round_trip(pair)
            assert inbound.buffered == window
            assert not writer.done()
            # The sender holds the rest; our side only the window.
            assert pair.conn_a._quic.send_buffered(stream.stream_id) > len(payload) - 2 * window
            got = await _read_all(inbound)
            assert got == payload
            await writer  # the blocked writer resumes
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_connection_window_bounds_all_streams() -> None:
    async with asyncio.timeout(10):
        stream_window, conn_window = 64 * 1024, 128 * 1024
        pair = await make_pair(
            config_b=TransportConfig(stream_receive_window=stream_window,
                                     connection_receive_window=conn_window),
        )
        try:
            payloads = [os.urandom(300_000) for _ in range(6)]
            streams = []
            for payload in payloads:
                stream = await pair.conn_a.open_stream()
                stream.write(payload)
                stream.write_eof()
                streams.append(stream)
            inbound: list[QuicStream] = []

            def accept_queued() -> None:
                while pair.conn_b._incoming:
                    inbound.append(pair.conn_b._incoming.popleft())

            while sum(s.buffered for s in inbound) < conn_window:
                await _ping_from_b(pair)
                accept_queued()
            for _ in range(3):  # give the sender every chance to overrun
                await _ping_from_b(pair)
            accept_queued()
            assert sum(s.buffered for s in inbound) == conn_window
            assert all(s.buffered <= stream_window for s in inbound)
            while len(inbound) < len(payloads):
                inbound.append(await pair.conn_b.accept_stream())
            results = await asyncio.gather(*(_read_all(s) for s in inbound))
            assert sorted(results) == sorted(payloads)
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_reset_by_peer_maps_to_stream_reset(pair: Pair) -> None:
    async with asyncio.timeout(5):
        stream = await pair.conn_a.open_stream()
        stream.write(b"data")
        await stream.drain()
        inbound = await pair.conn_b.accept_stream()
        assert await inbound.readexactly(4) == b"data"
        blocked = asyncio.ensure_future(inbound.read())
        stream.reset()
        with pytest.raises(StreamReset):
            await blocked
        # STOP_SENDING came with the reset: our writes fail too.
        with pytest.raises(StreamReset):
            inbound.write(b"more")
        # Locally, both directions are dead after reset().
        with pytest.raises(StreamReset):
            await stream.read()
        with pytest.raises(StreamReset):
            stream.write(b"x")
        await stream.close()  # closing a dead stream is quiet
        await _round_trip(pair)


async def test_stop_sending_only_fails_writer(pair: Pair) -> None:
    async with asyncio.timeout(5):
        stream = await pair.conn_a.open_stream()
        stream.write(b"data")
        await stream.drain()
        inbound = await pair.conn_b.accept_stream()
        await inbound.readexactly(4)
        inbound.reset()  # RESET_STREAM + STOP_SENDING towards the dialer
        with pytest.raises(StreamReset):
            await stream.read()
        with pytest.raises(StreamReset):
            for _ in range(100):
                stream.write(b"x" * 1000)
                await stream.drain()


async def test_half_close_and_eof_errors(pair: Pair) -> None:
    async with asyncio.timeout(5):
        stream = await pair.conn_a.open_stream()
        stream.write(b"abc")
        stream.write_eof()
        with pytest.raises(StreamClosed):
            stream.write(b"late")
        inbound = await pair.conn_b.accept_stream()
        with pytest.raises(StreamClosed):
            await inbound.readexactly(4)
        assert await inbound.read() == b""
        # The other direction is still open after the dialer's half-close.
        inbound.write(b"reply")
        await inbound.close()
        assert await stream.readexactly(5) == b"reply"
        assert await stream.read() == b""


async def test_connection_close_wakes_everyone(pair: Pair) -> None:
    async with asyncio.timeout(5):
        stream = await pair.conn_a.open_stream()
        stream.write(b"x")
        await stream.drain()
        inbound = await pair.conn_b.accept_stream()
        assert await inbound.read() == b"x"
        waiters = [
            asyncio.ensure_future(inbound.read()),
            asyncio.ensure_future(pair.conn_b.accept_stream()),
            asyncio.ensure_future(stream.read()),
            asyncio.ensure_future(pair.conn_a.accept_stream()),
        ]
        pair.conn_a.close(code=7, reason="bye")
        for waiter in waiters:
            with pytest.raises(ConnectionClosed):
                await waiter
        assert "bye" in str(pair.conn_b.close_reason)
        await pair.conn_b.wait_closed()
        assert pair.conn_a.is_closed and pair.conn_b.is_closed
        with pytest.raises(ConnectionClosed):
            await pair.conn_a.open_stream()
        with pytest.raises(ConnectionClosed):
            await pair.conn_b.accept_stream()
        with pytest.raises(ConnectionClosed):
            stream.write(b"y")


async def test_opener_blocked_on_limit_wakes_on_close() -> None:
    async with asyncio.timeout(5):
        pair = await make_pair(config_b=TransportConfig(max_inbound_streams=1))
        try:
            await pair.conn_a.open_stream()
            opener = asyncio.ensure_future(pair.conn_a.open_stream())
            await _round_trip_b_to_a(pair)
            assert not opener.done()
            pair.conn_b.close()
            with pytest.raises(ConnectionClosed):
                await opener
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def _round_trip_b_to_a(pair: Pair) -> None:
    stream = await pair.conn_b.open_stream()
    stream.write(b"?")
    await stream.close()
    inbound = await pair.conn_a.accept_stream()
    assert await inbound.read() == b"?"


async def test_idle_timeout_closes() -> None:
    async with asyncio.timeout(5):
        config = TransportConfig(idle_timeout=0.3, keepalive_interval=None)
        pair = await make_pair(config_a=config, config_b=config)
        try:
            await pair.conn_a.wait_closed()
            await pair.conn_b.wait_closed()
            assert "Idle timeout" in str(pair.conn_a.close_reason)
            assert pair.a.connections == [] and pair.b.connections == []
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_keepalive_outlives_idle_timeout() -> None:
    async with asyncio.timeout(5):
        config = TransportConfig(idle_timeout=0.3, keepalive_interval=0.1)
        pair = await make_pair(config_a=config, config_b=config)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pair.conn_a.wait_closed(), timeout=1.0)
            assert not pair.conn_b.is_closed
            await _round_trip(pair)
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_reads_of_any_size_reassemble_exactly(pair: Pair) -> None:
    async with asyncio.timeout(5):
        import random

        rng = random.Random(7)
        payload = os.urandom(400_000)
        stream = await pair.conn_a.open_stream()
        stream.write(payload)
        await stream.close()
        inbound = await pair.conn_b.accept_stream()
        got = bytearray()
        for _ in range(3000):  # byte-at-a-time reads, as a varint decoder does
            got += await inbound.readexactly(1)
        while len(got) < len(payload):
            chunk = await inbound.read(rng.choice([1, 7, 1200, 1201, 5000, 65536]))
            assert chunk
            got += chunk
        assert bytes(got) == payload
        assert await inbound.read() == b""
        assert inbound.buffered == 0


@pytest.mark.parametrize("host", HOSTS)
async def test_echo_over_both_address_families(host: str) -> None:
    async with asyncio.timeout(5):
        pair = await make_pair(host)
        try:
            payload = os.urandom(1 << 20)
            stream = await pair.conn_a.open_stream()
            stream.write(payload)
            await stream.close()
            inbound = await pair.conn_b.accept_stream()
            inbound.write(await _read_all(inbound))
            await inbound.close()
            assert await _read_all(stream) == payload
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_finished_streams_are_released(pair: Pair) -> None:
    async with asyncio.timeout(5):
        for abort in (False, True):
            stream = await pair.conn_a.open_stream()
            stream.write(b"q")
            await stream.close()
            inbound = await pair.conn_b.accept_stream()
            assert await inbound.read() == b"q"
            inbound.write(b"a")
            await inbound.close()
            assert await stream.readexactly(1) == b"a"
            assert await stream.read() == b""
            if abort:
                stream.reset()  # after both FINs: nothing left to abort
            assert await inbound.read() == b""
        # Neither side keeps per-stream state for finished streams.
        assert pair.conn_a._streams == {}
        assert pair.conn_b._streams == {}
        assert pair.conn_a._quic._ovl_consumed == {}


async def test_reset_streams_return_their_connection_credit() -> None:
    async with asyncio.timeout(10):
        pair = await make_pair(config_b=TransportConfig(stream_receive_window=64 * 1024,
                                                        connection_receive_window=128 * 1024))
        try:
            for _ in range(8):  # 8 x 100 KB dropped unread: far beyond the window
                stream = await pair.conn_a.open_stream()
                stream.write(os.urandom(100_000))
                stream.write_eof()
                inbound = await pair.conn_b.accept_stream()
                await _wait_buffered(inbound, 1)
                inbound.reset()
                with pytest.raises(StreamReset):
                    await stream.read()
            payload = os.urandom(1 << 20)
            stream = await pair.conn_a.open_stream()
            stream.write(payload)
            await stream.close()
            inbound = await pair.conn_b.accept_stream()
            assert await _read_all(inbound) == payload
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_close_with_long_reason_reaches_peer(pair: Pair) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(LocalProtocolError, match="62-bit"):
            pair.conn_a.close(code=1 << 62)
        pair.conn_a.close(code=3, reason="é" * 5000)
        await pair.conn_b.wait_closed()
        assert "é" in str(pair.conn_b.close_reason)
        assert "0x3" in str(pair.conn_b.close_reason)


async def test_keepalive_follows_a_shorter_peer_idle_timeout() -> None:
    async with asyncio.timeout(5):
        # We would ping every 10 s, but the peer drops idle connections
        # after 0.3 s: we must ping more often than that.
        ours = TransportConfig(idle_timeout=30, keepalive_interval=10)
        theirs = TransportConfig(idle_timeout=0.3, keepalive_interval=None)
        pair = await make_pair(config_a=ours, config_b=theirs)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pair.conn_b.wait_closed(), timeout=1.0)
            await _round_trip(pair)
        finally:
            await pair.a.aclose()
            await pair.b.aclose()


async def test_peer_ignoring_our_window_loses_connection() -> None:
    async with asyncio.timeout(5):
        pair = await make_pair(config_b=TransportConfig(stream_receive_window=64 * 1024,
                                                        connection_receive_window=256 * 1024))
        try:
            stream = await pair.conn_a.open_stream()
            # A hostile sender: pretend we granted far more than we did.
            quic = pair.conn_a._quic
            quic._streams[stream.stream_id].max_stream_data_remote = 1 << 40
            quic._remote_max_data = 1 << 40
            stream.write(os.urandom(200_000))
            await pair.conn_b.wait_closed()
            assert "0x3" in str(pair.conn_b.close_reason)  # FLOW_CONTROL_ERROR
            await pair.conn_a.wait_closed()
            await _serves_again(pair)
        finally:
            await pair.a.aclose()
            await pair.b.aclose()
