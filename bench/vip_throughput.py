"""Virtual-IP throughput against a stream on the same QUIC connection, and
ping RTT over the vIPs (``overlay daemon --tun``).

    sudo .venv/bin/python bench/vip_throughput.py [--mb 20]

Builds ``vipa 10.77.0.1 ── vipb 10.77.0.2`` (a veth pair in network
namespaces, no route out), runs a daemon with ``--tun`` in each (B
bootstraps to A) and A registers a name.  From B it measures, over the one
QUIC connection between the daemons:

- ``vip4_MBps`` / ``vip6_MBps``: one TCP connection to A's vIPv4 / vIPv6
  sending ``--mb`` MB to a sink (timed inside the client, connect to the
  sink's byte count);
- ``stream_MBps``: ``overlay name connect NAME /bench/sink/1.0.0`` sending
  the same bytes over a libp2p stream to ``overlay serve … -- wc -c``
  (wall time minus that of a 1-byte run, so process start-up and the dial
  cancel out);
- ``ratio_vip4`` / ``ratio_vip6``: vIP over stream (the goal is >= 0.5);
- ``ping_ms_vip4`` / ``ping_ms_vip6``: median ICMP echo RTT over 20 pings.

Prints one JSON object.  Needs root; prints why and exits 2 otherwise.
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

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "interop"
for path in (ROOT, INTEROP):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from netns.daemons import overlay_argv, overlay_json, poll_json, start_daemon  # noqa: E402
from netns.lab import Lab  # noqa: E402

from interop.test_netns_vip import PING  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=20.0, help="megabytes per transfer")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("vip_throughput: needs root (network namespaces and /dev/net/tun)", file=sys.stderr)
        return 2
    total = int(args.mb * 1_000_000)
    with Lab() as lab:
        a, b = lab.host("vipa"), lab.host("vipb")
        lab.link(a, b, "10.77.0.1/24", "10.77.0.2/24")
        for node in (a, b):
            lab.run(node, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"])
        da = start_daemon(lab, a, "10.77.0.1", "--tun", "--dns", "127.0.0.1:0", "--no-mdns")
        db = start_daemon(lab, b, "10.77.0.2", "--tun", "--dns", "127.0.0.1:0", "--no-mdns",
                          "--bootstrap", da.addr)
        overlay_json(lab, da, "name", "register", NAME)
        resolved = poll_json(lab, db, ["name", "resolve", NAME], lambda r: bool(r.get("vip6")),
                             timeout=20)
        vip4, vip6 = resolved["vip4"], resolved["vip6"]

        sink = lab.popen(a, [sys.executable, "-c", SINK])
        port = int(sink.wait_for_line(lambda line: line.startswith("port"), 10).split()[1])
        results: dict[str, object] = {"mb": args.mb}
        for label, host in (("vip4", vip4), ("vip6", vip6)):
            done = lab.run(b, [sys.executable, "-c", CLIENT, host, str(port), str(total)],
                           timeout=300)
            got, seconds = done.stdout.split()
            assert int(got) == total, done
            results[f"{label}_MBps"] = round(total / float(seconds) / 1e6, 2)
            print(f"{label}: {results[label + '_MBps']} MB/s", file=sys.stderr)

        serve = lab.popen(a, overlay_argv(["--home", str(da.home), "serve", "/bench/sink/1.0.0",
                                           "--", "wc", "-c"]))
        serve.wait_for_line(lambda line: line.startswith("serving"), 15)
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
        results["stream_MBps"] = round(total / max(times[1] - times[0], 1e-6) / 1e6, 2)
        print(f"stream: {results['stream_MBps']} MB/s", file=sys.stderr)
        for label in ("vip4", "vip6"):
            results[f"ratio_{label}"] = round(
                float(results[f"{label}_MBps"]) / float(results["stream_MBps"]), 2)  # type: ignore[arg-type]
        for label, host in (("vip4", vip4), ("vip6", vip6)):
            done = lab.run(b, [sys.executable, "-c", PING, host, "20"], timeout=120)
            rtts = [float(x) for x in done.stdout.split()[1:]]
            results[f"ping_ms_{label}"] = round(statistics.median(rtts), 3) if rtts else None
        results["vip_status_b"] = overlay_status(lab, db)
        serve.stop()
        sink.stop()
    print(json.dumps(results))
    return 0


def overlay_status(lab: Lab, daemon: object) -> object:
    from netns.daemons import api_call

    reply = api_call(lab, daemon, "vip_status")  # type: ignore[arg-type]
    return {"packets": reply["packets"], "drops": reply["drops"]}


if __name__ == "__main__":
    sys.exit(main())
