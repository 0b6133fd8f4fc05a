"""How a peer learns that the other side left: an announced shutdown
(GOING_AWAY) versus a crash that sends nothing."""

from __future__ import annotations

import asyncio
import select
import socket
import time

import pytest

from overlay.errors import DialError
from overlay.identity import Ed25519PrivateKey
from overlay.transport import QuicEndpoint, TransportConfig
from overlay.transport.errors import GOING_AWAY, ClosedWithCode, PeerUnreachable
from overlay.transport.icmp import quoted_dcid
from tests.transport.conftest import make_pair


async def test_endpoint_close_tells_the_peer_it_is_going_away() -> None:
    pair = await make_pair()
    try:
        await pair.a.aclose()
        async with asyncio.timeout(5):
            await pair.conn_b.wait_closed()
        reason = pair.conn_b.close_reason
        assert isinstance(reason, ClosedWithCode)
        assert reason.application and reason.code == GOING_AWAY and reason.going_away
    finally:
        await pair.a.aclose()
        await pair.b.aclose()


async def test_an_ordinary_close_is_not_going_away() -> None:
    pair = await make_pair()
    try:
        pair.conn_a.close(7, "bye")
        async with asyncio.timeout(5):
            await pair.conn_b.wait_closed()
        reason = pair.conn_b.close_reason
        assert isinstance(reason, ClosedWithCode)
        assert reason.code == 7 and reason.phrase == "bye" and not reason.going_away
    finally:
        await pair.a.aclose()
        await pair.b.aclose()


async def test_abort_for_test_sends_nothing() -> None:
    # Without ICMP errors b can only learn of the crash from silence.
    pair = await make_pair(config_b=TransportConfig(icmp_errors=False))
    try:
        pair.a.abort_for_test()
        assert pair.conn_a.is_closed
        # A ping from b now goes unanswered; had a sent CONNECTION_CLOSE, b
        # would be closed by the time a's socket is gone and b's PING lands.
        await pair.a.aclose()
        stream = await pair.conn_b.open_stream()
        stream.write(b"anyone?")
        await stream.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await pair.conn_b.wait_closed()
        assert not pair.conn_b.is_closed
    finally:
        await pair.b.aclose()


def _closed_port() -> tuple[str, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    sock.close()
    return address


async def test_a_dial_to_a_closed_port_fails_at_once_on_icmp() -> None:
    key = Ed25519PrivateKey.generate()
    async with await QuicEndpoint.create("127.0.0.1", 0, key) as a:
        started = time.monotonic()
        with pytest.raises(DialError, match="unreachable"):
            async with asyncio.timeout(5):
                await a.dial(_closed_port())
        # Instead of the 10 s handshake timeout.
        assert time.monotonic() - started < 1.0


async def test_without_icmp_errors_the_dial_waits_for_its_timeout() -> None:
    config = TransportConfig(icmp_errors=False, handshake_timeout=0.5)
    async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(), config) as a:
        with pytest.raises(DialError, match="no QUIC response"):
            await a.dial(_closed_port())


async def test_a_crashed_peer_is_noticed_at_the_next_packet() -> None:
    pair = await make_pair()
    try:
        pair.a.abort_for_test()
        started = time.monotonic()
        stream = await pair.conn_b.open_stream()
        stream.write(b"anyone?")
        await stream.drain()
        async with asyncio.timeout(5):
            await pair.conn_b.wait_closed()
        assert isinstance(pair.conn_b.close_reason, PeerUnreachable)
        assert time.monotonic() - started < 1.0
    finally:
        await pair.a.aclose()
        await pair.b.aclose()


async def test_an_icmp_error_without_our_connection_id_is_ignored() -> None:
    pair = await make_pair()
    try:
        assert not pair.conn_b._port_unreachable(b"\x40" + b"\x00" * 30)
        assert not pair.conn_b.is_closed
    finally:
        await pair.a.aclose()
        await pair.b.aclose()


def test_quoted_dcid_reads_long_and_short_headers() -> None:
    long_header = bytes([0xC0]) + b"\x00\x00\x00\x01" + bytes([4]) + b"abcd" + b"rest"
    assert quoted_dcid(long_header, 8) == b"abcd"
    assert quoted_dcid(b"\x40" + b"12345678" + b"payload", 8) == b"12345678"
    assert quoted_dcid(b"", 8) is None and quoted_dcid(b"\xc0\x00", 8) is None


async def test_a_burst_of_icmp_errors_leaves_the_socket_quiet() -> None:
    pair = await make_pair()
    try:
        closed = _closed_port()
        for _ in range(300):
            pair.a.sendto(b"\x40" + b"\x00" * 40, closed)
        # A round trip on the live connection: the loop has read the errors.
        stream = await pair.conn_a.open_stream()
        stream.write(b"ping")
        await stream.drain()
        inbound = await pair.conn_b.accept_stream()
        assert await inbound.read() == b"ping"
        sock = pair.a._sock
        assert sock is not None
        # An undrained error queue would keep the socket "readable" and the
        # event loop spinning.
        readable, _, errored = select.select([sock], [], [sock], 0)
        assert readable == [] and errored == []
        assert not pair.conn_a.is_closed  # their quotes carry no CID of ours
    finally:
        await pair.a.aclose()
        await pair.b.aclose()


async def test_the_handshake_measures_the_round_trip() -> None:
    pair = await make_pair()
    try:
        for conn in (pair.conn_a, pair.conn_b):
            rtt = conn.smoothed_rtt
            assert rtt is not None and 0 < rtt < 1.0
    finally:
        await pair.a.aclose()
        await pair.b.aclose()
