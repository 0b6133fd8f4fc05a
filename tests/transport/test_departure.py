"""How a peer learns that the other side left: an announced shutdown
(GOING_AWAY) versus a crash that sends nothing."""

from __future__ import annotations

import asyncio

import pytest

from overlay.transport.errors import GOING_AWAY, ClosedWithCode
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
    pair = await make_pair()
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
