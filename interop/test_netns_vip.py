"""Virtual IPs between two namespaces (``overlay daemon --tun``).

    vipa 10.77.0.1 ── veth ── vipb 10.77.0.2      (no route out)

Each namespace runs a daemon with ``--tun`` (B bootstraps to A), so each
has its own ``ovl0``.  A registers a name; from B: the name resolves to A's
vIPs (``name resolve --json`` and the DNS front, asked with dig), ICMP echo
reaches A's vIPv6 and vIPv4, and curl fetches a page from an HTTP server in
A by vIP and by name.  A peer that forges another peer's source vIP has its
packets dropped by A, while its honest ones arrive.  B, restarted, gives A
the vIPv4 it had (the saved table), though it now asks for A first.

Behind two NATs (``build_nat_topology``: A behind a port-restricted cone,
B behind a full cone, each its own router, an introducer on the public
side relaying until DCUtR punches): the test first checks that the peers
really sit behind different NATs (the introducer sees them at 203.0.113.1
and .2, the rules differ, the LANs do not route to each other, the direct
connection runs between the two public addresses), then B pings and curls
A by vIP and by name, and iperf3 moves data over A's vIPv4 and vIPv6 as
QUIC datagrams.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from netns import Lab, NatKind, NatMode, NatTopology, Node, build_nat_topology  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    Daemon,
    api_call,
    lab_for_test,
    overlay,
    overlay_json,
    poll,
    poll_json,
    start_daemon,
    stop_daemons,
    wait_reserved,
)

from overlay.identity import PeerId  # noqa: E402
from overlay.vip import vip6_of  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

NAME = "vipalice.ovl"
POLL_TIMEOUT = 20.0
NAT_CLI_TIMEOUT = 30.0
NAT_POLL_TRIES = 80

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


@pytest.fixture
def nat_lab() -> Iterator[Lab]:
    yield from lab_for_test([("curl", "curl"), ("dig", "bind9-dnsutils"),
                             ("iperf3", "iperf3")])


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


def test_a_restarted_daemon_keeps_each_peers_vip4(lab: Lab) -> None:
    """B numbers C before A; restarted, B asks for A first and still gets
    A's old address (without the saved table A would take C's), and the
    vIPv4 still reaches A."""
    a, b, da, db = two_nodes(lab)
    # C shares A's namespace without --tun (one ovl0 per namespace).
    dc = start_daemon(lab, a, "10.77.0.1", "--dns", "off", "--no-mdns", "--bootstrap", da.addr,
                      name="vipc")
    overlay_json(lab, dc, "name", "register", "vipcarol.ovl")
    overlay_json(lab, da, "name", "register", NAME)
    before = {}
    for name in ("vipcarol.ovl", NAME):  # C first: C gets .2, A .3
        got = poll_json(lab, db, ["name", "resolve", name], lambda r: bool(r.get("vip4")),
                        timeout=POLL_TIMEOUT)
        before[name] = got["vip4"]
    assert before == {"vipcarol.ovl": "100.64.0.2", NAME: "100.64.0.3"}, before
    stop_daemons(db)
    saved = json.loads((db.home / "vip4.json").read_text())
    assert [entry[1] for entry in saved["entries"]] == ["100.64.0.2", "100.64.0.3"], saved

    db = start_daemon(lab, b, "10.77.0.2", "--tun", "--dns", "127.0.0.1:0", "--no-mdns",
                      "--bootstrap", da.addr)
    after = poll_json(lab, db, ["name", "resolve", NAME], lambda r: bool(r.get("vip4")),
                      timeout=POLL_TIMEOUT)
    assert after["vip4"] == before[NAME], (after, before)
    assert len(ping(lab, b, after["vip4"])) == 3
    status = overlay_json(lab, db, "vip", "status")
    assert {p["vip4"] for p in status["peers"]} >= {"100.64.0.2", "100.64.0.3"}, status
    stop_daemons(db, dc, da)


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


IPERF_PORT = """
import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 0))
print(s.getsockname()[1])
"""
"""A free TCP port in the namespace: iperf3 refuses port 0, and nothing
else runs in a fresh lab namespace to take the port before iperf3 does."""


def iperf3(lab: Lab, server_node: Node, client_node: Node, address: str,
           seconds: int = 2) -> dict[str, Any]:
    """One iperf3 TCP test from ``client_node`` to ``address``; returns the
    client's ``-J`` report."""
    found = lab.run(server_node, [sys.executable, "-c", IPERF_PORT])
    assert found.returncode == 0, found.stderr
    port = found.stdout.strip()
    server = lab.popen(server_node, ["iperf3", "-s", "-1", "-p", port, "--forceflush"])
    server.wait_for_line(lambda line: "listening" in line, 10)
    done = lab.run(client_node, ["iperf3", "-c", address, "-p", port, "-t", str(seconds),
                                 "-J", "--connect-timeout", "5000"], timeout=30 + seconds)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr, server.describe())
    server.stop()
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _peer(lab: Lab, daemon: Daemon, peer_id: str) -> dict[str, Any]:
    peers = {p["peer_id"]: p for p in overlay_json(lab, daemon, "peers")["peers"]}
    return dict(peers.get(peer_id, {}))


@dataclass(frozen=True)
class NatPair:
    """A behind ``nat1``, B behind ``nat2``, directly connected (punched)."""

    topo: NatTopology
    intro: Daemon
    a: Daemon
    b: Daemon


def behind_two_nats(lab: Lab) -> NatPair:
    """A behind a port-restricted cone, B behind a full cone, each NAT its
    own router, both with ``--tun``; the introducer relays until DCUtR
    punches.  Asserts that the peers really sit behind different NATs and
    that the connection between them is direct, between the two NATs'
    public addresses (the benchmark uses it too)."""
    topo = build_nat_topology(lab, second_lan=True, nat_mode=NatMode.CONE,
                              nat2_mode=NatKind.FULL_CONE)
    assert topo.client2 is not None and topo.nat2 is not None
    for node in (topo.client, topo.client2):
        done = lab.run(node, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"])
        assert done.returncode == 0, done.stderr
    intro = start_daemon(lab, topo.server, topo.server_ip, "--introducer", "--dns", "off",
                         "--no-mdns", config=AUTONAT_LAB_CONFIG, cli_timeout=NAT_CLI_TIMEOUT)
    flags = ("--tun", "--dns", "127.0.0.1:0", "--no-mdns", "--relay", intro.addr,
             "--bootstrap", intro.addr)
    da = start_daemon(lab, topo.client, topo.client_ip, *flags, config=AUTONAT_LAB_CONFIG,
                      cli_timeout=NAT_CLI_TIMEOUT)
    db = start_daemon(lab, topo.client2, topo.client2.address(), *flags,
                      config=AUTONAT_LAB_CONFIG, cli_timeout=NAT_CLI_TIMEOUT)
    wait_reserved(lab, da, NAT_POLL_TRIES)
    b_circuit = str(wait_reserved(lab, db, NAT_POLL_TRIES)["advertised"][0])

    # Two NATs, two public addresses: the introducer sees each peer at its
    # own router, and the two kinds are the nftables rules asked for.
    for daemon, public in ((da, "203.0.113.1"), (db, "203.0.113.2")):
        seen = _peer(lab, intro, daemon.peer_id)
        assert seen["connected_addrs"][0].startswith(f"/ip4/{public}/udp/"), seen
    rules1 = lab.run(topo.nat1, ["nft", "list", "ruleset"]).stdout
    rules2 = lab.run(topo.nat2, ["nft", "list", "ruleset"]).stdout
    assert "masquerade" in rules1 and "dnat" not in rules1, rules1
    assert "dnat" in rules2, rules2
    # Neither LAN routes to the other: only the NATs' public side is reachable.
    routes = lab.run(topo.client2, ["ip", "-4", "route", "get", topo.client_ip])
    assert routes.returncode != 0, routes.stdout

    # Through the DHT the two may already have met (and punched); if not,
    # A dials B's circuit address and DCUtR makes it direct.
    overlay_json(lab, da, "connect", b_circuit)
    to_b = poll(lambda: _peer(lab, da, db.peer_id), lambda p: p.get("path") == "direct",
                tries=NAT_POLL_TRIES)
    assert to_b.get("path") == "direct", (to_b, api_call(lab, db, "holepunch_status"))
    # The direct connection runs between the two NATs' public addresses.
    assert "/ip4/203.0.113.2/udp/" in to_b["connections"][0]["addr"], to_b
    to_a = _peer(lab, db, da.peer_id)
    assert to_a.get("path") == "direct", to_a
    assert "/ip4/203.0.113.1/udp/" in to_a["connections"][0]["addr"], to_a
    return NatPair(topo, intro, da, db)


def test_behind_two_nats_ping_curl_and_iperf3_by_vip_and_by_name(nat_lab: Lab) -> None:
    """The vIP packets ride the punched connection as datagrams."""
    lab = nat_lab
    pair = behind_two_nats(lab)
    topo, intro, da, db = pair.topo, pair.intro, pair.a, pair.b
    assert topo.client2 is not None

    overlay_json(lab, da, "name", "register", NAME)
    resolved = poll_json(lab, db, ["name", "resolve", NAME],
                         lambda r: bool(r.get("vip6")), timeout=POLL_TIMEOUT)
    vip4, vip6 = resolved["vip4"], resolved["vip6"]
    assert vip6 == str(vip6_of(PeerId.from_string(da.peer_id))), resolved
    assert vip4 is not None and vip4.startswith("100."), resolved
    port = dns_port(lab, db)
    dug = lab.run(topo.client2, ["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=5",
                                 NAME, "AAAA"], timeout=20)
    assert dug.stdout.split() == [vip6], (dug.stdout, dug.stderr)

    rtt6, rtt4 = ping(lab, topo.client2, vip6), ping(lab, topo.client2, vip4)
    assert len(rtt6) == 3 and len(rtt4) == 3, (rtt6, rtt4)

    token = secrets.token_hex(8)
    server = lab.popen(topo.client, [sys.executable, "-c", HTTP_SERVER, token])
    http_port = int(server.wait_for_line(lambda line: line.startswith("port"), 10).split()[1])
    for url, extra in ((f"http://[{vip6}]:{http_port}/", []),
                       (f"http://{NAME}:{http_port}/",
                        ["--resolve", f"{NAME}:{http_port}:{vip4}"])):
        got = lab.run(topo.client2, ["curl", "-sS", "--max-time", "15", *extra, url],
                      timeout=30)
        assert got.returncode == 0 and got.stdout == token, (url, got.stdout, got.stderr)
    server.stop()

    rates = {}
    for label, address in (("vip4", vip4), ("vip6", vip6)):
        report = iperf3(lab, topo.client, topo.client2, address)
        received = report["end"]["sum_received"]
        assert received["bytes"] > 0 and received["bits_per_second"] > 0, report["end"]
        rates[label] = received["bits_per_second"] / 1e6
    print(f"\nbehind two NATs: ping vIPv6 {rtt6} ms, vIPv4 {rtt4} ms; "
          f"iperf3 vIPv4 {rates['vip4']:.1f} Mbit/s, vIPv6 {rates['vip6']:.1f} Mbit/s")

    # Over the punched connection the packets went as datagrams; `overlay
    # vip status` says so for the peer and counts them.
    status_b = overlay_json(lab, db, "vip", "status")
    status_a = overlay_json(lab, da, "vip", "status")
    assert status_b["packets"].get("datagram_out", 0) > 1000, status_b
    assert status_a["packets"].get("datagram_in", 0) > 1000, status_a
    assert status_a["bytes"]["in"] > 1_000_000 and status_b["bytes"]["out"] > 1_000_000
    assert status_a["drops"].get("forged source", 0) == 0, status_a
    seen_a = {p["peer_id"]: p for p in status_b["peers"]}[da.peer_id]
    assert seen_a == {"peer_id": da.peer_id, "vip4": vip4, "vip6": vip6,
                      "path": "datagram"}, status_b
    text = overlay(lab, db, "vip", "status")
    assert text.returncode == 0 and f"{da.peer_id}  {vip4}" in text.stdout, text.stdout
    stop_daemons(db, da, intro)
