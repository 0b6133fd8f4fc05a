"""Hanging up on `name_register` (Ctrl-C) cancels the registration, proof of
work included, unless the record has already left the node; the CLI says
which happened and exits 130."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.api import ApiServer
from overlay.daemon.client import ApiClient
from overlay.daemon.ops_name import NameOps
from overlay.daemon.pump import PumpLedger
from overlay.naming import NamingConfig
from overlay.naming import service as service_module
from overlay.naming.net_errors import NameNotFound
from overlay.naming.service import NameService, NameServiceConfig
from tests.daemon.helpers import cli_command
from tests.namenet.helpers import FAST_NAMES, NameNode, name_network

HEAVY = replace(FAST_NAMES, naming=NamingConfig(pow_bits=40))
"""2^40 hashes: days of work, so only a cancellation ends it."""


@dataclass
class Owner:
    node: NameNode
    other: NameNode
    home: Path
    server: ApiServer


@asynccontextmanager
async def owner_node(root: Path, config: NameServiceConfig) -> AsyncIterator[Owner]:
    async with name_network(3, config) as nodes, AsyncExitStack() as stack:
        server = await stack.enter_async_context(ApiServer(root / "api.sock"))
        NameOps(nodes[1].names, nodes[1].host, PumpLedger()).register(server)
        yield Owner(nodes[1], nodes[2], root, server)


class PowWatch:
    """Counts proof-of-work chunks (worker threads) and tells when the
    first one starts and when none runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = asyncio.Event()
        self.idle = threading.Event()
        self.calls = 0
        self._running = 0
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        real = service_module.solve_pow

        def counted(*args: Any, **kwargs: Any) -> int:
            with self._lock:
                self.calls += 1
                self._running += 1
                self.idle.clear()
            self._loop.call_soon_threadsafe(self.started.set)
            try:
                return real(*args, **kwargs)
            finally:
                with self._lock:
                    self._running -= 1
                    if self._running == 0:
                        self.idle.set()

        monkeypatch.setattr(service_module, "solve_pow", counted)

    async def assert_stopped(self, probe: Callable[[], Awaitable[object]]) -> None:
        """No chunk runs, and none starts while ``probe`` runs (a running
        loop would start its next chunk at once)."""
        assert await asyncio.to_thread(self.idle.wait, 10.0)
        before = self.calls
        await probe()
        assert self.calls == before


def gate_publication(monkeypatch: pytest.MonkeyPatch, names: NameService,
                     ) -> tuple[asyncio.Event, asyncio.Event]:
    """Holds the record back just after it started to leave the node."""
    leaving, go = asyncio.Event(), asyncio.Event()
    real = names._publish

    async def held(*args: Any, **kwargs: Any) -> Any:
        leaving.set()
        await go.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(names, "_publish", held)
    return leaving, go


async def _final(api: ApiClient) -> dict[str, Any]:
    while True:
        message = await api.next_event()
        assert message is not None
        if "event" not in message:
            return message


async def _not_published(owner: Owner, name: str) -> None:
    assert name not in [entry.record.name for entry in owner.node.names.owned()]
    with pytest.raises(NameNotFound):
        await owner.other.names.resolve(name, use_cache=False)


async def test_hanging_up_during_the_proof_of_work_cancels_it(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(60), owner_node(short_tmp, HEAVY) as owner:
        pow_watch = PowWatch(monkeypatch)
        async with await ApiClient.connect(owner.home / "api.sock") as api:
            await api.send_request("name_register", {"name": "heavy.ovl"})
            await pow_watch.started.wait()
            started = asyncio.get_running_loop().time()
            api.half_close()
            reply = await _final(api)
            assert reply["ok"] is False and reply["error"]["code"] == "cancelled"
            assert asyncio.get_running_loop().time() - started < 2.0
        await pow_watch.assert_stopped(lambda: _not_published(owner, "heavy.ovl"))


async def test_a_client_that_disconnects_cancels_too(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(60), owner_node(short_tmp, HEAVY) as owner:
        pow_watch = PowWatch(monkeypatch)
        api = await ApiClient.connect(owner.home / "api.sock")
        await api.send_request("name_register", {"name": "heavy.ovl"})
        await pow_watch.started.wait()
        await api.aclose()
        await pow_watch.assert_stopped(lambda: _not_published(owner, "heavy.ovl"))


async def test_hanging_up_after_the_record_left_still_publishes(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(60), owner_node(short_tmp, FAST_NAMES) as owner:
        leaving, go = gate_publication(monkeypatch, owner.node.names)
        async with await ApiClient.connect(owner.home / "api.sock") as api:
            await api.send_request("name_register", {"name": "kept.ovl"})
            await leaving.wait()
            api.half_close()
            go.set()
            reply = await _final(api)
            assert reply["ok"] is True and reply["name"] == "kept.ovl"
        got = await owner.other.names.resolve("kept.ovl", use_cache=False)
        assert got.record.owner == owner.node.names.owner


async def _cli(home: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cli_command("--home", str(home), "name", *args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_ctrl_c_in_the_cli_cancels_and_says_nothing_was_published(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(60), owner_node(short_tmp, HEAVY) as owner:
        pow_watch = PowWatch(monkeypatch)
        proc = await _cli(owner.home, "register", "heavy.ovl")
        try:
            await pow_watch.started.wait()
            proc.send_signal(signal.SIGINT)
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 130, err
        assert "cancelled: nothing was published" in err.decode()
        assert b"Traceback" not in err and out == b""
        await pow_watch.assert_stopped(lambda: _not_published(owner, "heavy.ovl"))


async def test_ctrl_c_after_the_record_left_says_it_was_published(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(60), owner_node(short_tmp, FAST_NAMES) as owner:
        leaving, go = gate_publication(monkeypatch, owner.node.names)
        proc = await _cli(owner.home, "register", "kept.ovl")
        try:
            await leaving.wait()
            proc.send_signal(signal.SIGINT)
            assert proc.stderr is not None
            # The CLI has taken the interruption (and hung up) before the
            # record is let go.
            line = await proc.stderr.readline()
            while line.strip() == b"":
                line = await proc.stderr.readline()
            assert b"interrupted: cancelling the registration" in line
            go.set()
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 130, err
        assert "interrupted, but kept.ovl was already published" in err.decode()
        assert "registered kept.ovl" in out.decode()
        got = await owner.other.names.resolve("kept.ovl", use_cache=False)
        assert got.record.owner == owner.node.names.owner


async def test_a_request_pipelined_behind_a_watched_op_is_no_hang_up(short_tmp: Path) -> None:
    from overlay.daemon.api import ApiCall

    gate = asyncio.Event()
    entered = asyncio.Event()

    async def slow(call: ApiCall) -> dict[str, Any]:
        async def work() -> str:
            entered.set()
            await gate.wait()
            return "done"
        return {"result": await call.unless_hung_up(work(), lambda: True),
                "hung_up": call.hung_up}

    async def quick(call: ApiCall) -> dict[str, Any]:
        return {"result": "quick"}

    async with asyncio.timeout(30), ApiServer(short_tmp / "api.sock") as server:
        server.register("slow", slow)
        server.register("quick", quick)
        async with await ApiClient.connect(short_tmp / "api.sock") as api:
            await api.send_request("slow")
            await entered.wait()
            await api.send_request("quick")
            gate.set()
            first = await _final(api)
            assert first["ok"] and first["result"] == "done" and not first["hung_up"]
            second = await _final(api)
            assert second["ok"] and second["result"] == "quick"
            # Now a hang-up while it waits cancels it, and the reply still comes.
            gate.clear()
            entered.clear()
            await api.send_request("slow")
            await entered.wait()
            api.half_close()
            third = await _final(api)
            assert not third["ok"] and third["error"]["code"] == "cancelled"
            assert await api.next_event() is None
