"""Profile both ends of an overlay bulk transfer with cProfile.

    .venv/bin/python bench/profile_transport.py --mb 20 --streams 1

The receiver runs in a child process, the sender here, as in
bench_transport.py; each side writes a pstats file and prints its top
functions by own time, plus the CPU seconds it spent per MB moved.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import multiprocessing.connection
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_transport as bt  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _apply_windows(args: argparse.Namespace) -> None:
    """--window N: receive windows and drain bound of N MiB (connection 4x)."""
    if not args.window:
        return
    import dataclasses

    base = bt.transport_config

    def config(a: argparse.Namespace) -> bt.TransportConfig:
        size = int(args.window * (1 << 20))
        return dataclasses.replace(base(a), stream_receive_window=size,
                                   connection_receive_window=4 * size, send_buffer_limit=size)

    bt.transport_config = config


def _receiver(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    _apply_windows(args)
    profile = cProfile.Profile() if args.profile else None
    start = _cpu()
    if profile:
        profile.enable()
    bt.receiver_main("ours", pipe, args)
    if profile:
        profile.disable()
        profile.dump_stats(f"{args.out}/receiver.pstats")
    pipe.send(_cpu() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--datagram-size", type=int, default=1200)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--out", default="/tmp")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="only report CPU per MB (profiling itself costs CPU)")
    parser.add_argument("--window", type=float, default=0, help="MiB; see _apply_windows")
    args = parser.parse_args()
    _apply_windows(args)
    ctx = multiprocessing.get_context("spawn")
    pipe, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, args), daemon=True)
    proc.start()
    port, peer = pipe.recv()
    profile = cProfile.Profile() if args.profile else None
    cpu = _cpu()
    t0 = time.perf_counter()
    if profile:
        profile.enable()
    elapsed = asyncio.run(bt.ours_throughput(port, peer, args, args.streams))
    if profile:
        profile.disable()
        profile.dump_stats(f"{args.out}/sender.pstats")
    sender_cpu = _cpu() - cpu
    wall = time.perf_counter() - t0
    pipe.send("stop")
    receiver_cpu = pipe.recv()
    proc.join(10)
    print(f"{args.mb} MB, {args.streams} stream(s): {args.mb / elapsed:.1f} MB/s; CPU ms per MB: "
          f"sender {sender_cpu * 1000 / args.mb:.1f}, receiver {receiver_cpu * 1000 / args.mb:.1f}"
          f" (wall {wall:.2f}s; receiver CPU includes its start-up)")
    if profile:
        for side in ("sender", "receiver"):
            print(f"\n=== {side} ===")
            pstats.Stats(f"{args.out}/{side}.pstats").sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
