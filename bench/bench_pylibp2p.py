"""py-libp2p QUIC baseline: connection setup time and bulk throughput.

Run it with the python of the py-libp2p virtualenv that ``interop/setup.sh``
creates (py-libp2p must not share an environment with overlay)::

    interop/.venv-pylibp2p/bin/python bench/bench_pylibp2p.py --mb 100

The receiving host runs in a child process and the dialer in this one, so
each side has its own core, as in ``bench_transport.py``; both on 127.0.0.1.

What is measured
----------------
setup
    A fresh dialer host (created before the clock starts) dials the listener
    and opens one stream negotiated on ``/bench/echo/1.0.0``; the clock stops
    when a 1-byte echo has come back, so the QUIC+TLS handshake and one full
    multistream-select exchange are inside the interval.  The median over
    ``--setup-rounds`` is reported as ``setup_ms_median``.  The dialer allows
    one connection per peer, which skips a fixed 250 ms wait in py-libp2p's
    swarm (see ``make_host``); ``setup_stock_dialer_ms_median`` is the same
    measurement (5 rounds) with py-libp2p's default configuration.
throughput_1
    ``--mb`` MB (1 MB = 10**6 bytes) written on one ``/bench/sink/1.0.0``
    stream after an 8-byte length header; the receiver reads that many bytes
    and answers with the count, which stops the clock.
throughput_10
    The same ``--mb`` MB in total, split over 10 concurrent streams of one
    connection; aggregate MB/s.

Throughput keeps the best of ``--repeat`` runs (all run times are listed in
``*_seconds``).

Output: one JSON object on stdout, e.g.
``{"setup_ms_median": 9.1, "throughput_1_MBps": 20.3, "throughput_10_MBps": 18.7, ...}``
plus the raw bytes/seconds behind every figure.  Logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import multiprocessing
import os
import statistics
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import multiaddr
import trio

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.transport.quic.config import QUICTransportConfig

ECHO = TProtocol("/bench/echo/1.0.0")
SINK = TProtocol("/bench/sink/1.0.0")
LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
CHUNK = 64 * 1024
MB = 1_000_000
STREAMS = 10


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_host(stock_dialer: bool = False) -> Any:
    """A QUIC-only host. Unless ``stock_dialer``, it allows one connection per
    peer: with the default (3) py-libp2p's swarm waits out its 250 ms
    happy-eyeballs delay after every successful dial, even with a single
    address, which would measure a timer instead of the transport."""
    extra: dict[str, Any] = {}
    if not stock_dialer:
        extra["quic_transport_opt"] = QUICTransportConfig(max_connections_per_peer=1)
    return new_host(
        key_pair=create_new_key_pair(),
        listen_addrs=[multiaddr.Multiaddr(LISTEN)],
        enable_quic=True,
        enable_tcp=False,
        **extra,
    )


async def read_exactly(stream: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


async def wait_for_close(stream: Any) -> None:
    """Let the dialer close first. py-libp2p 0.8.1 has a read/FIN race: a
    reply whose FIN arrives with it can be reported as EOF and lost (see
    interop/README.md), so the replies here are never followed by our FIN."""
    try:
        while await stream.read(CHUNK):
            pass
    except Exception:  # EOF and closed streams surface as exceptions
        return


async def handle_echo(stream: Any) -> None:
    try:
        data = await stream.read(1)
        if data:
            await stream.write(data)
            await wait_for_close(stream)
    finally:
        await stream.close()


async def handle_sink(stream: Any) -> None:
    # The sender announces the length instead of half-closing: in py-libp2p
    # 0.8.1 a FIN sent right after bulk data can overtake the last bytes of
    # the stream (the reader sees EOF early), which would corrupt the count.
    try:
        (expected,) = struct.unpack(">Q", await read_exactly(stream, 8))
        total = 0
        while total < expected:
            chunk = await stream.read(min(CHUNK, expected - total))
            if not chunk:
                break
            total += len(chunk)
        await stream.write(struct.pack(">Q", total))
        await wait_for_close(stream)
    finally:
        await stream.close()


async def send_bulk(host: Any, peer: Any, nbytes: int) -> None:
    stream = await host.new_stream(peer, [SINK])
    block = os.urandom(CHUNK)
    await stream.write(struct.pack(">Q", nbytes))
    left = nbytes
    while left > 0:
        n = min(CHUNK, left)
        await stream.write(block if n == CHUNK else block[:n])
        left -= n
    (echoed,) = struct.unpack(">Q", await read_exactly(stream, 8))
    if echoed != nbytes:
        raise RuntimeError(f"receiver counted {echoed} bytes, sent {nbytes}")
    await stream.close()


async def measure_setup(
    info: PeerInfo, rounds: int, timeout: float, stock_dialer: bool = False
) -> list[float]:
    samples: list[float] = []
    for _ in range(rounds):
        client = make_host(stock_dialer)
        async with client.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
            with trio.fail_after(timeout):
                t0 = time.perf_counter()
                await client.connect(info)
                stream = await client.new_stream(info.peer_id, [ECHO])
                await stream.write(b"x")
                if await read_exactly(stream, 1) != b"x":
                    raise RuntimeError("echo mismatch")
                samples.append((time.perf_counter() - t0) * 1000.0)
                await stream.close()
            await client.disconnect(info.peer_id)
    return samples


async def measure_throughput(
    info: PeerInfo, nbytes: int, streams: int, timeout: float
) -> float:
    client = make_host()
    async with client.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
        with trio.fail_after(timeout):
            await client.connect(info)
            # One warm-up stream so that stream negotiation and identify
            # traffic triggered by connect are not inside the interval.
            await send_bulk(client, info.peer_id, CHUNK)
            share, extra = divmod(nbytes, streams)
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(streams):
                    nursery.start_soon(
                        send_bulk, client, info.peer_id, share + (1 if i < extra else 0)
                    )
            elapsed = time.perf_counter() - t0
        await client.disconnect(info.peer_id)
    return elapsed


async def serve(pipe: Connection) -> None:
    """The receiving host, run in a child process."""
    server = make_host()
    server.set_stream_handler(ECHO, handle_echo)
    server.set_stream_handler(SINK, handle_sink)
    async with server.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
        pipe.send((server.get_id().to_base58(), [str(a) for a in server.get_addrs()]))
        # Serve until the parent says stop or goes away (EOFError).
        with contextlib.suppress(EOFError):
            await trio.to_thread.run_sync(pipe.recv, abandon_on_cancel=True)


def receiver_main(pipe: Connection) -> None:
    trio.run(serve, pipe)
    os._exit(0)


async def run(args: argparse.Namespace, info: PeerInfo) -> dict[str, Any]:
    nbytes = int(args.mb * MB)
    result: dict[str, Any] = {
        "implementation": "py-libp2p",
        "version": importlib.metadata.version("libp2p"),
        "mb": args.mb,
        "bytes": nbytes,
    }
    samples = await measure_setup(info, args.setup_rounds, args.timeout)
    result["setup_ms_median"] = statistics.median(samples)
    result["setup_ms_samples"] = samples
    log(f"setup median {result['setup_ms_median']:.2f} ms")
    stock = await measure_setup(info, min(args.setup_rounds, 5), args.timeout, stock_dialer=True)
    result["setup_stock_dialer_ms_median"] = statistics.median(stock)
    log(f"setup median, stock dialer {statistics.median(stock):.2f} ms")

    for count in (1, STREAMS):
        key = f"throughput_{count}"
        try:
            runs = [
                await measure_throughput(info, nbytes, count, args.timeout)
                for _ in range(args.repeat)
            ]
        except (trio.TooSlowError, Exception) as exc:
            # A baseline that cannot finish is reported, not fatal: the other
            # figures remain usable.
            result[f"{key}_MBps"] = None
            result[f"{key}_error"] = repr(exc)
            log(f"{count} stream(s): failed: {exc!r}")
            continue
        # Best of --repeat, as bench_transport.py keeps it.
        secs = min(runs)
        result[f"{key}_MBps"] = nbytes / MB / secs
        result[f"{key}_seconds"] = runs
        log(f"{count} stream(s): {nbytes / MB / secs:.2f} MB/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=float, default=100.0, help="MB per transfer")
    parser.add_argument("--setup-rounds", type=int, default=20)
    parser.add_argument(
        "--repeat", type=int, default=1, help="throughput runs per case; best is kept"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="bound on each measurement (s)"
    )
    args = parser.parse_args()
    if args.mb <= 0 or args.setup_rounds < 1 or args.repeat < 1:
        parser.error("--mb must be > 0, --setup-rounds and --repeat >= 1")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    receiver = ctx.Process(target=receiver_main, args=(child,), daemon=True)
    receiver.start()
    try:
        if not parent.poll(60):
            raise SystemExit("the receiving py-libp2p host did not start within 60 s")
        peer_id, addrs = parent.recv()
        log(f"receiver {addrs}")
        info = PeerInfo(ID.from_base58(peer_id), [multiaddr.Multiaddr(a) for a in addrs])
        result = trio.run(run, args, info)
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        receiver.join(10)
        if receiver.is_alive():
            receiver.kill()
            receiver.join()
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
    # py-libp2p may leave non-daemon helper threads behind.
    os._exit(0)


if __name__ == "__main__":
    main()
