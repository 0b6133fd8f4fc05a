#!/usr/bin/env python3
"""Run every benchmark and print ratios against same-run baselines.

    .venv/bin/python bench/run.py            # 100 MB transfers, simulator at 1k/10k
    .venv/bin/python bench/run.py --mb 20 --skip-sim

- transport: overlay's QUIC host vs raw aioquic (same TLS settings) and vs
  py-libp2p's QUIC (its own virtualenv, made by interop/setup.sh).
- relay: relayed vs direct QUIC throughput, the relay's CPU per MB
  (bench_relay.py); time to reachable behind a NAT (bench_reachable.py,
  root only: it skips otherwise).
- simulator: Kademlia lookups at 1,000 and 10,000 nodes (bench_sim.py).
- naming: resolution latency vs RTT (bench_naming.py), when present.

Each child prints JSON; this script only combines the figures.  The
machines are shared and noisy, which is why every ratio's two sides are
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def run_json(cmd: list[str]) -> dict[str, Any]:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON from {' '.join(cmd)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def pylibp2p_python() -> str:
    proc = subprocess.run(["bash", str(ROOT / "interop" / "setup.sh")], stdout=subprocess.PIPE,
                          text=True, cwd=ROOT, check=True)
    return proc.stdout.strip().splitlines()[-1]


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def transport(mb: int) -> None:
    ours_raw = run_json([sys.executable, str(BENCH / "bench_transport.py"), "--mb", str(mb)])
    py = run_json([pylibp2p_python(), str(BENCH / "bench_pylibp2p.py"), "--mb", str(mb)])
    ours, raw = ours_raw["ours"], ours_raw["raw"]
    print(f"\ntransport ({mb} MB transfers on loopback, loop={ours_raw['loop']})")
    print(f"  {'figure':<22}{'overlay':>10}{'aioquic':>10}{'py-libp2p':>11}{'vs aioquic':>12}{'vs py-libp2p':>14}  goal")
    rows = [
        ("setup ms (median)", "setup_ms_median", "<=1.3x aioquic"),
        ("1 stream MB/s", "throughput_1_MBps", ">=0.8x aioquic, >=3x py-libp2p"),
        ("10 streams MB/s", "throughput_10_MBps", ">=0.8x aioquic, >=3x py-libp2p"),
    ]
    for label, key, goal in rows:
        o, r, p = ours.get(key), raw.get(key), py.get(key)
        print(f"  {label:<22}{fmt(o):>10}{fmt(r):>10}{fmt(p):>11}{ratio(o, r):>12}{ratio(o, p):>14}  {goal}")
    # A whole Host dialing as a fresh peer (connect + one negotiated stream)
    # against the bare handshake + first stream of raw aioquic and py-libp2p.
    o, r, p = ours.get("host_setup_ms_median"), raw.get("setup_ms_median"), py.get("setup_ms_median")
    print(f"  {'host connect ms':<22}{fmt(o):>10}{fmt(r):>10}{fmt(p):>11}{ratio(o, r):>12}{ratio(o, p):>14}"
          f"  <=2x js-libp2p (12-40 ms); first in process {fmt(ours.get('host_setup_first_ms'))} ms")


def relay(mb: int) -> None:
    out = run_json([sys.executable, str(BENCH / "bench_relay.py"), "--mb", str(mb)])
    cpu = out["relayed_cpu_s_per_MB"]
    print(f"\nrelay ({mb} MB A->C on loopback, 3 processes, median of {out['rounds']})")
    print(f"  direct QUIC {out['direct_MBps']:.2f} MB/s, relayed {out['relayed_MBps']:.2f} MB/s, "
          f"ratio {out['ratio_relayed_over_direct']:.2f}x  goal >=0.5x")
    print(f"  CPU ms per relayed MB: relay {cpu['relay'] * 1000:.1f}, "
          f"sender {cpu['sender'] * 1000:.1f}, target {cpu['target'] * 1000:.1f} "
          f"(direct: sender {out['direct_cpu_s_per_MB']['sender'] * 1000:.1f}, "
          f"target {out['direct_cpu_s_per_MB']['target'] * 1000:.1f})")


def reachable() -> None:
    out = run_json([sys.executable, str(BENCH / "bench_reachable.py")])
    if "skipped" in out:
        print(f"\nreachable: skipped ({out['skipped']})")
        return
    print(f"\nreachable behind a NAT (netns lab, RTT {out['rtt_s'] * 1000:.0f} ms to the introducer)")
    for mode, label in (("static", "--relay"), ("autonat", "AutoNAT")):
        print(f"  {label:8} circuit address {out[f'{mode}_circuit_s']:.2f} s "
              f"({out[f'{mode}_circuit_rtts']} RTTs), relayed ping {out[f'{mode}_ping_s']:.2f} s "
              f"({out[f'{mode}_ping_rtts']} RTTs) after start  goal <=3 s")


def simulator(with_100k: bool) -> None:
    cmd = [sys.executable, str(BENCH / "bench_sim.py")]
    if with_100k:
        cmd.append("--with-100k")
    print("", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def naming() -> None:
    script = BENCH / "bench_naming.py"
    if script.exists():
        print("", flush=True)
        subprocess.run([sys.executable, str(script)], cwd=ROOT, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="MB per bulk transfer (default 100)")
    parser.add_argument("--skip-transport", action="store_true")
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--skip-reachable", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-naming", action="store_true")
    parser.add_argument("--with-100k", action="store_true", help="also simulate 100,000 nodes (slow)")
    args = parser.parse_args()
    if not args.skip_transport:
        transport(args.mb)
    if not args.skip_relay:
        relay(min(args.mb, 50))
    if not args.skip_reachable:
        reachable()
    if not args.skip_sim:
        simulator(args.with_100k)
    if not args.skip_naming:
        naming()
    return 0


if __name__ == "__main__":
    sys.exit(main())
