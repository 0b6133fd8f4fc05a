"""Virtual-IP throughput and ping RTT against same-run baselines
(``overlay daemon --tun``).

    sudo .venv/bin/python bench/vip_throughput.py [--mb 20] [--nat] [--rounds 3]

Default lab: ``vipa 10.77.0.1 ── vipb 10.77.0.2`` (a veth pair in network
namespaces, no route out), a daemon with ``--tun`` in each (B bootstraps to
A).  With ``--nat``: the two-NAT lab of ``interop/test_netns_vip.py`` (A
behind a port-restricted cone, B behind a full cone, an introducer relaying
until DCUtR punches), so the vIPs ride a punched connection.  A registers a
name; from B, over the one QUIC connection between the daemons:

- throughput, each against ``stream_MBps`` (the goal is >= 0.5):
  - ``vip4_MBps`` / ``vip6_MBps``: one TCP connection to A's vIPv4 / vIPv6
    sending ``--mb`` MB to a sink (timed inside the client, connect to the
    sink's byte count);
  - ``iperf3_vip4_MBps`` / ``iperf3_vip6_MBps``: iperf3 (one TCP stream,
    ``--iperf-seconds``) to A's vIPs, the receiver's rate;
  - ``stream_MBps``: ``overlay name connect NAME /bench/sink/1.0.0``
    sending the ``--mb`` MB over a libp2p stream to ``overlay serve … --
    wc -c`` (wall time minus that of a 1-byte run, so process start-up and
    the dial cancel out);
  - ``ratio_*``: each vIP rate over ``stream_MBps``;
- ping RTT, against the lab's own (the goal is within 1 ms):
  ``ping_ms_lab`` pings A's address on the lab link (with ``--nat``: A's
  NAT's public address, the same path but the last veth hop), and
  ``ping_ms_vip4`` / ``ping_ms_vip6`` A's vIPs; ``--pings`` echoes each
  per round, the three targets taking turns echo by echo, so load changes
  (and the tail of the round's bulk transfers) hit all three alike.
  ``ping_extra_ms_*`` is the vIP median minus the lab median.

Prints one JSON object (per-round figures under ``rounds``).  Needs root;
prints why and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "interop"
for path in (ROOT, INTEROP):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from netns.daemons import (  # noqa: E402
    Daemon,
    api_call,
    overlay_argv,
    overlay_json,
    poll_json,
    start_daemon,
)
from netns.lab import Lab, Node  # noqa: E402

from interop.test_netns_vip import behind_two_nats, iperf3  # noqa: E402

PING_EACH = r"""
import os, socket, struct, sys, time
# ICMP echo to every host in turn, COUNT times: one host's echoes never all
# land in the same moment of the run (right after a bulk transfer, say).
hosts, count = sys.argv[1:-1], int(sys.argv[-1])
def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF
socks = {}
for host in hosts:
    v6 = ":" in host
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                      socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    s.settimeout(2)
    socks[host] = (s, v6)
# A raw ICMP socket sees every echo reply of the namespace: each host gets
# its own identifier, so one host's reply never counts for another.
idents = {host: (os.getpid() + 7919 * i) & 0xFFFF for i, host in enumerate(hosts)}
rtts = {host: [] for host in hosts}
for seq in range(count):
    for host in hosts:
        s, v6 = socks[host]
        body = struct.pack("!HH", idents[host], seq) + b"overlay-vip-ping"
        head = struct.pack("!BBH", 128 if v6 else 8, 0, 0)
        if not v6:  # the kernel fills ICMPv6 checksums
            head = struct.pack("!BBH", 8, 0, csum(head + body))
        start = time.monotonic()
        s.sendto(head + body, (host, 0))
        deadline = start + 2
        while time.monotonic() < deadline:
            try:
                data = s.recv(2048)
            except socket.timeout:
                break
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]
            if data[0] in (0, 129) and data[4:8] == body[:4]:
                rtts[host].append((time.monotonic() - start) * 1000)
                break
for host in hosts:
    print(host, *("%.3f" % r for r in rtts[host]), flush=True)
"""

SINK = r"""
import socket, sys
srv = socket.socket(socket.AF_INET6)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", 0)); srv.listen(4)
print("port", srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    n = 0
    while chunk := conn.recv(1 << 16):
        n += len(chunk)
    conn.sendall(str(n).encode()); conn.close()
"""

CLIENT = r"""
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = b"\0" * (1 << 16)
start = time.monotonic()
s = socket.create_connection((host, port), timeout=120)
sent = 0
while sent < total:
    sent += s.send(block[:min(len(block), total - sent)])
s.shutdown(socket.SHUT_WR)
got = int(s.recv(64))
print(got, time.monotonic() - start, flush=True)
"""

NAME = "vipbench.ovl"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and 1000")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mb", type=_positive, default=20.0, help="megabytes per transfer")
    parser.add_argument("--nat", action="store_true",
                        help="the two peers behind two different NATs, punched")
    parser.add_argument("--rounds", type=_count, default=3,
                        help="rounds of throughput and ping runs (default 3)")
    parser.add_argument("--pings", type=_count, default=10,
                        help="echoes per address per round (default 10)")
    parser.add_argument("--iperf-seconds", type=_count, default=5,
                        help="length of each iperf3 run (default 5)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("vip_throughput: needs root (network namespaces and /dev/net/tun)", file=sys.stderr)
        return 2
    with Lab() as lab:
        results = run(lab, args)
    print(json.dumps(results))
    return 0


def _start(lab: Lab, nat: bool) -> tuple[Node, Node, Daemon, Daemon, str]:
    """(A's node, B's node, A, B, the lab address B pings for the baseline)."""
    if nat:
        pair = behind_two_nats(lab)
        assert pair.topo.client2 is not None
        return pair.topo.client, pair.topo.client2, pair.a, pair.b, "203.0.113.1"
    a, b = lab.host("vipa"), lab.host("vipb")
    lab.link(a, b, "10.77.0.1/24", "10.77.0.2/24")
    for node in (a, b):
        lab.run(node, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"])
    da = start_daemon(lab, a, "10.77.0.1", "--tun", "--dns", "127.0.0.1:0", "--no-mdns")
    db = start_daemon(lab, b, "10.77.0.2", "--tun", "--dns", "127.0.0.1:0", "--no-mdns",
                      "--bootstrap", da.addr)
    return a, b, da, db, "10.77.0.1"


def _ping(lab: Lab, node: Node, addresses: list[str], count: int) -> dict[str, list[float]]:
    """RTTs in ms to each address, its echoes interleaved with the others'."""
    done = lab.run(node, [sys.executable, "-c", PING_EACH, *addresses, str(count)],
                   timeout=10 + 3 * count * len(addresses))
    out: dict[str, list[float]] = {}
    for line in done.stdout.splitlines():
        host, *values = line.split()
        out[host] = [float(x) for x in values]
    return out


def _stream_MBps(lab: Lab, b: Node, db: Daemon, total: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for size in (1, total):
            payload = Path(tmp) / f"p{size}"
            payload.write_bytes(b"\0" * size)
            with payload.open("rb") as stdin:
                start = time.monotonic()
                done = subprocess.run(
                    ["ip", "netns", "exec", b.namespace,
                     *overlay_argv(["--home", str(db.home), "name", "connect", NAME,
                                    "/bench/sink/1.0.0"])],
                    stdin=stdin, capture_output=True, timeout=300, check=False)
                times.append(time.monotonic() - start)
            assert done.returncode == 0 and int(done.stdout.split()[0]) == size, done
    return total / max(times[1] - times[0], 1e-6) / 1e6


def run(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    total = int(args.mb * 1_000_000)
    a, b, da, db, lab_address = _start(lab, args.nat)
    overlay_json(lab, da, "name", "register", NAME)
    resolved = poll_json(lab, db, ["name", "resolve", NAME], lambda r: bool(r.get("vip6")),
                         timeout=20)
    targets = {"vip4": resolved["vip4"], "vip6": resolved["vip6"]}
    sink = lab.popen(a, [sys.executable, "-c", SINK])
    port = int(sink.wait_for_line(lambda line: line.startswith("port"), 10).split()[1])
    serve = lab.popen(a, overlay_argv(["--home", str(da.home), "serve", "/bench/sink/1.0.0",
                                       "--", "wc", "-c"]))
    serve.wait_for_line(lambda line: line.startswith("serving"), 15)

    rounds: list[dict[str, float]] = []
    rtts: dict[str, list[float]] = {"lab": [], "vip4": [], "vip6": []}
    for index in range(args.rounds):
        row: dict[str, float] = {}
        # Stream first, then the vIPs, every round: a load change during
        # the run shows as a spread across rounds, not as a bias.
        row["stream_MBps"] = _stream_MBps(lab, b, db, total)
        for label, host in targets.items():
            done = lab.run(b, [sys.executable, "-c", CLIENT, host, str(port), str(total)],
                           timeout=300)
            got, seconds = done.stdout.split()
            assert int(got) == total, done
            row[f"{label}_MBps"] = total / float(seconds) / 1e6
            report = iperf3(lab, a, b, host, seconds=args.iperf_seconds)
            row[f"iperf3_{label}_MBps"] = report["end"]["sum_received"]["bits_per_second"] / 8e6
        pinged = (("lab", lab_address), *targets.items())
        by_host = _ping(lab, b, [host for _, host in pinged], args.pings)
        for label, host in pinged:
            got = by_host.get(host, [])
            rtts[label] += got
            row[f"ping_ms_{label}"] = statistics.median(got) if got else float("nan")
        rounds.append({k: round(v, 3) for k, v in row.items()})
        print(f"round {index + 1}: {rounds[-1]}", file=sys.stderr)

    results: dict[str, Any] = {"mb": args.mb, "nat": args.nat, "rounds": rounds,
                               "vip4": targets["vip4"], "vip6": targets["vip6"]}
    for key in rounds[0]:
        if key.endswith("_MBps"):
            values = [r[key] for r in rounds]
            results[key] = round(statistics.median(values), 2)
            results[f"{key}_range"] = [round(min(values), 2), round(max(values), 2)]
    for key in ("vip4_MBps", "vip6_MBps", "iperf3_vip4_MBps", "iperf3_vip6_MBps"):
        ratios = [r[key] / r["stream_MBps"] for r in rounds]
        name = "ratio_" + key.removesuffix("_MBps")
        results[name] = round(statistics.median(ratios), 2)
        results[f"{name}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
    for label, samples in rtts.items():
        results[f"ping_ms_{label}"] = round(statistics.median(samples), 3) if samples else None
        results[f"pings_{label}"] = len(samples)
    for label in ("vip4", "vip6"):
        if results[f"ping_ms_{label}"] is not None and results["ping_ms_lab"] is not None:
            results[f"ping_extra_ms_{label}"] = round(
                results[f"ping_ms_{label}"] - results["ping_ms_lab"], 3)
    status = api_call(lab, db, "vip_status")
    results["vip_status_b"] = {"packets": status["packets"], "drops": status["drops"],
                               "paths": [p["path"] for p in status.get("peers", [])]}
    serve.stop()
    sink.stop()
    return results


if __name__ == "__main__":
    sys.exit(main())
