"""QUIC DATAGRAM frames (RFC 9221) on our connection wrapper."""

from __future__ import annotations

import asyncio

from overlay.transport import TransportConfig
from tests.transport.conftest import make_pair


async def test_datagrams_flow_both_ways() -> None:
    p = await make_pair()
    try:
        got_b: asyncio.Queue[bytes] = asyncio.Queue()
        got_a: asyncio.Queue[bytes] = asyncio.Queue()
        p.conn_b.datagram_handler = got_b.put_nowait
        p.conn_a.datagram_handler = got_a.put_nowait
        assert p.conn_a.datagram_capacity >= 1100
        assert p.conn_a.send_datagram(b"x" * 1100)
        async with asyncio.timeout(5):
            assert await got_b.get() == b"x" * 1100
        assert p.conn_b.send_datagram(b"back")
        async with asyncio.timeout(5):
            assert await got_a.get() == b"back"
        # Too large for one packet: refused, nothing queued.
        assert not p.conn_a.send_datagram(b"y" * (p.conn_a.datagram_capacity + 1))
    finally:
        await p.a.aclose()
        await p.b.aclose()


async def test_no_datagrams_towards_a_peer_without_support() -> None:
    off = TransportConfig(max_datagram_frame_size=None)
    p = await make_pair(config_b=off)
    try:
        assert p.conn_a.datagram_capacity == 0
        assert not p.conn_a.send_datagram(b"ip packet")
        # b may still send to a, which announced support.
        got: asyncio.Queue[bytes] = asyncio.Queue()
        p.conn_a.datagram_handler = got.put_nowait
        assert p.conn_b.send_datagram(b"fine")
        async with asyncio.timeout(5):
            assert await got.get() == b"fine"
    finally:
        await p.a.aclose()
        await p.b.aclose()


async def test_datagrams_without_a_handler_are_dropped_and_streams_go_on() -> None:
    p = await make_pair()
    try:
        assert p.conn_a.send_datagram(b"nobody listens")
        stream = await p.conn_a.open_stream()
        stream.write(b"still here")
        await stream.close()
        incoming = await p.conn_b.accept_stream()
        async with asyncio.timeout(5):
            assert await incoming.readexactly(10) == b"still here"
        assert not p.conn_b.is_closed
    finally:
        await p.a.aclose()
        await p.b.aclose()


async def test_datagrams_before_a_handler_is_set_are_kept_bounded() -> None:
    p = await make_pair()
    try:
        for i in range(40):
            assert p.conn_a.send_datagram(b"early %d" % i)
        # A stream written after the datagrams arrives after them.
        stream = await p.conn_a.open_stream()
        stream.write(b"!")
        await stream.close()
        incoming = await p.conn_b.accept_stream()
        async with asyncio.timeout(5):
            assert await incoming.readexactly(1) == b"!"
        got: list[bytes] = []
        p.conn_b.datagram_handler = got.append
        assert got == [b"early %d" % i for i in range(32)]  # the first 32
        p.conn_b.datagram_handler = None
        assert p.conn_a.send_datagram(b"late")
        stream = await p.conn_a.open_stream()
        stream.write(b"?")
        await stream.close()
        incoming = await p.conn_b.accept_stream()
        async with asyncio.timeout(5):
            assert await incoming.readexactly(1) == b"?"
        assert len(got) == 32  # unset: dropped, not kept
    finally:
        await p.a.aclose()
        await p.b.aclose()
