"""Relayed throughput and the relay's CPU per MB, against direct QUIC in the same run.

    .venv/bin/python bench/bench_relay.py --mb 50

Three hosts on loopback, each in its own process so that every one has its
own interpreter (the machine has 2 cores; CPU time is what each process
reports with ``time.process_time()``, not wall clock):

- R: a relay (``RelayServer``, no circuit limits),
- C: the target; it holds a reservation on R and counts what it receives,
- A: this process, the sender.

Each round sends ``--mb`` MB (10**6 bytes) from A to C on one stream, first
over a direct QUIC connection, then over the relayed one
(``/…/p2p/R/p2p-circuit/p2p/C``: QUIC to R, a hop stream spliced to a stop
stream, Noise and yamux end to end).  The clock stops when C reports the
byte count.  Median of ``--rounds`` (default 3).

Knobs for profiling (applied in every process, so both ends agree):
``--splice-chunk`` (the relay's read size per direction), ``--yamux-window``
and ``--yamux-frame`` (the circuit's yamux session).  Leave them unset to
measure the defaults.

Output: one JSON object on stdout; a readable summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import struct
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from overlay.host import Host, NegotiatedStream
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.mux import YamuxConfig
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
SINK = "/bench/sink/1.0.0"
MB = 1_000_000
CHUNK = 256 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def apply_knobs(host: Host | None, args: argparse.Namespace) -> None:
    """The profiling knobs, set the same way in every process."""
    if args.splice_chunk:
        import overlay.relay.server as server

        server.SPLICE_CHUNK = args.splice_chunk  # type: ignore[misc]
    if host is not None and (args.yamux_window or args.yamux_frame):
        base = YamuxConfig()
        host.circuit_transport._yamux_config = YamuxConfig(
            receive_window=args.yamux_window or base.receive_window,
            max_frame_size=args.yamux_frame or base.max_frame_size,
            send_buffer_limit=max(base.send_buffer_limit, args.yamux_window or 0),
        )


async def _serve_until_stop(pipe: multiprocessing.connection.Connection) -> None:
    """Answer ``cpu`` with this process's CPU seconds until ``stop``."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    loop.add_reader(pipe.fileno(), wake.set)
    try:
        while True:
            await wake.wait()
            wake.clear()
            while pipe.poll():
                msg = pipe.recv()
                if msg == "stop":
                    return
                pipe.send(time.process_time())
    finally:
        loop.remove_reader(pipe.fileno())


async def _relay_main(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    key = Ed25519PrivateKey.generate()
    async with Host(key) as host:
        apply_knobs(host, args)
        await host.listen([LOOPBACK])
        limits = RelayLimits(circuit_data=None, circuit_duration=None)
        async with RelayServer(host, key, limits):
            pipe.send(f"{host.listen_addrs()[0]}/p2p/{host.peer_id}")
            await _serve_until_stop(pipe)


async def _sink(stream: NegotiatedStream) -> None:
    total = 0
    while chunk := await stream.read(CHUNK):
        total += len(chunk)
    stream.write(struct.pack(">Q", total))
    await stream.drain()
    await stream.close()


async def _target_main(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    relay_addr: str = pipe.recv()
    async with AsyncExitStack() as stack:
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        apply_knobs(host, args)
        await host.listen([LOOPBACK])
        host.set_stream_handler(SINK, _sink)
        client = await stack.enter_async_context(RelayClient(host))
        await host.connect(relay_addr)
        await client.reserve(PeerId.from_string(relay_addr.rsplit("/p2p/", 1)[1]))
        pipe.send((f"{host.listen_addrs()[0]}/p2p/{host.peer_id}",
                   f"{relay_addr}/p2p-circuit/p2p/{host.peer_id}"))
        await _serve_until_stop(pipe)


def child_main(role: str, pipe: multiprocessing.connection.Connection,
               args: argparse.Namespace) -> None:
    main = _relay_main if role == "relay" else _target_main
    asyncio.run(main(pipe, args))


class Child:
    def __init__(self, role: str, args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(role, child, args), daemon=True)
        self.proc.start()

    def cpu(self) -> float:
        self.pipe.send("cpu")
        value: float = self.pipe.recv()
        return value

    def stop(self) -> None:
        if self.proc.is_alive():
            self.pipe.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


async def send(host: Host, peer: PeerId, size: int) -> float:
    stream = await host.new_stream(peer, [SINK])
    block = os.urandom(CHUNK)
    start = time.perf_counter()
    left = size
    while left:
        n = min(left, CHUNK)
        stream.write(block if n == CHUNK else block[:n])
        await stream.drain()
        left -= n
    stream.write_eof()
    (got,) = struct.unpack(">Q", await stream.readexactly(8))
    elapsed = time.perf_counter() - start
    assert got == size, (got, size)
    return elapsed


async def sender(relay: Child, target: Child, direct_addr: str, circuit_addr: str,
                 args: argparse.Namespace) -> dict[str, Any]:
    size = args.mb * MB
    peer = PeerId.from_string(direct_addr.rsplit("/p2p/", 1)[1])
    samples: dict[str, list[float]] = {"direct": [], "relayed": []}
    cpu: dict[str, list[float]] = {"relay": [], "target_relayed": [], "sender_relayed": [],
                                   "target_direct": [], "sender_direct": []}
    for round_no in range(args.rounds):
        for kind in ("direct", "relayed"):
            # A fresh host per transfer: the relayed one must not find the
            # direct connection (the host prefers direct connections).
            async with Host(Ed25519PrivateKey.generate()) as host:
                apply_knobs(host, args)
                conn = await host.connect(direct_addr if kind == "direct" else circuit_addr)
                assert conn.path == kind, (conn.path, kind)
                r0, t0, s0 = relay.cpu(), target.cpu(), time.process_time()
                elapsed = await send(host, peer, size)
                r1, t1, s1 = relay.cpu(), target.cpu(), time.process_time()
            samples[kind].append(elapsed)
            cpu[f"target_{kind}"].append((t1 - t0) / args.mb)
            cpu[f"sender_{kind}"].append((s1 - s0) / args.mb)
            if kind == "relayed":
                cpu["relay"].append((r1 - r0) / args.mb)
            log(f"round {round_no + 1}: {kind:8} {args.mb / elapsed:7.2f} MB/s"
                + (f"  relay CPU {(r1 - r0) / args.mb * 1000:.1f} ms/MB" if kind == "relayed" else ""))
    direct = statistics.median(samples["direct"])
    relayed = statistics.median(samples["relayed"])
    return {
        "direct_MBps": round(args.mb / direct, 2),
        "relayed_MBps": round(args.mb / relayed, 2),
        "ratio_relayed_over_direct": round(direct / relayed, 3),
        "relay_cpu_s_per_MB": round(statistics.median(cpu["relay"]), 5),
        "cpu_s_per_MB": {k: round(statistics.median(v), 5) for k, v in cpu.items()},
        "direct_seconds": [round(x, 4) for x in samples["direct"]],
        "relayed_seconds": [round(x, 4) for x in samples["relayed"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50, help="MB (10**6 bytes) per transfer (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per path; the median is kept")
    parser.add_argument("--splice-chunk", type=int, default=0, help="relay read size (profiling)")
    parser.add_argument("--yamux-window", type=int, default=0, help="circuit yamux window (profiling)")
    parser.add_argument("--yamux-frame", type=int, default=0, help="circuit yamux frame size (profiling)")
    args = parser.parse_args()

    relay = Child("relay", args)
    target: Child | None = None
    try:
        relay_addr: str = relay.pipe.recv()
        target = Child("target", args)
        target.pipe.send(relay_addr)
        direct_addr, circuit_addr = target.pipe.recv()
        results = asyncio.run(sender(relay, target, direct_addr, circuit_addr, args))
    finally:
        if target is not None:
            target.stop()
        relay.stop()
    results.update({"mb": args.mb, "rounds": args.rounds,
                    "knobs": {"splice_chunk": args.splice_chunk, "yamux_window": args.yamux_window,
                              "yamux_frame": args.yamux_frame}})
    log(f"direct {results['direct_MBps']} MB/s, relayed {results['relayed_MBps']} MB/s, "
        f"ratio {results['ratio_relayed_over_direct']:.2f} (goal >= 0.5); relay CPU "
        f"{results['relay_cpu_s_per_MB'] * 1000:.1f} ms per relayed MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
