"""overlay against js-libp2p over QUIC-v1, measured in the same run.

    bash interop/js/setup.sh                 # once: Node 22 + js-libp2p
    .venv/bin/python bench/bench_js.py --mb 50

Four sender -> receiver pairs, each end in its own process on 127.0.0.1:

    js -> js             two ``interop/js/peer.mjs`` processes (Node 22)
    overlay -> overlay   a Host here, a Host in a child process
    overlay -> js        mixed
    js -> overlay        mixed

Both implementations are whole libp2p hosts (identify, ping, QUIC-v1 with the
libp2p TLS handshake, multistream-select) and speak ``/overlay-bench/1.0.0``:
the dialer writes an 8-byte big-endian length N and N bytes; the listener
reads exactly N bytes and answers the count (8 bytes), which stops the clock.

setup
    A fresh host, created and started before the clock starts, dials the
    receiver: QUIC + TLS handshake, one stream negotiated with
    multistream-select and a 1-byte transfer answered by the count.  Median
    of ``--setup-rounds``.  (overlay makes its dial endpoint and certificate
    on the first dial, so that is inside its interval.)
throughput_1
    ``--mb`` MB (10**6 bytes) on one stream of one connection.
throughput_10
    The same total over 10 concurrent streams of one connection.

Pairs alternate round by round (setup) and run by run (throughput, best of
``--repeat``), so load from other processes hits all alike.

Output: one JSON object on stdout: the figures per pair and
``ratios_overlay_over_js`` (overlay->overlay / js->js; throughput above 1
and setup below 1 favour overlay), plus the mixed pairs against js->js.  A
readable summary goes to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from multiaddr import Multiaddr

from overlay.host import Host, HostConfig
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.transport import TransportConfig

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "interop" / "js"
PEER_SCRIPT = JS_DIR / "peer.mjs"
BENCH = "/overlay-bench/1.0.0"
LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
MB = 1_000_000
CHUNK = 256 * 1024
STREAMS = 10
PAIRS = ("js->js", "overlay->overlay", "overlay->js", "js->overlay")
PROFILER: cProfile.Profile | None = None
"""Set by --profile-sender: on only during overlay's timed sends."""


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer
    (all sockets; Linux only, else 0)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                 if line.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process
    ``pid``, from /proc (Linux; 0.0 elsewhere).  Clock ticks are 10 ms, a
    small error against the seconds a 50 MB transfer takes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def host_config(args: argparse.Namespace) -> HostConfig:
    if args.loopback_datagram_size is None:
        return HostConfig()
    return HostConfig(transport=TransportConfig(loopback_datagram_size=args.loopback_datagram_size))


def run(main: Any, loop_kind: str) -> Any:
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


# --- overlay receiver (child process) ----------------------------------------


async def _bench_handler(stream: Any) -> None:
    (size,) = struct.unpack(">Q", await stream.readexactly(8))
    left = size
    while left:
        chunk = await stream.read(min(left, CHUNK))
        if not chunk:
            raise EOFError(f"stream ended {left} bytes short of {size}")
        left -= len(chunk)
    stream.write(struct.pack(">Q", size))
    await stream.close()


async def _receiver(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    async with Host(Ed25519PrivateKey.generate(), host_config(args)) as host:
        host.set_stream_handler(BENCH, _bench_handler)
        await host.listen([Multiaddr(LISTEN)])
        pipe.send(f"{host.listen_addrs()[0]}/p2p/{host.peer_id}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(pipe.fileno())


def receiver_main(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    profile = cProfile.Profile() if args.profile_receiver else None
    if profile is not None:
        profile.enable()
    run(lambda: _receiver(pipe, args), args.loop)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile_receiver)


class OverlayReceiver:
    def __init__(self, args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=receiver_main, args=(child, args), daemon=True)
        self._proc.start()
        if not self._pipe.poll(60):
            self.stop()
            raise RuntimeError("overlay receiver did not start in 60 s")
        self.addr: str = self._pipe.recv()
        assert self._proc.pid is not None
        self.pid: int = self._proc.pid

    def stop(self) -> None:
        if self._proc.is_alive():
            self._pipe.send("stop")
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()


# --- js processes ----------------------------------------------------------------


class JsPeer:
    """``peer.mjs --no-dht``: receiver (its listener) and sender (its commands)."""

    def __init__(self, node: str, socket_buffer: int | None) -> None:
        extra = [] if socket_buffer is None else ["--socket-buffer", str(socket_buffer)]
        self.proc = subprocess.Popen(
            [node, str(PEER_SCRIPT), "--no-dht", *extra], cwd=JS_DIR, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            self.stop()
            raise RuntimeError("js-libp2p peer exited before its ready line")
        self.info = ready
        self.addr: str = ready["addrs"][0]

    async def command(self, line: str) -> dict[str, Any]:
        # Blocking pipe I/O in a thread: the overlay receiver lives in another
        # process, and nothing else runs on this loop while js sends.
        reply = await asyncio.to_thread(self._command, line)
        if "error" in reply:
            raise RuntimeError(f"js-libp2p {line.split()[0]}: {reply['error']}")
        return reply

    def _command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        raw = self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"js-libp2p exited on {line.split()[0]}")
        reply: dict[str, Any] = json.loads(raw)
        return reply

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- overlay sender (this process) -------------------------------------------


async def _overlay_stream(host: Host, peer: PeerId, size: int, block: bytes) -> None:
    stream = await host.new_stream(peer, [BENCH])
    stream.write(struct.pack(">Q", size))
    left = size
    while left:
        n = min(left, CHUNK)
        stream.write(block if n == CHUNK else block[:n])
        await stream.drain()
        left -= n
    (got,) = struct.unpack(">Q", await stream.readexactly(8))
    assert got == size, (got, size)
    await stream.close()


async def overlay_send(addr: str, total: int, streams: int,
                       args: argparse.Namespace) -> tuple[float, float]:
    """Seconds for the transfer, and this process's CPU seconds during it."""
    peer = PeerId.from_string(addr.split("/p2p/")[1])
    block = os.urandom(CHUNK)
    async with Host(Ed25519PrivateKey.generate(), host_config(args)) as host:
        await host.connect(Multiaddr(addr))
        start, cpu = time.perf_counter(), time.process_time()
        if PROFILER is not None:
            PROFILER.enable()
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(streams):
                    tg.create_task(_overlay_stream(host, peer, total // streams, block))
        finally:
            if PROFILER is not None:
                PROFILER.disable()
        return time.perf_counter() - start, time.process_time() - cpu


async def overlay_setup(addr: str, args: argparse.Namespace) -> float:
    peer = PeerId.from_string(addr.split("/p2p/")[1])
    async with Host(Ed25519PrivateKey.generate(), host_config(args)) as host:
        start = time.perf_counter()
        await host.connect(Multiaddr(addr))
        await _overlay_stream(host, peer, 1, b"x")
        return time.perf_counter() - start


# --- the run -----------------------------------------------------------------------


async def measure(args: argparse.Namespace, js_send: JsPeer, js_recv: JsPeer,
                  ours: OverlayReceiver) -> dict[str, Any]:
    total = args.mb * MB
    receiver = {"js": js_recv.addr, "overlay": ours.addr}

    async def setup(pair: str) -> float:
        sender, target = pair.split("->")
        if sender == "js":
            return float((await js_send.command(f"bench_setup {receiver[target]} 1"))["ms"][0]) / 1000
        return await overlay_setup(receiver[target], args)

    receiver_pid = {"js": js_recv.proc.pid, "overlay": ours.pid}

    async def send(pair: str, streams: int) -> tuple[float, float, float]:
        """Seconds, sender CPU seconds, receiver CPU seconds."""
        sender, target = pair.split("->")
        before = process_cpu(receiver_pid[target])
        if sender == "js":
            reply = await js_send.command(f"bench_send {receiver[target]} {total} {streams}")
            assert reply["bytes"] == total // streams * streams
            seconds, sender_cpu = float(reply["seconds"]), float(reply["cpu_seconds"])
        else:
            seconds, sender_cpu = await overlay_send(receiver[target], total, streams, args)
        # The receiver idles between transfers, so what it used since
        # ``before`` is the transfer (plus the sender's connect, a few ms).
        return seconds, sender_cpu, process_cpu(receiver_pid[target]) - before

    # One untimed warm-up per pair: first-use costs (imports, JIT) are not setup.
    pairs = args.pairs
    for pair in pairs:
        await setup(pair)
    samples: dict[str, dict[str, list[float]]] = {
        p: {"setup": [], "t1": [], "t10": [], "cpu_send": [], "cpu_recv": [],
            "cpu_send_1": [], "cpu_send_10": [], "cpu_recv_1": [], "cpu_recv_10": []}
        for p in pairs
    }
    drops = {pair: 0 for pair in pairs}
    for i in range(args.setup_rounds):
        for pair in pairs:
            samples[pair]["setup"].append(await setup(pair))
    counts = [(n, key) for n, key in ((1, "t1"), (STREAMS, "t10")) if n in args.streams]
    for i in range(args.repeat):
        for streams, key in counts:
            for pair in pairs:
                before = udp_rcvbuf_errors()
                seconds, cpu_send, cpu_recv = await send(pair, streams)
                dropped = udp_rcvbuf_errors() - before
                drops[pair] += dropped
                samples[pair][key].append(seconds)
                samples[pair]["cpu_send"].append(cpu_send * 1000 / args.mb)
                samples[pair]["cpu_recv"].append(cpu_recv * 1000 / args.mb)
                suffix = "1" if streams == 1 else "10"
                samples[pair][f"cpu_send_{suffix}"].append(cpu_send * 1000 / args.mb)
                samples[pair][f"cpu_recv_{suffix}"].append(cpu_recv * 1000 / args.mb)
                log(f"run {i + 1}/{args.repeat} {pair:17} {streams:2} stream(s): "
                    f"{args.mb / seconds:7.1f} MB/s  CPU ms/MB sender {cpu_send * 1000 / args.mb:5.1f} "
                    f"receiver {cpu_recv * 1000 / args.mb:5.1f}  ({dropped} UDP receive-buffer drops)")
    def median(xs: list[float], scale: float = 1.0) -> float | None:
        return round(statistics.median(xs) * scale, 3) if xs else None

    def rate(xs: list[float]) -> float | None:
        return round(args.mb / min(xs), 2) if xs else None

    out: dict[str, Any] = {}
    for pair, s in samples.items():
        out[pair] = {
            "setup_ms_median": median(s["setup"], 1000),
            "setup_ms_samples": [round(x * 1000, 3) for x in s["setup"]],
            "throughput_1_seconds": [round(x, 4) for x in s["t1"]],
            "throughput_10_seconds": [round(x, 4) for x in s["t10"]],
            # Best of the repeats: the run least disturbed by other processes.
            "throughput_1_MBps": rate(s["t1"]),
            "throughput_10_MBps": rate(s["t10"]),
            # Medians over the repeats: steadier than the best on a shared machine.
            "throughput_1_MBps_median": median([args.mb / x for x in s["t1"]]),
            "throughput_10_MBps_median": median([args.mb / x for x in s["t10"]]),
            # Process CPU (user + system) per MB, median over all transfers
            # of the pair (1 and 10 streams); the samples are in transfer order.
            "cpu_ms_per_mb_sender": median(s["cpu_send"]),
            "cpu_ms_per_mb_receiver": median(s["cpu_recv"]),
            # The same split by stream count (medians over the repeats).
            "cpu_ms_per_mb_sender_1": median(s["cpu_send_1"]),
            "cpu_ms_per_mb_sender_10": median(s["cpu_send_10"]),
            "cpu_ms_per_mb_receiver_1": median(s["cpu_recv_1"]),
            "cpu_ms_per_mb_receiver_10": median(s["cpu_recv_10"]),
            "cpu_ms_per_mb_sender_samples": [round(x, 2) for x in s["cpu_send"]],
            "cpu_ms_per_mb_receiver_samples": [round(x, 2) for x in s["cpu_recv"]],
            # Machine-wide, during this pair's transfers: other processes add to it.
            "udp_rcvbuf_drops": drops[pair],
        }
    return out


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    def ratio(key: str) -> float | None:
        return round(a[key] / b[key], 3) if a[key] and b[key] else None

    return {
        "throughput_1": ratio("throughput_1_MBps"),
        "throughput_10": ratio("throughput_10_MBps"),
        "setup_time": ratio("setup_ms_median"),
    }


def js_node() -> str:
    proc = subprocess.run(["bash", str(JS_DIR / "setup.sh")], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit(f"interop/js/setup.sh failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50, help="MB (10**6 bytes) per transfer (default 50)")
    parser.add_argument("--setup-rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2, help="throughput runs per pair; best is kept")
    parser.add_argument("--loopback-datagram-size", type=int, default=None,
                        help="overlay's QUIC datagram size on loopback once the handshake is "
                             "confirmed (default: overlay's own, TransportConfig.loopback_datagram_size)")
    try:
        import uvloop  # noqa: F401

        default_loop = "uvloop"
    except ImportError:
        default_loop = "asyncio"
    parser.add_argument("--js-socket-buffer", type=int, default=None,
                        help="js-libp2p's UDP socket buffers in bytes (default: its own 500 kB; "
                             "overlay asks for 4 MiB)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=default_loop)
    parser.add_argument("--pairs", default=",".join(PAIRS),
                        help="comma-separated pairs to run (default: all four); the ratios "
                             "need js->js and overlay->overlay")
    parser.add_argument("--profile-sender", metavar="FILE", default=None,
                        help="write cProfile stats of overlay's sending process to FILE")
    parser.add_argument("--profile-receiver", metavar="FILE", default=None,
                        help="write cProfile stats of overlay's receiving process (its whole "
                             "life, set-ups included) to FILE")
    parser.add_argument("--streams", default=f"1,{STREAMS}",
                        help=f"stream counts to run, of 1 and {STREAMS} (default both)")
    parser.add_argument("--stock-send-loop", action="store_true",
                        help="A/B: overlay's sender (this process) builds packets with aioquic's "
                             "own _write_application instead of overlay's")
    args = parser.parse_args()
    args.streams = {int(n) for n in args.streams.split(",")}
    if not args.streams or args.streams - {1, STREAMS}:
        parser.error(f"--streams takes 1, {STREAMS} or both")
    global PROFILER
    if args.profile_sender is not None:
        PROFILER = cProfile.Profile()
    if args.stock_send_loop:
        from aioquic.quic.connection import QuicConnection

        from overlay.transport.aioquic_compat import Libp2pQuicConnection

        setattr(Libp2pQuicConnection, "_write_application", QuicConnection._write_application)
    args.pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = set(args.pairs) - set(PAIRS)
    if unknown:
        parser.error(f"unknown pairs {sorted(unknown)}; choose from {', '.join(PAIRS)}")

    node = js_node()
    results: dict[str, Any] = {"mb": args.mb, "loop": args.loop, "repeat": args.repeat,
                               "setup_rounds": args.setup_rounds, "loopback_datagram_size": args.loopback_datagram_size,
                               "js_socket_buffer": args.js_socket_buffer}
    js_recv = JsPeer(node, args.js_socket_buffer)
    js_send = JsPeer(node, args.js_socket_buffer)
    results["js_versions"] = js_recv.info["versions"]
    log(f"loop={args.loop} mb={args.mb} js={js_recv.info['versions']}")
    ours = OverlayReceiver(args)
    try:
        results.update(run(lambda: measure(args, js_send, js_recv, ours), args.loop))
    finally:
        ours.stop()
        js_send.stop()
        js_recv.stop()
    if PROFILER is not None:
        PROFILER.dump_stats(args.profile_sender)
    js = results.get("js->js")
    if js is not None and "overlay->overlay" in results:
        results["ratios_overlay_over_js"] = ratios(results["overlay->overlay"], js)
    if js is not None:
        results["ratios_mixed_over_js"] = {
            pair: ratios(results[pair], js) for pair in ("overlay->js", "js->overlay")
            if pair in results
        }
    for label, key, unit in (
        ("setup (dial + handshake + 1st stream)", "setup_ms_median", "ms"),
        ("1 stream", "throughput_1_MBps", "MB/s"),
        (f"{STREAMS} streams", "throughput_10_MBps", "MB/s"),
        ("CPU per MB, sender (median)", "cpu_ms_per_mb_sender", "ms"),
        ("CPU per MB, receiver (median)", "cpu_ms_per_mb_receiver", "ms"),
        ("CPU per MB, sender, 1 stream", "cpu_ms_per_mb_sender_1", "ms"),
        (f"CPU per MB, sender, {STREAMS} streams", "cpu_ms_per_mb_sender_10", "ms"),
    ):
        row = "  ".join(f"{pair} {results[pair][key] or 0:8.2f}" for pair in args.pairs)
        log(f"{label:38} {unit:4}  {row}")
    if "ratios_overlay_over_js" in results:
        log(f"overlay/js: {results['ratios_overlay_over_js']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
