"""The API server under idle and hostile local clients (all the same
user): idle connections time out, the longest-idle one makes room for a
new client, and a burst of refusals is one log line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from overlay.daemon.api import ApiServerConfig
from overlay.daemon.client import ApiClient
from overlay.daemon.protocol import encode_message
from tests.daemon.test_api_server import raw_connection, start


async def test_idle_connections_time_out(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock", ApiServerConfig(idle_timeout=0.3))
        try:
            reader, writer = await raw_connection(server.path)
            assert await reader.read() == b""  # closed for idleness
            writer.close()
            assert server.limit_hits.snapshot() == {"api.idle_timeout": 1}
            # A client that asks in time is served.
            async with await ApiClient.connect(server.path) as client:
                assert (await client.call("echo"))["ok"]
        finally:
            await server.__aexit__(None, None, None)


async def test_idle_clients_make_room_for_the_cli(short_tmp: Path) -> None:
    config = ApiServerConfig(max_connections=4, min_idle_to_evict=0.0, min_idle_unused=0.0)
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock", config)
        try:
            idle = [await raw_connection(server.path) for _ in range(4)]
            # The server has counted them all before the CLI comes (no round
            # trip: that would make them used clients, evicted after unused ones).
            while server.client_count < 4:
                server.clients_changed.clear()
                await server.clients_changed.wait()
            async with await ApiClient.connect(server.path) as client:
                assert (await client.call("echo"))["ok"]
                # The server is still full: the next one evicts again.
                async with await ApiClient.connect(server.path) as second:
                    assert (await second.call("echo"))["ok"]
            # The longest idle ones went first.
            assert await idle[0][0].read() == b""
            assert await idle[1][0].read() == b""
            assert server.limit_hits.snapshot()["api.evicted_idle"] == 2
            for _, writer in idle:
                writer.close()
                await writer.wait_closed()
        finally:
            await server.__aexit__(None, None, None)


async def test_busy_clients_are_not_evicted_and_refusals_log_once(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = ApiServerConfig(max_connections=1, min_idle_to_evict=0.0, min_idle_unused=0.0)
    async with asyncio.timeout(10):
        server, ops = await start(short_tmp / "api.sock", config)
        try:
            reader, writer = await raw_connection(server.path)
            writer.write(encode_message({"id": 1, "op": "slow", "args": {}}))
            await writer.drain()
            await ops.slow_started.wait()
            with caplog.at_level(logging.WARNING, logger="overlay.daemon.api"):
                for _ in range(5):
                    refused_reader, refused_writer = await raw_connection(server.path)
                    assert await refused_reader.read() == b""
                    refused_writer.close()
            assert server.limit_hits.snapshot() == {"api.connections": 5}
            assert len([r for r in caplog.records if "api.connections" in r.getMessage()]) == 1
            assert not ops.slow_cancelled.is_set()
            writer.close()
        finally:
            await server.__aexit__(None, None, None)
