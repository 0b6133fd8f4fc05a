"""What the user-space delay costs: RTT, TCP and UDP throughput across one
link, plain veth against the forwarder of ``delay.py``.

    sudo .venv/bin/python interop/netns/link_bench.py [--seconds 2]

Builds ``left 192.0.2.1 ── right 192.0.2.2`` once per case (a plain veth;
the forwarder with 0 ms; with 20 ms each way), and prints one JSON line per
case.  The numbers are in README.md here and in docs/nat.md.  Runs only on
request; the tests check the delay itself (test_netns_natkinds.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from netns.delay import delayed_link  # noqa: E402
from netns.lab import Lab  # noqa: E402

TCP_SINK = r"""
import socket, sys, time
srv = socket.socket(); srv.bind((sys.argv[1], 5001)); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept(); total = 0; start = time.monotonic()
while chunk := conn.recv(1 << 16):
    total += len(chunk)
print(total, time.monotonic() - start, flush=True)
"""
TCP_SOURCE = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5001)); end = time.monotonic() + float(sys.argv[2])
block = b"x" * (1 << 16)
while time.monotonic() < end:
    s.sendall(block)
s.close()
"""
UDP_SINK = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22); s.bind((sys.argv[1], 5002))
print("ready", flush=True)
s.settimeout(5); n = 0; first = last = 0.0
try:
    while True:
        s.recv(2048); last = time.monotonic(); first = first or last; n += 1
        s.settimeout(1)
except socket.timeout:
    pass
print(n, last - first, flush=True)
"""
UDP_SOURCE = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rate = float(sys.argv[3]); count = int(float(sys.argv[2]) * rate); payload = b"x" * 1200
start = time.monotonic()
for i in range(count):
    while time.monotonic() < start + i / rate:
        pass
    s.sendto(payload, (sys.argv[1], 5002))
print(count, flush=True)
"""
RTT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
out = []
for i in range(int(sys.argv[2])):
    t = time.monotonic(); s.sendto(b"p", (sys.argv[1], 5003)); s.recv(16)
    out.append((time.monotonic() - t) * 1000)
print(*out, flush=True)
"""
ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 5003))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(16); s.sendto(data, peer)
"""


def bench(delay_ms: float | None, seconds: float, udp_rates: list[float]) -> dict[str, object]:
    with Lab(prefix="ovlbench") as lab:
        left, right = lab.host("left"), lab.host("right")
        if delay_ms is None:
            lab.link(left, right, "192.0.2.1/24", "192.0.2.2/24", a_ifname="lan", b_ifname="lan")
        else:
            delayed_link(lab, left, right, "192.0.2.1/24", "192.0.2.2/24", delay_ms=delay_ms,
                         a_ifname="lan", b_ifname="lan")
        py = sys.executable
        echo = lab.popen(right, [py, "-c", ECHO, "192.0.2.2"])
        echo.wait_for_line(lambda line: line == "ready", 10)
        rtts = [float(x) for x in
                lab.run(left, [py, "-c", RTT, "192.0.2.2", "50"], timeout=60).stdout.split()]
        sink = lab.popen(right, [py, "-c", TCP_SINK, "192.0.2.2"])
        sink.wait_for_line(lambda line: line == "ready", 10)
        lab.run(left, [py, "-c", TCP_SOURCE, "192.0.2.2", str(seconds)], timeout=seconds + 30)
        total, took = sink.wait_for_line(lambda line: " " in line, 30).split()
        udp = []
        for rate in udp_rates:
            usink = lab.popen(right, [py, "-c", UDP_SINK, "192.0.2.2"])
            usink.wait_for_line(lambda line: line == "ready", 10)
            sent = lab.run(left, [py, "-c", UDP_SOURCE, "192.0.2.2", str(seconds), str(rate)],
                           timeout=seconds + 30).stdout.strip()
            got, span = usink.wait_for_line(lambda line: " " in line, 30).split()
            udp.append({"offered_pps": rate, "sent": int(sent), "received": int(got),
                        "loss": round(1 - int(got) / max(1, int(sent)), 4)})
        return {
            "link": "veth" if delay_ms is None else f"forwarder {delay_ms} ms",
            "rtt_ms": {"min": round(min(rtts), 3), "median": round(statistics.median(rtts), 3),
                       "max": round(max(rtts), 3)},
            "tcp_mbit_s": round(int(total) * 8 / float(took) / 1e6, 1),
            "udp_1200B": udp,
        }


def main() -> int:
    parser = argparse.ArgumentParser(prog="link_bench.py")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--udp-rates", type=float, nargs="+", default=[2000, 10000, 30000])
    args = parser.parse_args()
    for delay in (None, 0.0, 20.0):
        print(json.dumps(bench(delay, args.seconds, args.udp_rates)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
