"""A py-libp2p host (TCP, /noise, /yamux/1.0.0) with an echo protocol.

Run with the python of the py-libp2p venv.  Every network step is bounded
by ``trio.fail_after``.

``listen``                 print ``{"peer_id", "addrs"}``, serve
                           ``ECHO`` (read to EOF, write it back, close)
                           until stdin closes, then print
                           ``{"echoed": count, "errors": [...]}``.
``dial ADDR N SIZE``       connect to ADDR (``/ip4/…/tcp/N/p2p/ID``), open N
                           ``ECHO`` streams at once, send ``SIZE + 1000 * i``
                           bytes on stream i, half-close, check the echo and
                           print ``{"ok": count, "errors": [...]}``.
"""

from __future__ import annotations

import hashlib
import json
import sys

import multiaddr
import trio

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.exceptions import MuxedStreamEOF

ECHO = TProtocol("/overlay-test/echo/1.0.0")


def payload(i: int, size: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
    n = size + 1000 * i
    return (seed * (n // len(seed) + 1))[:n]


async def read_to_eof(stream) -> bytes:
    got = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except (StreamEOF, MuxedStreamEOF):
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


async def listen() -> None:
    host = new_host(key_pair=create_new_key_pair(), listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    echoed = [0]
    errors: list[str] = []

    async def handler(stream) -> None:
        try:
            data = await read_to_eof(stream)
            await stream.write(data)
            await stream.close()
            echoed[0] += 1
        except Exception as exc:  # reported to the test, which fails on it
            errors.append(f"{type(exc).__name__}: {exc}")

    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        host.set_stream_handler(ECHO, handler)
        addrs = [str(a) for a in host.get_addrs()]
        print(json.dumps({"peer_id": str(host.get_id()), "addrs": addrs}), flush=True)
        # Wait for the test to close our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)
    print(json.dumps({"echoed": echoed[0], "errors": errors}), flush=True)


async def dial(addr: str, count: int, size: int) -> None:
    host = new_host(key_pair=create_new_key_pair())
    ok = [0]
    errors: list[str] = []
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))

    async def one(i: int) -> None:
        try:
            stream = await host.new_stream(info.peer_id, [ECHO])
            data = payload(i, size)
            await stream.write(data)
            await stream.close()
            got = await read_to_eof(stream)
            if got == data:
                ok[0] += 1
            else:
                errors.append(f"stream {i}: {len(got)} bytes back of {len(data)}")
        except Exception as exc:
            errors.append(f"stream {i}: {type(exc).__name__}: {exc}")

    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with trio.fail_after(60):
            await host.connect(info)
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(one, i)
    print(json.dumps({"ok": ok[0], "errors": errors}), flush=True)


def main() -> None:
    if sys.argv[1] == "listen":
        trio.run(listen)
    else:
        trio.run(dial, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))


if __name__ == "__main__":
    main()
