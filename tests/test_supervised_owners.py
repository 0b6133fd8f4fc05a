"""The long-lived owners of per-client work — the API server, the TCP
connection group, the DNS front — and the CLI's progress ticker run their
tasks as ``Supervisor`` jobs: a failing client costs only itself, and
closing cancels and awaits everything."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord

from overlay.apps.tcp import Accepted, ConnectionGroup
from overlay.cli.progress import ProgressLine, SlowWait
from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.net_errors import NameNotFound
from overlay.naming.resolver import Resolution


# -- API server -------------------------------------------------------------------------


async def test_an_op_with_a_bug_answers_internal_and_the_client_goes_on(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def buggy(call: ApiCall) -> Mapping[str, Any]:
        raise RuntimeError("a bug in an op")

    async def echo(call: ApiCall) -> Mapping[str, Any]:
        return {"args": dict(call.args)}

    async with asyncio.timeout(10), ApiServer(short_tmp / "api.sock") as server:
        server.register("buggy", buggy)
        server.register("echo", echo)
        async with await ApiClient.connect(server.path) as steady:
            async with await ApiClient.connect(server.path) as broken:
                with caplog.at_level(logging.ERROR, logger="overlay.daemon.api"):
                    with pytest.raises(ApiError) as info:
                        await broken.call("buggy")
                    # Answered `internal`, with the traceback in the log; the
                    # same connection goes on serving.
                    assert info.value.code == "internal" and "RuntimeError" in str(info.value)
                    assert (await broken.call("echo", {"y": 2}))["args"] == {"y": 2}
            assert (await steady.call("echo", {"x": 1}))["args"] == {"x": 1}
        assert any("op buggy failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_api_read_ahead_ends_with_its_client_and_close_awaits_all(short_tmp: Path) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()
    hung_up = asyncio.Event()

    def may_cancel() -> bool:
        hung_up.set()  # asked once the read-ahead saw the hang-up
        return False

    async def watch(call: ApiCall) -> Mapping[str, Any]:
        async def work() -> str:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return "never"
        return {"result": await call.unless_hung_up(work(), may_cancel)}

    async with asyncio.timeout(10):
        server = ApiServer(short_tmp / "api.sock")
        server.register("watch", watch)
        async with server:
            sup = server._sup
            assert sup is not None
            api = await ApiClient.connect(server.path)
            await api.send_request("watch")
            await entered.wait()
            assert len(sup) == 2  # the client and its read-ahead
            jobs = set(sup._tasks)
            api.half_close()
            # The read-ahead saw the hang-up and ended; may_cancel() is
            # false, so the op keeps running.
            await hung_up.wait()
            # The ended job leaves the supervisor in its done callback, which
            # runs before asyncio.wait's own.
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            assert done
            assert len(sup) == 1 and not cancelled.is_set()
        assert cancelled.is_set()
        assert len(sup) == 0 and not sup.running
        await api.aclose()


# -- TCP connection group -----------------------------------------------------------------


async def test_connection_group_failure_costs_one_connection_and_close_cancels(
        caplog: pytest.LogCaptureFixture) -> None:
    hanging = asyncio.Event()
    hang_cancelled = asyncio.Event()

    async def handler(conn: Accepted) -> None:
        reader, writer = await conn.streams()
        line = await reader.readline()
        if line == b"bug\n":
            raise RuntimeError("a bug in a handler")
        if line == b"hang\n":
            hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                hang_cancelled.set()
                raise
        writer.write(line.upper())
        await writer.drain()

    async with asyncio.timeout(10):
        group = ConnectionGroup()
        async with group:
            listener = await group.listen("127.0.0.1", 0, handler, "test connection")
            with caplog.at_level(logging.ERROR, logger="overlay.apps.tcp"):
                r1, w1 = await asyncio.open_connection(*listener.address)
                w1.write(b"bug\n")
                assert await r1.read() == b""  # that connection alone is closed
                w1.close()
            assert any("test connection failed" in r.getMessage() for r in caplog.records)
            r2, w2 = await asyncio.open_connection(*listener.address)
            w2.write(b"fine\n")
            assert await r2.read() == b"FINE\n"
            w2.close()
            r3, w3 = await asyncio.open_connection(*listener.address)
            w3.write(b"hang\n")
            await hanging.wait()
            assert group.open_connections == 1
        assert hang_cancelled.is_set()
        assert group.open_connections == 0
        assert await r3.read() == b""
        w3.close()


# -- DNS front ---------------------------------------------------------------------------


async def test_dns_front_close_cancels_pending_lookups_and_a_failed_query_is_alone() -> None:
    started = asyncio.Event()
    lookup_cancelled = asyncio.Event()

    async def resolve(name: str) -> Resolution:
        if name == "slow.ovl":
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                lookup_cancelled.set()
                raise
        raise NameNotFound(name)

    async def ask(address: tuple[str, int], name: str) -> DNSRecord:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                if not reply.done():
                    reply.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        try:
            transport.sendto(DNSRecord.question(name).pack(), address)
            return DNSRecord.parse(await reply)
        finally:
            transport.close()

    async with asyncio.timeout(10):
        front = DnsFront(DnsFrontConfig(port=0), resolve)
        async with front:
            sup = front._sup
            assert sup is not None
            pending = asyncio.create_task(ask(front.address, "slow.ovl"))
            await started.wait()
            answer = await ask(front.address, "gone.ovl")
            assert answer.header.rcode == RCODE.NXDOMAIN
            assert len(sup) == 2  # the waiting query and its lookup
        assert lookup_cancelled.is_set()
        assert len(sup) == 0
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending


# -- CLI progress ------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.wrote.set()
        return super().write(text)


async def test_slow_wait_ticker_is_awaited_on_exit_and_cancellation_passes() -> None:
    tty = _Terminal()
    wait = SlowWait("waiting", after=0.0, line=ProgressLine(stream=tty))
    async with wait:
        await asyncio.wait_for(tty.wrote.wait(), 10)
        ticker = wait._task
        assert ticker is not None and not ticker.done()
    assert ticker.done() and wait._task is None
    assert tty.getvalue().endswith("\r\x1b[K")

    # The caller cancelled inside the block: the ticker still ends, the
    # cancellation reaches the caller, and the line is cleared.
    tty = _Terminal()
    inside = asyncio.Event()
    tickers: list[asyncio.Task[None]] = []

    async def caller() -> None:
        async with SlowWait("waiting", after=0.0, line=ProgressLine(stream=tty)) as w:
            await tty.wrote.wait()
            assert w._task is not None
            tickers.append(w._task)
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(caller())
    await asyncio.wait_for(inside.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tickers[0].done()
    assert tty.getvalue().endswith("\r\x1b[K")
