"""js-libp2p's relayed throughput against its direct QUIC, in the same run:
the baseline for issue #8's 0.5x goal that ``bench_relay.py`` measures for
overlay.

    bash interop/js/setup.sh                 # once: Node 22 + js-libp2p
    .venv/bin/python bench/bench_relay_js.py --mb 50

Three js-libp2p processes (``interop/js/relay_bench.mjs``, Node 22) on
127.0.0.1, all over QUIC-v1 (``@chainsafe/libp2p-quic``), as in
``bench_relay.py``:

- R: a ``@libp2p/circuit-relay-v2`` server granting reservations without
  limits (``applyDefaultLimit: false``: no data or duration cap),
- C: the target; it reserves on R and counts what it receives,
- A: the sender; a fresh node per transfer, so the relayed dial cannot
  reuse the direct connection.

Each round sends ``--mb`` MB (10**6 bytes) from A to C on one stream,
first over a direct QUIC connection, then over
``/…/p2p/R/p2p-circuit/p2p/C`` (QUIC to R, R splices a hop stream to a stop
stream, Noise and yamux end to end).  The clock stops when C's 8-byte count
arrives.  Median of ``--rounds`` (default 3).  No DCUtR or AutoNAT service
runs, so the relayed connection stays relayed.

CPU per MB is each process's utime + stime from ``/proc/<pid>/stat`` (all
its threads, QUIC's native ones too) over the transfer, read after the
connection is up and after the count arrives (the clock tick is 10 ms:
use ``--mb 50`` or more).  ``cpu_bound_ratio`` is computed as in
``bench_relay.py``: ``min(N / sum, 1 / max)`` per path, relayed over direct.

``--pin relay=1,sender=0,target=0`` confines each process to CPUs.
``--socket-buffer BYTES`` sets every process's UDP socket buffers (the
QUIC transport's default is 500 kB; overlay asks for 4 MiB);
``udp_rcvbuf_drops`` counts the kernel's UDP receive-buffer drops
(machine-wide) during each path's transfers.

Output: one JSON object on stdout with ``bench_relay.py``'s keys; a
readable summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "interop" / "js"
SCRIPT = JS_DIR / "relay_bench.mjs"
MB = 1_000_000
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def js_node() -> str:
    proc = subprocess.run(["bash", str(JS_DIR / "setup.sh")], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit(f"interop/js/setup.sh failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it do not.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer
    (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def parse_pin(text: str) -> dict[str, set[int]]:
    """``relay=1,sender=0,target=0`` -> CPU sets per process (``0-1``, ``0+1``
    for several), as in ``bench_relay.py``."""
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


class JsProcess:
    """One ``relay_bench.mjs`` process; its ready line is ``info``."""

    def __init__(self, node: str, role: str, *extra: str, cpus: set[int] | None = None,
                 socket_buffer: int = 0) -> None:
        if socket_buffer:
            extra = (*extra, "--socket-buffer", str(socket_buffer))
        self.role = role
        # Pinned before exec: Node starts its worker threads (libuv, V8,
        # QUIC) at once, and each inherits the affinity of its creator.
        pin = None if not cpus else (lambda: os.sched_setaffinity(0, cpus))
        self.proc = subprocess.Popen([node, str(SCRIPT), role, *extra], cwd=JS_DIR, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=pin)
        assert self.proc.stdout is not None
        info: dict[str, Any] = json.loads(self.proc.stdout.readline() or "{}")
        if not info.get("ready"):
            self.stop()
            raise RuntimeError(f"js-libp2p {role} exited before its ready line")
        self.info = info

    def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self.proc.stdout.readline() or '{"error": "exited"}')
        if "error" in reply:
            raise RuntimeError(f"js-libp2p {self.role} {line.split()[0]}: {reply['error']}")
        return reply

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

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


def measure(relay: JsProcess, target: JsProcess, sender: JsProcess,
            args: argparse.Namespace) -> dict[str, Any]:
    direct_addr: str = target.info["addrs"][0]
    circuit_addr: str = target.info["circuit_addr"]
    size = args.mb * MB
    kinds = {"direct": direct_addr, "relayed": circuit_addr}
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, dict[str, list[float]]] = {
        kind: {"relay": [], "target": [], "sender": []} for kind in kinds}
    drops = {kind: 0 for kind in kinds}
    for round_no in range(args.rounds):
        for kind, addr in kinds.items():
            conn = sender.command(f"connect {addr}")
            try:
                assert conn["path"] == kind, (conn, kind)
                assert conn["limits"] is None, conn
                before = (relay.cpu(), target.cpu(), sender.cpu())
                dropped = udp_rcvbuf_errors()
                elapsed = float(sender.command(f"send {size}")["seconds"])
                dropped = udp_rcvbuf_errors() - dropped
                after = (relay.cpu(), target.cpu(), sender.cpu())
            finally:
                sender.command("close")
            samples[kind].append(elapsed)
            drops[kind] += dropped
            used = [b - a for a, b in zip(before, after)]
            for who, seconds in zip(("relay", "target", "sender"), used):
                cpu[kind][who].append(seconds / args.mb)
            log(f"round {round_no + 1}: {kind:8} {args.mb / elapsed:7.2f} MB/s  CPU ms/MB "
                f"relay {used[0] / args.mb * 1000:5.1f} target {used[1] / args.mb * 1000:5.1f} "
                f"sender {used[2] / args.mb * 1000:5.1f}  UDP drops {dropped}")
    direct = statistics.median(samples["direct"])
    relayed = statistics.median(samples["relayed"])
    out: dict[str, Any] = {
        "impl": "js-libp2p",
        "versions": relay.info["versions"],
        "direct_MBps": round(args.mb / direct, 2),
        "relayed_MBps": round(args.mb / relayed, 2),
        "ratio_relayed_over_direct": round(direct / relayed, 3),
    }
    for kind in kinds:
        out[f"{kind}_seconds"] = [round(x, 4) for x in samples[kind]]
        out[f"{kind}_cpu_s_per_MB"] = {who: round(statistics.median(v), 5)
                                       for who, v in cpu[kind].items()}
    out["relay_cpu_s_per_MB"] = out["relayed_cpu_s_per_MB"]["relay"]
    out["udp_rcvbuf_drops"] = drops
    if not args.pins:
        cores = len(os.sched_getaffinity(0))

        def bound(costs: list[float]) -> float:
            return min(cores / sum(costs), 1 / max(costs))

        out["cores"] = cores
        out["cpu_bound_ratio"] = round(
            bound([out["relayed_cpu_s_per_MB"][w] for w in ("relay", "target", "sender")])
            / bound([out["direct_cpu_s_per_MB"][w] for w in ("target", "sender")]), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50, help="MB (10**6 bytes) per transfer (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per path; the median is kept")
    parser.add_argument("--socket-buffer", type=int, default=0, metavar="BYTES",
                        help="UDP socket buffers of every process (default: the QUIC "
                             "transport's 500 kB)")
    parser.add_argument("--pin", default="", metavar="ROLE=CPUS,...",
                        help="CPU affinity per process, e.g. relay=1,sender=0,target=0 "
                             "(roles: relay, target, sender); default: none")
    args = parser.parse_args()
    args.pins = parse_pin(args.pin)
    node = js_node()
    procs: list[JsProcess] = []
    try:
        relay = JsProcess(node, "relay", cpus=args.pins.get("relay"),
                           socket_buffer=args.socket_buffer)
        procs.append(relay)
        relay_addr: str = relay.info["addrs"][0]
        target = JsProcess(node, "listener", relay_addr, cpus=args.pins.get("target"),
                            socket_buffer=args.socket_buffer)
        procs.append(target)
        sender = JsProcess(node, "dialer", cpus=args.pins.get("sender"),
                            socket_buffer=args.socket_buffer)
        procs.append(sender)
        results = measure(relay, target, sender, args)
    finally:
        for proc in reversed(procs):
            proc.stop()
    results.update({"mb": args.mb, "rounds": args.rounds, "pin": args.pin,
                    "socket_buffer": args.socket_buffer})
    log(f"js-libp2p: direct {results['direct_MBps']} MB/s, relayed {results['relayed_MBps']} MB/s, "
        f"ratio {results['ratio_relayed_over_direct']:.2f} (goal >= 0.5); relay CPU "
        f"{results['relay_cpu_s_per_MB'] * 1000:.1f} ms per relayed MB"
        + (f"; CPU bound on {results['cores']} cores: ratio {results['cpu_bound_ratio']:.2f}"
           if "cpu_bound_ratio" in results else ""))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
