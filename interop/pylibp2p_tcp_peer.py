"""A py-libp2p TCP peer (Noise only, yamux) for the Noise interop tests.

Run it with the python of the py-libp2p virtualenv (``interop/setup.sh``).
Security is restricted to ``/noise`` so a successful connection proves
that our Noise and py-libp2p's agree; the muxer is py-libp2p's default,
yamux.

Modes
-----
``listen``
    Listen on ``/ip4/127.0.0.1/tcp/0`` and print one JSON line
    ``{"peer_id", "addrs"}``; then answer commands from stdin, one JSON line
    each: ``peers`` (connected peer IDs), ``quit`` (or EOF).  The stock ping
    handler serves ``/ipfs/ping/1.0.0``.
``dial ADDR``
    Connect to ``/ip4/…/tcp/N/p2p/ID``, ping ``--pings`` times and print
    ``{"peer_id", "ping_rtts_ms"}`` (exit 0) or ``{"error"}`` (exit 1).

Every network operation is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import multiaddr
import trio

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.host.ping import ID as PING_ID
from libp2p.host.ping import PING_LENGTH
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

LISTEN_ADDR = "/ip4/127.0.0.1/tcp/0"
OP_TIMEOUT = 15.0


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def make_host() -> Any:
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        listen_addrs=[multiaddr.Multiaddr(LISTEN_ADDR)],
        enable_tcp=True,
    )


async def stdin_commands() -> AsyncIterator[str]:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    async with stdin:
        while True:
            while b"\n" not in buf:
                data = await stdin.receive_some(4096)
                if not data:
                    return
                buf += data
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().strip()
            if cmd in ("quit", "exit"):
                return
            if cmd:
                yield cmd


async def run_listen() -> int:
    host = make_host()
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN_ADDR)]):
        pid = host.get_id().to_base58()
        addrs = [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{pid}" for a in host.get_addrs()]
        emit({"peer_id": pid, "addrs": addrs})
        async for cmd in stdin_commands():
            if cmd == "peers":
                emit({"peers": [p.to_base58() for p in host.get_connected_peers()]})
            else:
                emit({"error": f"unknown command {cmd!r}"})
    return 0


async def ping(host: Any, peer_id: Any) -> float:
    stream = await host.new_stream(peer_id, [PING_ID])
    try:
        payload = os.urandom(PING_LENGTH)
        start = time.perf_counter()
        await stream.write(payload)
        echo = await read_exactly(stream, PING_LENGTH)
        if echo != payload:
            raise RuntimeError("ping payload mismatch")
        return (time.perf_counter() - start) * 1000.0
    finally:
        await stream.close()


async def run_dial(addr: str, pings: int) -> int:
    host = make_host()
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN_ADDR)]):
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            with trio.fail_after(OP_TIMEOUT):
                await host.connect(info)
            rtts = []
            for _ in range(pings):
                with trio.fail_after(OP_TIMEOUT):
                    rtts.append(await ping(host, info.peer_id))
        except Exception as exc:  # reported to the test, which fails on it
            emit({"error": repr(exc), "traceback": traceback.format_exc()})
            return 1
        emit({"peer_id": info.peer_id.to_base58(), "local_peer_id": host.get_id().to_base58(), "ping_rtts_ms": rtts})
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("listen")
    dial = sub.add_parser("dial")
    dial.add_argument("addr")
    dial.add_argument("--pings", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "listen":
        code = trio.run(run_listen)
    else:
        code = trio.run(run_dial, args.addr, max(1, args.pings))
    sys.stdout.flush()
    # py-libp2p can leave non-daemon threads behind; the answer is printed.
    os._exit(code)


if __name__ == "__main__":
    main()
