"""The whole upgrade of a raw stream — multistream /noise, Noise, the muxer —
with yamux over memory and over loopback TCP, and with a trivial muxer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from overlay.errors import ProtocolNotSupported, StreamReset
from overlay.identity.peer_id import PeerId
from overlay.mux import YamuxSession
from overlay.negotiate import handle_protocol, select_protocol
from overlay.secure import (
    SecureStream,
    UpgradeConfig,
    Upgraded,
    upgrade_inbound,
    upgrade_outbound,
)
from overlay.wire.memory import memory_stream_pair
from overlay.wire.stream import ByteStream

from .pair import ed25519
from .tcp import tcp_pair

KEY_A, KEY_B = ed25519(1), ed25519(2)
PEER_A = PeerId.from_public_key(KEY_A.public_key())
PEER_B = PeerId.from_public_key(KEY_B.public_key())


@asynccontextmanager
async def raw_pair(kind: str) -> AsyncIterator[tuple[ByteStream, ByteStream]]:
    if kind == "memory":
        yield memory_stream_pair()
    else:
        async with tcp_pair() as pair:
            yield pair


def trivial(stream: SecureStream, is_client: bool) -> tuple[SecureStream, bool]:
    return stream, is_client


async def upgrade_both(
    left: ByteStream,
    right: ByteStream,
    dialer: UpgradeConfig | None = None,
    listener: UpgradeConfig | None = None,
) -> tuple[Upgraded[YamuxSession], Upgraded[YamuxSession]]:
    async with asyncio.TaskGroup() as tg:
        out = tg.create_task(upgrade_outbound(left, KEY_A, PEER_B, YamuxSession, config=dialer))
        inn = tg.create_task(upgrade_inbound(right, KEY_B, YamuxSession, config=listener))
    return out.result(), inn.result()


async def ping_over(client: YamuxSession, server: YamuxSession) -> None:
    """One /ipfs/ping/1.0.0-style echo of 32 random bytes on a new stream."""

    async def serve() -> None:
        stream = await server.accept_stream()
        await handle_protocol(stream, lambda p: p == "/ipfs/ping/1.0.0")
        stream.write(await stream.readexactly(32))
        await stream.drain()
        await stream.close()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve())
        stream = await client.open_stream()
        await select_protocol(stream, ["/ipfs/ping/1.0.0"])
        payload = os.urandom(32)
        stream.write(payload)
        await stream.drain()
        assert await stream.readexactly(32) == payload
        await stream.close()


@pytest.mark.parametrize("kind", ["memory", "tcp"])
@pytest.mark.parametrize("early", [True, False], ids=["early-muxer", "multistream-muxer"])
async def test_upgrade_with_yamux(kind: str, early: bool) -> None:
    config = UpgradeConfig(advertise_muxers=early)
    async with asyncio.timeout(20), raw_pair(kind) as (left, right):
        out, inn = await upgrade_both(left, right, config, config)
        assert out.remote_peer == PEER_B and inn.remote_peer == PEER_A
        assert out.muxer_protocol == inn.muxer_protocol == "/yamux/1.0.0"
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(out.muxer)
            server = await stack.enter_async_context(inn.muxer)
            await ping_over(client, server)
            await ping_over(server, client)  # streams both ways


async def test_one_side_advertising_falls_back_to_multistream() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair()
        async with asyncio.TaskGroup() as tg:
            out = tg.create_task(upgrade_outbound(left, KEY_A, PEER_B, trivial))
            inn = tg.create_task(
                upgrade_inbound(right, KEY_B, trivial, config=UpgradeConfig(advertise_muxers=False))
            )
        (a, a_client), (b, b_client) = out.result().muxer, inn.result().muxer
        assert a_client and not b_client
        assert a.remote_extensions is None and b.remote_extensions is not None
        # Nothing is left unread on either side: the streams are in step.
        a.write(b"after")
        await a.drain()
        assert await b.readexactly(5) == b"after"


async def test_listener_without_noise_refuses() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair()

        results = await asyncio.gather(
            upgrade_outbound(left, KEY_A, PEER_B, trivial),
            handle_protocol(right, lambda p: p == "/tls/1.0.0"),
            return_exceptions=True,
        )
        assert isinstance(results[0], ProtocolNotSupported)
        assert isinstance(results[1], StreamReset)  # the dialer hung up


async def test_no_common_muxer() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair()
        mplex_only = UpgradeConfig(muxers=("/mplex/6.7.0",), advertise_muxers=False)
        results = await asyncio.gather(
            upgrade_outbound(left, KEY_A, PEER_B, trivial),
            upgrade_inbound(right, KEY_B, trivial, config=mplex_only),
            return_exceptions=True,
        )
        assert isinstance(results[0], ProtocolNotSupported)
        assert isinstance(results[1], Exception)


async def test_advertised_muxers_without_overlap_fail_both_sides() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair()
        mplex_only = UpgradeConfig(muxers=("/mplex/6.7.0",))
        results = await asyncio.gather(
            upgrade_outbound(left, KEY_A, PEER_B, trivial),
            upgrade_inbound(right, KEY_B, trivial, config=mplex_only),
            return_exceptions=True,
        )
        assert isinstance(results[0], ProtocolNotSupported)
        # Unless the dialer's reset overtook message 3, the listener comes
        # to the same conclusion on its own.
        assert isinstance(results[1], (ProtocolNotSupported, StreamReset))


async def test_initiator_preference_wins() -> None:
    async with asyncio.timeout(20):
        left, right = memory_stream_pair()
        dialer = UpgradeConfig(muxers=("/yamux/1.0.0", "/mplex/6.7.0"))
        listener = UpgradeConfig(muxers=("/mplex/6.7.0", "/yamux/1.0.0"))
        async with asyncio.TaskGroup() as tg:
            out = tg.create_task(upgrade_outbound(left, KEY_A, PEER_B, trivial, config=dialer))
            inn = tg.create_task(upgrade_inbound(right, KEY_B, trivial, config=listener))
        assert out.result().muxer_protocol == inn.result().muxer_protocol == "/yamux/1.0.0"
