from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import (
    DecodeError,
    MessageTooLarge,
    NegotiationError,
    OverlayError,
    ProtocolNotSupported,
)
from overlay.negotiate import (
    MULTISTREAM_PROTOCOL,
    TooManyAttempts,
    confirm_selection,
    encode_message,
    handle_protocol,
    select_protocol,
)
from overlay.wire import encode_uvarint
from overlay.wire.memory import memory_stream_pair


async def test_select_and_handle() -> None:
    a, b = memory_stream_pair()
    async with asyncio.timeout(5):
        dialed, handled = await asyncio.gather(
            select_protocol(a, ["/x", "/echo/1"]),
            handle_protocol(b, lambda p: p == "/echo/1"),
        )
    assert dialed == handled == "/echo/1"
    a.write(b"hello")
    assert await b.readexactly(5) == b"hello"


async def test_listener_does_not_read_past_pipelined_proposal() -> None:
    a, b = memory_stream_pair()
    # Everything arrives at once: header, proposal, application data.
    a.write(encode_message(MULTISTREAM_PROTOCOL) + encode_message("/p") + b"DATA")
    async with asyncio.timeout(5):
        assert await handle_protocol(b, lambda p: p == "/p") == "/p"
        assert await b.readexactly(4) == b"DATA"
        # The listener answered header + echo.
        expected = encode_message(MULTISTREAM_PROTOCOL) + encode_message("/p")
        assert await a.readexactly(len(expected)) == expected


async def test_lazy_dialer_with_data_then_confirm() -> None:
    a, b = memory_stream_pair()
    async with asyncio.timeout(5):
        assert await select_protocol(a, ["/p"], lazy=True) == "/p"
        a.write(b"ping")
        assert await handle_protocol(b, lambda p: p == "/p") == "/p"
        b.write(b"pong")
        await confirm_selection(a, "/p")
        assert await a.readexactly(4) == b"pong"
        assert await b.readexactly(4) == b"ping"


async def test_lazy_refusal_surfaces_at_confirm() -> None:
    a, b = memory_stream_pair()
    listener_errors: list[Exception] = []

    async def listen() -> None:
        try:
            await handle_protocol(b, lambda p: False)
        except NegotiationError as exc:
            listener_errors.append(exc)

    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as tg:
            await select_protocol(a, ["/p"], lazy=True)
            a.write_eof()
            tg.create_task(listen())
            with pytest.raises(ProtocolNotSupported):
                await confirm_selection(a, "/p")
    assert len(listener_errors) == 1


async def test_not_supported_raises_and_listener_keeps_waiting() -> None:
    a, b = memory_stream_pair()
    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as tg:
            listener = tg.create_task(handle_protocol(b, lambda p: p == "/late"))
            with pytest.raises(ProtocolNotSupported):
                await select_protocol(a, ["/x", "/y"])
            # The same stream can still negotiate: the listener is waiting.
            a.write(encode_message("/late"))
            reply = encode_message("/late")
            assert await a.readexactly(len(reply)) == reply
        assert listener.result() == "/late"


async def test_oversize_message_is_rejected() -> None:
    a, b = memory_stream_pair()
    a.write(encode_message(MULTISTREAM_PROTOCOL) + encode_uvarint(5000) + b"x" * 100)
    async with asyncio.timeout(5):
        with pytest.raises(MessageTooLarge):
            await handle_protocol(b, lambda p: True)


async def test_garbage_is_rejected() -> None:
    a, b = memory_stream_pair()
    a.write(b"\x05\x00\x01\x02\x03\x04GET / HTTP/1.1\r\n")
    async with asyncio.timeout(5):
        with pytest.raises(DecodeError):
            await handle_protocol(b, lambda p: True)


async def test_wrong_header_is_rejected_by_dialer() -> None:
    a, b = memory_stream_pair()
    b.write(encode_message("/multistream/2.0.0"))
    async with asyncio.timeout(5):
        with pytest.raises(NegotiationError):
            await select_protocol(a, ["/p"])


async def test_eof_during_negotiation() -> None:
    a, b = memory_stream_pair()
    a.write(encode_message(MULTISTREAM_PROTOCOL))
    a.write_eof()
    async with asyncio.timeout(5):
        with pytest.raises(NegotiationError):
            await handle_protocol(b, lambda p: True)


async def test_prober_is_cut_off() -> None:
    a, b = memory_stream_pair()
    a.write(encode_message(MULTISTREAM_PROTOCOL))
    for i in range(100):
        a.write(encode_message(f"/probe/{i}"))
    async with asyncio.timeout(5):
        with pytest.raises(TooManyAttempts):
            await handle_protocol(b, lambda p: False, max_attempts=8)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_listener_never_hangs_or_crashes(data: bytes) -> None:
    async def run() -> None:
        a, b = memory_stream_pair()
        a.write(encode_message(MULTISTREAM_PROTOCOL) + data)
        a.write_eof()
        async with asyncio.timeout(5):
            try:
                protocol = await handle_protocol(b, lambda p: p.startswith("/ok"))
            except OverlayError:
                return
        assert protocol.startswith("/ok")

    asyncio.run(run())
