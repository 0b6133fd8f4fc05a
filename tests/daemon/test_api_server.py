"""The API server with ops defined here: framing, dispatch, errors, limits
and robustness, independent of the host."""

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.api import ApiCall, ApiServer, ApiServerConfig
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError, DaemonAlreadyRunning, DaemonError, DaemonNotRunning
from overlay.daemon.framing import read_message
from overlay.daemon.protocol import encode_message
from overlay.errors import DialError
from overlay.wire.varint import encode_uvarint


class Ops:
    def __init__(self) -> None:
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()

    def register(self, server: ApiServer) -> None:
        server.register("echo", self.echo)
        server.register("count", self.count)
        server.register("fail", self.fail)
        server.register("slow", self.slow)
        server.register("raw_echo", self.raw_echo)
        server.register("huge", self.huge)

    async def echo(self, call: ApiCall) -> Mapping[str, Any]:
        return {"args": dict(call.args)}

    async def count(self, call: ApiCall) -> Mapping[str, Any]:
        n = call.int_arg("n", 3, 0, 100)
        for i in range(n):
            await call.emit("tick", i=i)
        return {"total": n}

    async def fail(self, call: ApiCall) -> Mapping[str, Any]:
        raise DialError("nobody home")

    async def slow(self, call: ApiCall) -> Mapping[str, Any]:
        self.slow_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return {}

    async def raw_echo(self, call: ApiCall) -> Mapping[str, Any]:
        reader, writer = await call.take_over({"mode": "raw"})
        while data := await reader.read(4096):
            writer.write(data.upper())
            await writer.drain()
        writer.write_eof()
        return {}

    async def huge(self, call: ApiCall) -> Mapping[str, Any]:
        return {"blob": "x" * 5000}


async def start(path: Path, config: ApiServerConfig | None = None) -> tuple[ApiServer, Ops]:
    server = ApiServer(path, config)
    ops = Ops()
    ops.register(server)
    await server.__aenter__()
    return server, ops


async def test_requests_replies_and_events(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock")
        try:
            async with await ApiClient.connect(server.path) as client:
                reply = await client.call("echo", {"a": [1, 2], "b": "x"})
                assert reply == {"id": 1, "ok": True, "args": {"a": [1, 2], "b": "x"}}
                events: list[dict[str, Any]] = []
                reply = await client.call("count", {"n": 4}, on_event=events.append)
                assert [e["i"] for e in events] == [0, 1, 2, 3]
                assert all(e["event"] == "tick" and e["id"] == 2 for e in events)
                assert reply["total"] == 4
        finally:
            await server.__aexit__(None, None, None)


async def test_errors_are_typed_and_the_connection_survives(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock", ApiServerConfig(max_message_size=1024))
        try:
            async with await ApiClient.connect(server.path) as client:
                with pytest.raises(ApiError) as info:
                    await client.call("fail")
                assert (info.value.code, info.value.message) == ("dial_failed", "nobody home")
                with pytest.raises(ApiError) as info:
                    await client.call("nope")
                assert info.value.code == "unknown_op" and "echo" in info.value.message
                with pytest.raises(ApiError) as info:
                    await client.call("count", {"n": "many"})
                assert info.value.code == "bad_request" and "`n`" in info.value.message
                with pytest.raises(ApiError) as info:
                    await client.call("huge")
                assert info.value.code == "message_too_large"
                assert (await client.call("echo"))["ok"] is True
        finally:
            await server.__aexit__(None, None, None)


async def test_socket_is_mode_0600_and_removed_on_exit(short_tmp: Path) -> None:
    path = short_tmp / "api.sock"
    async with ApiServer(path):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not path.exists()


async def test_stale_socket_is_replaced_but_live_one_is_refused(short_tmp: Path) -> None:
    path = short_tmp / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    async with ApiServer(path):
        with pytest.raises(DaemonAlreadyRunning, match="already running"):
            async with ApiServer(path):
                pass
        assert path.exists()  # the refused server did not remove the live socket
    assert not path.exists()


async def test_refuses_a_regular_file_and_overlong_paths(short_tmp: Path) -> None:
    path = short_tmp / "api.sock"
    path.write_text("not a socket")
    with pytest.raises(DaemonError, match="not a socket"):
        async with ApiServer(path):
            pass
    assert path.read_text() == "not a socket"
    with pytest.raises(DaemonError, match="over the system limit"):
        async with ApiServer(short_tmp / ("x" * 120)):
            pass


async def test_client_reports_no_daemon(short_tmp: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="overlay daemon"):
        await ApiClient.connect(short_tmp / "api.sock")


async def raw_connection(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def test_malformed_frames_never_hurt_the_server(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock", ApiServerConfig(max_message_size=1024))
        try:
            # Bad JSON and non-object bodies: error reply, same connection keeps working.
            reader, writer = await raw_connection(server.path)
            for body in (b"{oops", b"[1]", b"\xff"):
                writer.write(encode_uvarint(len(body)) + body)
                reply = await read_message(reader)
                assert reply is not None and reply["error"]["code"] == "malformed_message"
            writer.write(encode_message({"id": 5, "op": "echo"}))
            reply = await read_message(reader)
            assert reply is not None and reply["id"] == 5 and reply["ok"] is True
            writer.write(encode_message({"id": "x", "op": "echo"}))
            reply = await read_message(reader)
            assert reply is not None and reply["error"]["code"] == "bad_request"
            writer.close()

            # An oversized length: typed error, then the server closes.
            reader, writer = await raw_connection(server.path)
            writer.write(encode_uvarint(1 << 30))
            reply = await read_message(reader)
            assert reply is not None and reply["error"]["code"] == "message_too_large"
            assert await reader.read() == b""
            writer.close()

            # A varint that never ends, and a truncated frame: dropped.
            for junk in (b"\xff" * 12, encode_uvarint(50) + b"{"):
                reader, writer = await raw_connection(server.path)
                writer.write(junk)
                writer.write_eof()
                assert await reader.read() == b""
                writer.close()

            async with await ApiClient.connect(server.path) as client:
                assert (await client.call("echo", {"still": "alive"}))["args"] == {"still": "alive"}
        finally:
            await server.__aexit__(None, None, None)


async def test_client_disconnect_mid_op_cancels_only_that_op(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, ops = await start(short_tmp / "api.sock")
        try:
            _, writer = await raw_connection(server.path)
            writer.write(encode_message({"id": 1, "op": "slow"}))
            await ops.slow_started.wait()
            writer.transport.abort()
            async with await ApiClient.connect(server.path) as client:
                assert (await client.call("echo"))["ok"] is True
            assert server.client_count >= 1
        finally:
            await server.__aexit__(None, None, None)
        assert ops.slow_cancelled.is_set()


async def test_shutdown_cancels_running_ops(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, ops = await start(short_tmp / "api.sock")
        reader, writer = await raw_connection(server.path)
        writer.write(encode_message({"id": 1, "op": "slow"}))
        await ops.slow_started.wait()
        await server.__aexit__(None, None, None)
        assert ops.slow_cancelled.is_set()
        assert await reader.read() == b""
        writer.close()


async def test_connection_limit(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock", ApiServerConfig(max_connections=1))
        try:
            async with await ApiClient.connect(server.path) as first:
                assert (await first.call("echo"))["ok"]
                reader, writer = await raw_connection(server.path)
                assert await reader.read() == b""  # closed at once
                writer.close()
                assert (await first.call("echo"))["ok"]
        finally:
            await server.__aexit__(None, None, None)


async def test_take_over_switches_to_raw_bytes_with_pipelined_data(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock")
        try:
            reader, writer = await raw_connection(server.path)
            # The raw bytes follow the request without waiting for the reply.
            writer.write(encode_message({"id": 1, "op": "raw_echo"}) + b"hello ")
            reply = await read_message(reader)
            assert reply == {"id": 1, "ok": True, "mode": "raw"}
            writer.write(b"world")
            writer.write_eof()
            assert await reader.read() == b"HELLO WORLD"
            writer.close()
        finally:
            await server.__aexit__(None, None, None)


def test_duplicate_op_is_refused(short_tmp: Path) -> None:
    server = ApiServer(short_tmp / "api.sock")
    Ops().register(server)
    with pytest.raises(ValueError, match="already registered"):
        server.register("echo", Ops().echo)
    assert "echo" in server.ops


async def test_random_garbage_on_many_connections(short_tmp: Path) -> None:
    import random

    rng = random.Random(20261123)
    async with asyncio.timeout(20):
        server, _ = await start(short_tmp / "api.sock", ApiServerConfig(max_message_size=4096))
        try:
            for _ in range(60):
                reader, writer = await raw_connection(server.path)
                kind = rng.randrange(3)
                if kind == 0:
                    junk = rng.randbytes(rng.randrange(1, 300))
                elif kind == 1:  # a plausible frame with a random body
                    body = rng.randbytes(rng.randrange(0, 200))
                    junk = encode_uvarint(len(body)) + body
                else:  # valid JSON with odd shapes
                    junk = encode_message(rng.choice([
                        {"id": 1, "op": "count", "n": -5}, {"id": 1, "op": "echo", "x": None},
                        {"id": None, "op": None}, {"id": 1, "op": "raw_echo"},
                        {"id": 2**53, "op": "echo"}, {"op": "count", "id": 3, "n": 10**6}]))
                writer.write(junk)
                writer.write_eof()
                with contextlib.suppress(ConnectionError):
                    await reader.read()  # the server answers or closes; it never hangs
                writer.close()
            async with await ApiClient.connect(server.path) as client:
                assert (await client.call("count", {"n": 2}))["total"] == 2
        finally:
            await server.__aexit__(None, None, None)
