"""The SecureStream driver: the shared ByteStream suite over memory and TCP,
handshake outcomes, backpressure, and every transport-phase fault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from overlay.errors import HandshakeError, PeerIdMismatch, StreamReset
from overlay.identity.keys import PrivateKey
from overlay.identity.peer_id import PeerId
from overlay.secure import (
    DecryptionFailed,
    HandshakeTimeout,
    NoiseConfig,
    NoiseHandshakeError,
    SecureStream,
    TruncatedFrame,
    secure_inbound,
    secure_outbound,
)
from overlay.secure.noise import MAX_PLAINTEXT
from overlay.wire.memory import MemoryStream, memory_stream_pair
from overlay.wire.stream import ByteStream

from tests.transport.stream_suite import CHECKS

from .pair import ed25519
from .tcp import tcp_pair

Factory = Callable[[], Awaitable[tuple[ByteStream, ByteStream]]]
KEY_A, KEY_B = ed25519(1), ed25519(2)
PEER_A = PeerId.from_public_key(KEY_A.public_key())
PEER_B = PeerId.from_public_key(KEY_B.public_key())


async def secure_pair(
    left: ByteStream,
    right: ByteStream,
    expected: PeerId | None = PEER_B,
    right_key: PrivateKey = KEY_B,
) -> tuple[SecureStream, SecureStream]:
    async with asyncio.TaskGroup() as tg:
        out = tg.create_task(secure_outbound(left, KEY_A, expected))
        inn = tg.create_task(secure_inbound(right, right_key))
    return out.result(), inn.result()


@pytest.fixture(params=["memory", "tcp"])
async def factory(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    async with AsyncExitStack() as stack:

        async def make() -> tuple[ByteStream, ByteStream]:
            if request.param == "memory":
                left, right = memory_stream_pair()
            else:
                left, right = await stack.enter_async_context(tcp_pair())
            a, b = await secure_pair(left, right)
            a.write(b"\x00")
            return a, b

        yield make


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_byte_stream_contract(factory: Factory, check: Callable[[Factory], Awaitable[None]]) -> None:
    async with asyncio.timeout(20):
        await check(factory)


async def test_both_sides_learn_the_verified_peer() -> None:
    left, right = memory_stream_pair()
    async with asyncio.timeout(10):
        a, b = await secure_pair(left, right)
    assert a.remote_peer == PEER_B and b.remote_peer == PEER_A
    assert a.remote_public_key == KEY_B.public_key() and a.is_initiator and not b.is_initiator
    assert a.inner is left


async def test_wrong_peer_fails_both_sides() -> None:
    left, right = memory_stream_pair()
    async with asyncio.timeout(10):
        results = await asyncio.gather(
            secure_outbound(left, KEY_A, PEER_A),  # expects itself: wrong
            secure_inbound(right, KEY_B),
            return_exceptions=True,
        )
    assert isinstance(results[0], PeerIdMismatch)
    # The dialer reset the stream before message 3: the listener sees that.
    assert isinstance(results[1], (StreamReset, HandshakeError))


async def test_handshake_timeout_resets_the_stream() -> None:
    left, right = memory_stream_pair()
    async with asyncio.timeout(10):
        with pytest.raises(HandshakeTimeout):
            await secure_outbound(left, KEY_A, config=NoiseConfig(handshake_timeout=0.2))
        with pytest.raises(StreamReset):
            await right.read()


async def test_eof_during_the_handshake() -> None:
    left, right = memory_stream_pair()
    right.write_eof()
    async with asyncio.timeout(10):
        with pytest.raises(NoiseHandshakeError):
            await secure_outbound(left, KEY_A)


async def test_handshake_frame_cut_by_eof() -> None:
    left, right = memory_stream_pair()
    right.write(b"\x00\x20" + b"x" * 5)
    right.write_eof()
    async with asyncio.timeout(10):
        with pytest.raises(TruncatedFrame):
            await secure_outbound(left, KEY_A)


async def _secured_with_raw_access() -> tuple[SecureStream, MemoryStream, SecureStream]:
    left, right = memory_stream_pair()
    a, b = await secure_pair(left, right)
    return a, left, b


async def test_truncated_transport_message_is_sticky() -> None:
    async with asyncio.timeout(10):
        a, raw_a, b = await _secured_with_raw_access()
        a.write(b"fine")
        raw_a.write(b"\x00\x40" + b"y" * 10)  # promises 64 bytes, sends 10
        raw_a.write_eof()
        assert await b.readexactly(4) == b"fine"
        with pytest.raises(TruncatedFrame):
            await b.read()
        with pytest.raises(TruncatedFrame):
            await b.read()


async def test_tampered_transport_message_resets() -> None:
    async with asyncio.timeout(10):
        a, raw_a, b = await _secured_with_raw_access()
        raw_a.write(b"\x00\x20" + b"z" * 32)  # a well-formed frame, forged
        with pytest.raises(DecryptionFailed):
            await b.read()
        with pytest.raises(StreamReset):
            await a.read()  # b dropped the connection


async def test_large_write_is_chunked_and_reads_hold_one_message() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair(limit=1 << 20)
        a, b = await secure_pair(left, right)
        data = bytes(range(256)) * 1024  # 256 KiB: five messages
        a.write(data)
        await a.drain()
        first = await b.read(10)
        assert first == data[:10]
        assert b.buffered == MAX_PLAINTEXT - 10
        rest = await b.readexactly(len(data) - 10)
        assert first + rest == data


async def test_reads_ahead_across_messages_and_keeps_them_apart() -> None:
    """A transport-phase read takes several queued messages from the
    stream underneath at once, then hands them out one by one."""
    async with asyncio.timeout(20):
        left, right = memory_stream_pair(limit=1 << 20)
        a, b = await secure_pair(left, right)
        for n in (1, MAX_PLAINTEXT, 7):
            a.write(bytes([n % 251]) * n)  # three messages of their own
        await a.drain()
        got = [await b.read(1 << 20) for _ in range(3)]
        assert [len(x) for x in got] == [1, MAX_PLAINTEXT, 7]
        assert got[1] == bytes([MAX_PLAINTEXT % 251]) * MAX_PLAINTEXT
        assert b.buffered == 0
        a.write_eof()
        assert await b.read() == b""


async def test_drain_waits_for_the_reader() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair(limit=1 << 16)
        a, b = await secure_pair(left, right)
        a.write(b"x" * (1 << 18))
        drain = asyncio.ensure_future(a.drain())
        done, _ = await asyncio.wait([drain], timeout=0.2)
        assert not done  # nobody reads: the writer is held back
        await b.readexactly(1 << 18)
        await drain


async def test_largest_forged_message_is_read_whole_then_rejected() -> None:
    # 0xFFFF is the most a 2-byte prefix can announce: within the limit.
    async with asyncio.timeout(10):
        a, raw_a, b = await _secured_with_raw_access()
        raw_a.write(b"\xff\xff" + b"q" * 0xFFFF)
        with pytest.raises(DecryptionFailed):
            await b.read()
