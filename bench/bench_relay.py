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

Profiling: ``--variant name:splice=N,window=N,frame=N`` adds a relayed
variant measured in the same rounds (the relay's read size per direction,
the circuit yamux session's window, frame size and send buffer limit), applied in every
process so both ends agree.  The headline figures are the defaults'.

``--pin relay=1,sender=0,target=0`` confines each process to CPUs (that
example gives the relay a core of its own and the two ends the other, in
the direct and the relayed transfers alike).

CPU bound: with N cores shared by the processes (unpinned), a transfer
moves at most ``min(N / sum, 1 / max)`` MB per second, ``sum`` and ``max``
over its processes' CPU per MB; ``cpu_bound_ratio`` is the relayed bound
over the direct one, the ratio the machine allows at the CPU costs
measured (the measured ratio is lower when the processes also wait).

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
import weakref
from contextlib import AsyncExitStack
from typing import Any

from overlay.host import Host, HostConfig, NegotiatedStream
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.mux import YamuxConfig
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits
from overlay.transport import TransportConfig

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
SINK = "/bench/sink/1.0.0"
MB = 1_000_000
CHUNK = 256 * 1024


def host_config(args: argparse.Namespace) -> HostConfig | None:
    """The same QUIC settings in all three processes (``--quic-window``,
    ``--quic-sendbuf``), so direct and relayed run under them alike."""
    if not args.quic_window and not args.quic_sendbuf:
        return None
    base = TransportConfig()
    window = args.quic_window or base.stream_receive_window
    return HostConfig(transport=TransportConfig(
        stream_receive_window=window,
        connection_receive_window=max(base.connection_receive_window, 4 * window),
        send_buffer_limit=args.quic_sendbuf or base.send_buffer_limit,
    ))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


Knobs = dict[str, int]


def parse_variant(text: str) -> tuple[str, Knobs]:
    """``name:splice=65536,window=1048576,frame=65507`` (any subset)."""
    name, _, rest = text.partition(":")
    knobs: Knobs = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in ("splice", "window", "frame", "sendbuf"):
            raise SystemExit(f"unknown knob {key!r} (splice, window, frame, sendbuf)")
        knobs[key] = int(value)
    return name, knobs


_DEFAULT_SPLICE: int | None = None
_DEFAULT_YAMUX: weakref.WeakKeyDictionary[Host, YamuxConfig | None] = weakref.WeakKeyDictionary()


def apply_knobs(host: Host | None, knobs: Knobs) -> None:
    """Set the profiling knobs in this process; an empty dict restores the
    defaults.  Every process gets the same knobs, so both ends agree."""
    global _DEFAULT_SPLICE
    import overlay.relay.splice as server

    if _DEFAULT_SPLICE is None:
        _DEFAULT_SPLICE = server.SPLICE_CHUNK
    server.SPLICE_CHUNK = knobs.get("splice", _DEFAULT_SPLICE)  # type: ignore[misc]
    if host is None:
        return
    transport = host.circuit_transport
    if host not in _DEFAULT_YAMUX:
        _DEFAULT_YAMUX[host] = transport._yamux_config
    default = _DEFAULT_YAMUX[host]
    # Without an override the transport picks per circuit (2 MiB on the
    # bench's unlimited circuits); a knob changes that choice, not the
    # spec's 256 KiB default.
    base = default or transport.yamux_config(None)
    if not knobs:
        transport._yamux_config = default
        return
    window = knobs.get("window", base.receive_window)
    transport._yamux_config = YamuxConfig(
        receive_window=window,
        max_frame_size=knobs.get("frame", base.max_frame_size),
        send_buffer_limit=knobs.get("sendbuf", base.send_buffer_limit),
    )


async def _serve_until_stop(pipe: multiprocessing.connection.Connection, host: Host) -> None:
    """Answer ``cpu`` with this process's CPU seconds, apply ``("knobs",
    dict)``, until ``stop``."""
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
                if isinstance(msg, tuple):
                    apply_knobs(host, msg[1])
                pipe.send(time.process_time())
    finally:
        loop.remove_reader(pipe.fileno())


async def _relay_main(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    key = Ed25519PrivateKey.generate()
    async with Host(key, host_config(args)) as host:
        await host.listen([LOOPBACK])
        limits = RelayLimits(circuit_data=None, circuit_duration=None)
        async with RelayServer(host, key, limits):
            pipe.send(f"{host.listen_addrs()[0]}/p2p/{host.peer_id}")
            await _serve_until_stop(pipe, host)


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
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(),
                                                    host_config(args)))
        await host.listen([LOOPBACK])
        host.set_stream_handler(SINK, _sink)
        client = await stack.enter_async_context(RelayClient(host))
        await host.connect(relay_addr)
        await client.reserve(PeerId.from_string(relay_addr.rsplit("/p2p/", 1)[1]))
        pipe.send((f"{host.listen_addrs()[0]}/p2p/{host.peer_id}",
                   f"{relay_addr}/p2p-circuit/p2p/{host.peer_id}"))
        await _serve_until_stop(pipe, host)


def parse_pin(text: str) -> dict[str, set[int]]:
    """``relay=1,sender=0,target=0`` -> CPU sets per process (``0-1``, ``0+1``
    for several)."""
    pins: dict[str, set[int]] = {}
    for item in filter(None, text.split(",")):
        role, _, cpus = item.partition("=")
        if role not in ("relay", "target", "sender"):
            raise SystemExit(f"unknown process {role!r} (relay, target, sender)")
        if "-" in cpus:
            low, _, high = cpus.partition("-")
            pins[role] = set(range(int(low), int(high) + 1))
        else:
            pins[role] = {int(c) for c in cpus.split("+")}
    return pins


def pin(role: str, args: argparse.Namespace) -> None:
    """Confine this process to the CPUs ``--pin`` gives ``role`` (all of
    them otherwise: a child must not inherit the sender's pin)."""
    if args.pins:
        os.sched_setaffinity(0, args.pins.get(role) or set(range(os.cpu_count() or 1)))


def child_main(role: str, pipe: multiprocessing.connection.Connection,
               args: argparse.Namespace) -> None:
    pin(role, args)
    main = _relay_main if role == "relay" else _target_main
    if not args.profile:
        asyncio.run(main(pipe, args))
        return
    import cProfile

    with cProfile.Profile() as profile:
        asyncio.run(main(pipe, args))
    profile.dump_stats(os.path.join(args.profile, f"{role}.pstats"))


class Child:
    def __init__(self, role: str, args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(role, child, args), daemon=True)
        self.proc.start()

    def knobs(self, knobs: Knobs) -> None:
        self.pipe.send(("knobs", knobs))
        self.pipe.recv()

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
    # The direct baseline, then each relayed variant, round by round, so
    # load from other processes hits them all alike.
    kinds = [("direct", {})] + [(f"relayed:{name}" if name != "default" else "relayed", knobs)
                                for name, knobs in args.variants]
    samples: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
    cpu: dict[str, dict[str, list[float]]] = {
        kind: {"relay": [], "target": [], "sender": []} for kind, _ in kinds}
    for round_no in range(args.rounds):
        for kind, knobs in kinds:
            relay.knobs(knobs)
            target.knobs(knobs)
            # A fresh host per transfer: the relayed one must not find the
            # direct connection (the host prefers direct connections).
            async with Host(Ed25519PrivateKey.generate(), host_config(args)) as host:
                apply_knobs(host, knobs)
                conn = await host.connect(direct_addr if kind == "direct" else circuit_addr)
                assert conn.path == kind.split(":")[0], (conn.path, kind)
                r0, t0, s0 = relay.cpu(), target.cpu(), time.process_time()
                # A stalled transfer is a finding, not a reason to hang.
                async with asyncio.timeout(args.stall_timeout):
                    elapsed = await send(host, peer, size)
                r1, t1, s1 = relay.cpu(), target.cpu(), time.process_time()
            samples[kind].append(elapsed)
            for who, used in (("relay", r1 - r0), ("target", t1 - t0), ("sender", s1 - s0)):
                cpu[kind][who].append(used / args.mb)
            log(f"round {round_no + 1}: {kind:16} {args.mb / elapsed:7.2f} MB/s  CPU ms/MB "
                f"relay {(r1 - r0) / args.mb * 1000:5.1f} target {(t1 - t0) / args.mb * 1000:5.1f} "
                f"sender {(s1 - s0) / args.mb * 1000:5.1f}")
    direct = statistics.median(samples["direct"])
    out: dict[str, Any] = {"direct_MBps": round(args.mb / direct, 2)}
    for kind, _ in kinds:
        seconds = statistics.median(samples[kind])
        prefix = kind.replace(":", "_")
        out[f"{prefix}_seconds"] = [round(x, 4) for x in samples[kind]]
        out[f"{prefix}_cpu_s_per_MB"] = {who: round(statistics.median(v), 5)
                                         for who, v in cpu[kind].items()}
        if kind != "direct":
            out[f"{prefix}_MBps"] = round(args.mb / seconds, 2)
            out[f"{prefix}_ratio_over_direct"] = round(direct / seconds, 3)
    if not args.pins:
        cores = len(os.sched_getaffinity(0))

        def bound(costs: list[float]) -> float:
            return min(cores / sum(costs), 1 / max(costs))

        relayed_cost = out[f"{kinds[1][0].replace(':', '_')}_cpu_s_per_MB"]
        direct_cost = out["direct_cpu_s_per_MB"]
        out["cores"] = cores
        out["cpu_bound_ratio"] = round(
            bound([relayed_cost[w] for w in ("relay", "target", "sender")])
            / bound([direct_cost[w] for w in ("target", "sender")]), 3)
    # The headline figures are the first variant's (the defaults unless told).
    first = kinds[1][0].replace(":", "_")
    out["relayed_MBps"] = out[f"{first}_MBps"]
    out["ratio_relayed_over_direct"] = out[f"{first}_ratio_over_direct"]
    out["relay_cpu_s_per_MB"] = out[f"{first}_cpu_s_per_MB"]["relay"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50, help="MB (10**6 bytes) per transfer (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per path; the median is kept")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KNOBS",
                        help="a relayed variant to compare in the same run, e.g. "
                             "big:splice=65536,window=1048576,frame=65507 (repeatable; "
                             "'default' is always measured first)")
    parser.add_argument("--stall-timeout", type=float, default=120.0, metavar="S",
                        help="fail a transfer that takes longer than this (default 120 s)")
    parser.add_argument("--quic-window", type=int, default=0, metavar="BYTES",
                        help="QUIC stream receive window in every process (the connection's "
                             "is 4x); default: the transport's")
    parser.add_argument("--quic-sendbuf", type=int, default=0, metavar="BYTES",
                        help="QUIC send_buffer_limit in every process; default: the transport's")
    parser.add_argument("--profile", metavar="DIR", default="",
                        help="cProfile the relay and the target; write DIR/relay.pstats, "
                             "DIR/target.pstats (slows everything: figures are not comparable)")
    parser.add_argument("--pin", default="", metavar="ROLE=CPUS,...",
                        help="CPU affinity per process, e.g. relay=1,sender=0,target=0 "
                             "(roles: relay, target, sender; CPUS: 0, 0-1 or 0+2); "
                             "default: none, the scheduler places all three")
    args = parser.parse_args()
    args.pins = parse_pin(args.pin)
    pin("sender", args)
    args.variants = [("default", {})] + [parse_variant(v) for v in args.variant]

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
    results.update({"mb": args.mb, "rounds": args.rounds, "pin": args.pin, "quic_window": args.quic_window,
                    "quic_sendbuf": args.quic_sendbuf,
                    "variants": {name: knobs for name, knobs in args.variants}})
    log(f"direct {results['direct_MBps']} MB/s, relayed {results['relayed_MBps']} MB/s, "
        f"ratio {results['ratio_relayed_over_direct']:.2f} (goal >= 0.5); relay CPU "
        f"{results['relay_cpu_s_per_MB'] * 1000:.1f} ms per relayed MB"
        + (f"; CPU bound on {results['cores']} cores: ratio {results['cpu_bound_ratio']:.2f}"
           if "cpu_bound_ratio" in results else ""))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
