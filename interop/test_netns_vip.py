"""Virtual IPs between two namespaces (``overlay daemon --tun``).

    vipa 10.77.0.1 ── veth ── vipb 10.77.0.2      (no route out)

Each namespace runs a daemon with ``--tun`` (B bootstraps to A), so each
has its own ``ovl0``.  A registers a name; from B: the name resolves to A's
vIPs (``name resolve --json`` and the DNS front, asked with dig), ICMP echo
reaches A's vIPv6 and vIPv4, and curl fetches a page from an HTTP server in
A by vIP and by name.  A peer that forges another peer's source vIP has its
packets dropped by A, while its honest ones arrive.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from netns import Lab, Node  # noqa: E402
from netns.daemons import (  # noqa: E402
    Daemon,
    api_call,
    lab_for_test,
    overlay_json,
    poll_json,
    start_daemon,
    stop_daemons,
)

from overlay.identity import PeerId  # noqa: E402
from overlay.vip import vip6_of  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

NAME = "vipalice.ovl"
POLL_TIMEOUT = 20.0

PING = """
import os, socket, struct, sys, time
host, family = sys.argv[1], socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
kind = 128 if family == socket.AF_INET6 else 8
s = socket.socket(family, socket.SOCK_RAW, proto)
s.settimeout(2)
def csum(b):
    b += b"\\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF
ident, rtts = os.getpid() & 0xFFFF, []
for seq in range(int(sys.argv[2])):
    body = struct.pack("!HH", ident, seq) + b"overlay-vip-ping"
    head = struct.pack("!BBH", kind, 0, 0)
    if family == socket.AF_INET:  # the kernel fills ICMPv6 checksums
        head = struct.pack("!BBH", kind, 0, csum(head + body))
    start = time.monotonic()
    s.sendto(head + body, (host, 0))
    deadline = start + 2
    while time.monotonic() < deadline:
        try:
            data = s.recv(2048)
        except socket.timeout:
            break
        if family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4:]
        if data[0] in (0, 129) and data[4:8] == body[:4]:
            rtts.append((time.monotonic() - start) * 1000)
            break
print(len(rtts), *("%.3f" % r for r in rtts), flush=True)
"""

HTTP_SERVER = """
import http.server, socket, sys
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.argv[1].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = Server(("::", 0), Handler)
print("port", server.server_address[1], flush=True)
server.serve_forever()
"""

UDP_LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print("port", s.getsockname()[1], flush=True)
s.settimeout(15)
while True:
    data, peer = s.recvfrom(2048)
    print("got", data.decode(), peer[0], flush=True)
    if data.startswith(b"honest"):
        break
"""

FORGER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from overlay.host.host import Host
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.transport.connection import QuicConn
from overlay.vip import vip6_of
from tests.vip.packets import udp6
async def main():
    target, victim, port = sys.argv[2], PeerId.from_string(sys.argv[3]), int(sys.argv[4])
    async with Host(Ed25519PrivateKey.generate()) as host:
        conn = await host.connect(target)
        assert isinstance(conn, QuicConn), conn
        dst = str(vip6_of(conn.remote_peer))
        def packet(src, text):
            p = bytearray(udp6(src, dst, text.encode()))
            p[40:42] = (40000).to_bytes(2, "big"); p[42:44] = port.to_bytes(2, "big")
            from tests.vip.packets import checksum
            p[46:48] = b"\\0\\0"
            pseudo = bytes(p[8:40]) + len(p[40:]).to_bytes(4, "big") + bytes([0, 0, 0, 17])
            p[46:48] = (checksum(pseudo + bytes(p[40:])) or 0xFFFF).to_bytes(2, "big")
            return bytes(p)
        # First a packet claiming to come from the victim's vIP, then our own.
        assert conn.send_datagram(packet(str(vip6_of(victim)), "forged"))
        assert conn.send_datagram(packet(str(vip6_of(host.peer_id)), "honest"))
        await asyncio.sleep(0)  # one loop turn: the connection transmits
        print("sent", flush=True)
        await asyncio.Event().wait()  # until the test stops us
asyncio.run(main())
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test([("curl", "curl"), ("dig", "bind9-dnsutils")])


def two_nodes(lab: Lab) -> tuple[Node, Node, Daemon, Daemon]:
    a, b = lab.host("vipa"), lab.host("vipb")
    lab.link(a, b, "10.77.0.1/24", "10.77.0.2/24")
    for node in (a, b):
        # The lab turns IPv6 off; ovl0, created by the daemon, gets it back.
        done = lab.run(node, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"])
        assert done.returncode == 0, done.stderr
    da = start_daemon(lab, a, "10.77.0.1", "--tun", "--dns", "127.0.0.1:0", "--no-mdns")
    db = start_daemon(lab, b, "10.77.0.2", "--tun", "--dns", "127.0.0.1:0", "--no-mdns",
                      "--bootstrap", da.addr)
    return a, b, da, db


def dns_port(lab: Lab, daemon: Daemon) -> int:
    return int(overlay_json(lab, daemon, "status")["dns"].rsplit(":", 1)[1])


def ping(lab: Lab, node: Node, address: str, count: int = 3) -> list[float]:
    done = lab.run(node, [sys.executable, "-c", PING, address, str(count)], timeout=30)
    assert done.returncode == 0, done.stderr
    got, *rtts = done.stdout.split()
    assert int(got) == len(rtts)
    return [float(r) for r in rtts]


def test_ping_and_curl_by_vip_and_by_name(lab: Lab) -> None:
    a, b, da, db = two_nodes(lab)
    overlay_json(lab, da, "name", "register", NAME)
    resolved = poll_json(lab, db, ["name", "resolve", NAME],
                         lambda r: bool(r.get("vip6")), timeout=POLL_TIMEOUT)
    vip6 = resolved["vip6"]
    vip4 = resolved["vip4"]
    assert vip6 == str(vip6_of(PeerId.from_string(da.peer_id))), resolved
    assert vip4 is not None and vip4.startswith("100."), resolved

    # The DNS front answers with the same addresses.
    port = dns_port(lab, db)
    for qtype, want in (("AAAA", vip6), ("A", vip4)):
        dug = lab.run(b, ["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=5", NAME, qtype],
                      timeout=20)
        assert dug.stdout.split() == [want], (qtype, dug.stdout, dug.stderr)

    rtt6 = ping(lab, b, vip6)
    rtt4 = ping(lab, b, vip4)
    assert len(rtt6) == 3 and len(rtt4) == 3, (rtt6, rtt4)
    print(f"ping RTT over vIPv6 ms: {rtt6}; over vIPv4 ms: {rtt4}")

    token = secrets.token_hex(8)
    server = lab.popen(a, [sys.executable, "-c", HTTP_SERVER, token])
    http_port = int(server.wait_for_line(lambda line: line.startswith("port"), 10).split()[1])
    for url, extra in ((f"http://[{vip6}]:{http_port}/", []),
                       (f"http://{vip4}:{http_port}/", []),
                       (f"http://{NAME}:{http_port}/", ["--resolve", f"{NAME}:{http_port}:[{vip6}]"]),
                       (f"http://{NAME}:{http_port}/", ["--resolve", f"{NAME}:{http_port}:{vip4}"])):
        got = lab.run(b, ["curl", "-sS", "--max-time", "15", *extra, url], timeout=30)
        assert got.returncode == 0 and got.stdout == token, (url, got.stdout, got.stderr)

    status_b = api_call(lab, db, "vip_status")
    status_a = api_call(lab, da, "vip_status")
    assert status_b["packets"].get("datagram_out", 0) > 0, status_b
    assert status_a["packets"].get("delivered", 0) > 0, status_a
    assert status_a["drops"].get("forged source", 0) == 0, status_a
    server.stop()
    stop_daemons(db, da)


def test_forged_source_vip_is_dropped(lab: Lab) -> None:
    a, b, da, db = two_nodes(lab)
    vip6_a = str(vip6_of(PeerId.from_string(da.peer_id)))
    listener = lab.popen(a, [sys.executable, "-c", UDP_LISTEN, vip6_a])
    udp_port = int(listener.wait_for_line(lambda line: line.startswith("port"), 10).split()[1])
    forger = lab.popen(b, [sys.executable, "-c", FORGER, str(ROOT), da.addr, db.peer_id,
                           str(udp_port)])
    forger.wait_for_line(lambda line: line == "sent", 20)
    honest = listener.wait_for_line(lambda line: line.startswith("got honest"), 15)
    # The forged packet went first; had A delivered it, it would be here.
    assert not [line for line in listener.lines if "forged" in line], listener.lines
    assert honest.split()[2] != str(vip6_of(PeerId.from_string(db.peer_id)))
    status = api_call(lab, da, "vip_status")
    assert status["drops"].get("forged source", 0) == 1, status
    assert status["packets"].get("delivered", 0) >= 1, status
    listener.stop()
    forger.stop()
    stop_daemons(db, da)
