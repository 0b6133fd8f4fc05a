"""The name_* stream-API ops and the `overlay name` CLI, against real nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from overlay.cli import main
from overlay.daemon.api import ApiServer
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.daemon.ops_name import NameOps
from overlay.daemon.pump import PumpLedger
from overlay.host.stream import NegotiatedStream
from tests.namenet.helpers import NameNode, name_network

ECHO = "/test/echo/1.0.0"


@asynccontextmanager
async def api_nodes(root: Path) -> AsyncIterator[list[tuple[NameNode, Path]]]:
    async with name_network(3) as nodes, AsyncExitStack() as stack:
        out = []
        for index in (1, 2):
            home = root / f"n{index}"
            home.mkdir()
            server = await stack.enter_async_context(ApiServer(home / "api.sock"))
            NameOps(nodes[index].names, nodes[index].host, PumpLedger()).register(server)
            out.append((nodes[index], home))
        yield out


async def test_register_resolve_list_update_over_the_api(short_tmp: Path) -> None:
    async with asyncio.timeout(60), api_nodes(short_tmp) as [(owner, home1), (_, home2)]:
        async with await ApiClient.connect(home1 / "api.sock") as api:
            reply = await api.call("name_register", {
                "name": "Dave.ovl", "ips": ["192.0.2.4", "2001:db8::4"],
                "services": ["http:80", "ssh:22:host.example.org"], "txt": ["hi"], "ttl": 120})
            assert reply["name"] == "dave.ovl" and reply["stored"] >= 1
            assert reply["record"]["peers"][0]["peer_id"] == str(owner.host.peer_id)
            listed = await api.call("name_list")
            assert [n["name"] for n in listed["names"]] == ["dave.ovl"]
            assert listed["names"][0]["republish_at"] > listed["names"][0]["published_at"]
        async with await ApiClient.connect(home2 / "api.sock") as api:
            first = await api.call("name_resolve", {"name": "dave.ovl"})
            assert first["source"] == "network"
            record = first["record"]
            assert record["owner"] == str(owner.host.peer_id)
            assert record["ips"] == ["192.0.2.4", "2001:db8::4"]
            assert record["services"][1]["target"] == "host.example.org"
            assert record["ttl"] == 120 and record["txt"] == ["hi"]
            cached = await api.call("name_resolve", {"name": "dave.ovl"})
            assert cached["source"] == "cache" and cached["elapsed_ms"] < first["elapsed_ms"]
            with pytest.raises(ApiError) as missing:
                await api.call("name_resolve", {"name": "nobody.ovl"})
            assert missing.value.code == "name_not_found"
            with pytest.raises(ApiError) as invalid:
                await api.call("name_resolve", {"name": "-bad-.ovl"})
            assert invalid.value.code == "invalid_name"
            with pytest.raises(ApiError) as not_owner:
                await api.call("name_update", {"name": "dave.ovl", "txt": ["x"]})
            assert not_owner.value.code == "not_owner"
            with pytest.raises(ApiError) as bad:
                await api.call("name_register", {"name": "e.ovl", "services": ["http"]})
            assert bad.value.code == "bad_request"
        async with await ApiClient.connect(home1 / "api.sock") as api:
            await api.call("name_update", {"name": "dave.ovl", "txt": ["v2"]})
        async with await ApiClient.connect(home2 / "api.sock") as api:
            fresh = await api.call("name_resolve", {"name": "dave.ovl", "no_cache": True,
                                                     "final": True})
            assert fresh["source"] == "network" and fresh["record"]["txt"] == ["v2"]
            assert fresh["record"]["ips"] == ["192.0.2.4", "2001:db8::4"]


async def test_name_connect_opens_a_direct_stream(short_tmp: Path) -> None:
    async with asyncio.timeout(60), api_nodes(short_tmp) as [(owner, home1), (reader, home2)]:
        async def echo(stream: NegotiatedStream) -> None:
            data = await stream.read()
            stream.write(data.upper())
            await stream.drain()
            await stream.close()

        owner.host.set_stream_handler(ECHO, echo)
        async with await ApiClient.connect(home1 / "api.sock") as api:
            await api.call("name_register", {"name": "echo.ovl"})
        api = await ApiClient.connect(home2 / "api.sock")
        reply, sock_reader, sock_writer = await api._take_over(
            "name_connect", {"name": "echo.ovl", "protocol": ECHO})
        assert reply["peer_id"] == str(owner.host.peer_id)
        sock_writer.write(b"hello")
        sock_writer.write_eof()
        assert await sock_reader.read() == b"HELLO"
        sock_writer.close()
        assert owner.host.peer_id in reader.host.peers()


async def test_cli_name_commands(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with asyncio.timeout(60), api_nodes(short_tmp) as [(owner, home1), (_, home2)]:
        def cli(home: Path, *args: str) -> int:
            return main(["--home", str(home), "name", *args])

        status = await asyncio.to_thread(cli, home1, "register", "frank.ovl", "--ip", "192.0.2.9",
                                         "--service", "http:8080", "--txt", "t1")
        assert status == 0
        assert "registered frank.ovl" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, home1, "list") == 0
        assert "frank.ovl" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, home2, "resolve", "frank.ovl", "--json") == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["record"]["owner"] == str(owner.host.peer_id)
        assert doc["record"]["ips"] == ["192.0.2.9"]
        assert await asyncio.to_thread(cli, home2, "resolve", "frank.ovl") == 0
        text = capsys.readouterr().out
        assert "(cache," in text and "service: http:8080" in text
        assert await asyncio.to_thread(cli, home2, "resolve", "ghost.ovl") == 4
        assert "name_not_found" in capsys.readouterr().err
        assert await asyncio.to_thread(cli, home1, "release", "frank.ovl") == 0
        assert "released frank.ovl" in capsys.readouterr().out
