"""py-libp2p's own yamux over a plain loopback TCP connection.

Run with the python of the py-libp2p venv (``interop/setup.sh`` prints it),
never with the project's.  No security layer: this isolates the muxer, so
a failure here is a yamux disagreement and nothing else.

``listen``             print ``{"port": N}``, accept one connection as the
                       yamux server, echo every stream until the connection
                       ends, then print ``{"echoed": count, "errors": [...]}``.
``dial PORT N SIZE``   connect as the yamux client, open N streams at once,
                       send ``SIZE + 1000 * i`` bytes on stream i, half-close,
                       read the echo, then print ``{"ok": count, "errors": [...]}``.
"""

from __future__ import annotations

import hashlib
import json
import sys

import trio

from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamEOF
from libp2p.stream_muxer.yamux.yamux import Yamux


class RawConn:
    """The few methods of ISecureConn that py-libp2p's Yamux calls."""

    def __init__(self, stream: trio.SocketStream, is_initiator: bool) -> None:
        self.stream = stream
        self.is_initiator = is_initiator
        self._lock = trio.Lock()

    async def read(self, n: int | None = None) -> bytes:
        return await self.stream.receive_some(n or 65536)

    async def write(self, data: bytes) -> None:
        async with self._lock:
            await self.stream.send_all(data)

    async def close(self) -> None:
        await self.stream.aclose()

    def get_remote_address(self) -> None:
        return None


def payload(i: int, size: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
    n = size + 1000 * i
    return (seed * (n // len(seed) + 1))[:n]


async def echo(stream, counter: list[int], errors: list[str]) -> None:
    try:
        while True:
            try:
                data = await stream.read(65536)
            except MuxedStreamEOF:
                break
            if not data:
                break
            await stream.write(data)
        await stream.close()
        counter[0] += 1
    except Exception as exc:  # reported to the test, which fails on it
        errors.append(f"{type(exc).__name__}: {exc}")


async def listen() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    stream = await listeners[0].accept()
    mux = Yamux(RawConn(stream, False), ID(b"\x00\x02py"), is_initiator=False)
    counter = [0]
    errors: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mux.start)
            await mux.event_started.wait()
            async with trio.open_nursery() as echoes:
                while True:
                    try:
                        muxed = await mux.accept_stream()
                    except Exception:
                        break
                    echoes.start_soon(echo, muxed, counter, errors)
            nursery.cancel_scope.cancel()
    print(json.dumps({"echoed": counter[0], "errors": errors}), flush=True)


async def dial(port: int, count: int, size: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    mux = Yamux(RawConn(stream, True), ID(b"\x00\x02py"), is_initiator=True)
    ok = [0]
    errors: list[str] = []

    async def one(i: int) -> None:
        try:
            muxed = await mux.open_stream()
            data = payload(i, size)
            await muxed.write(data)
            await muxed.close()
            got = bytearray()
            while True:
                try:
                    chunk = await muxed.read(65536)
                except MuxedStreamEOF:
                    break
                if not chunk:
                    break
                got += chunk
            if bytes(got) == data:
                ok[0] += 1
            else:
                errors.append(f"stream {i}: {len(got)} bytes back of {len(data)}")
        except Exception as exc:
            errors.append(f"stream {i}: {type(exc).__name__}: {exc}")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mux.start)
            await mux.event_started.wait()
            async with trio.open_nursery() as streams:
                for i in range(count):
                    streams.start_soon(one, i)
            await mux.close()
            nursery.cancel_scope.cancel()
    print(json.dumps({"ok": ok[0], "errors": errors}), flush=True)


def main() -> None:
    if sys.argv[1] == "listen":
        trio.run(listen)
    else:
        trio.run(dial, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))


if __name__ == "__main__":
    main()
