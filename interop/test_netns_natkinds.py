"""Every NAT kind of the lab, measured from behind it with plain UDP sockets.

    resp  203.0.113.11, 203.0.113.12  ports 3478, 3479  (nat_responder.py)
      │ public switch
    nat1 … nat6  one per NatKind  ── peer1 … peer6  (nat_probe.py behaviour)

Each peer's probe asks the responder where it sees it (mapping, four
destinations), has it send unsolicited packets from its other port and
other address (filtering), and checks that an unsolicited packet arriving
first does not move a later mapping.  What the probes report must be what
each kind claims (RFC 4787 terms, ``NatKind.mapping`` / ``filtering`` /
``allocation``) and what ``conntrack -L`` in the NAT shows.  Then: the UDP
timeouts are per namespace and do expire mappings; the user-space delay
gives the configured RTT, and its loss the configured share.

Needs root and the Debian packages iproute2, nftables and conntrack
(scripts/test.sh installs them); without root the tests skip.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import (  # noqa: E402
    Lab,
    NatKind,
    NatMode,
    Node,
    UdpTimeouts,
    build_matrix_topology,
    build_nat_topology,
    delayed_link,
    read_udp_timeouts,
)
from netns.daemons import check_lab, lab_for_test  # noqa: E402
from netns.natkinds import (  # noqa: E402
    SEQUENTIAL_PORT_BASE,
    SEQUENTIAL_PORT_SPAN,
    conntrack_udp_flows,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

PROBE = str(HERE / "netns" / "nat_probe.py")
RESPONDER = str(HERE / "netns" / "nat_responder.py")
RESP_IPS = ("203.0.113.11", "203.0.113.12")
PORTS = (3478, 3479)
START_TIMEOUT = 15.0
PROBE_TIMEOUT = 30.0


CONNTRACK = (("conntrack", "conntrack"),)


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test(CONNTRACK)


def start_responder(lab: Lab, node: Node) -> None:
    """The responder on both addresses × both ports of ``node``, which
    already holds RESP_IPS[0] on its ``public`` interface."""
    lab.ip(node, "addr", "add", f"{RESP_IPS[1]}/24", "dev", "public")
    proc = lab.popen(node, [sys.executable, RESPONDER, *RESP_IPS,
                            "--ports", *(str(p) for p in PORTS)])
    proc.wait_for_line(lambda line: line == "ready", START_TIMEOUT)


def conntrack_mappings(lab: Lab, nat: Node) -> dict[tuple[str, int, str, int], str]:
    """(inside ip, inside port, remote ip, port) → the public address the
    remote sees.  A flow the inside host opened has it as the reply
    direction's destination; one a remote opened through a cone's DNAT, as
    the original direction's destination (both are listed; keys that do
    not start at an inside host are simply never asked for)."""
    out: dict[tuple[str, int, str, int], str] = {}
    for original, reply in conntrack_udp_flows(lab, nat):
        out[original] = f"{reply[2]}:{reply[3]}"
        out[reply] = f"{original[2]}:{original[3]}"
    return out


@dataclass(frozen=True)
class Measured:
    kind: NatKind
    client_ip: str
    public_ip: str
    result: dict[str, Any]
    conntrack: dict[tuple[str, int, str, int], str]


def classify(m: Measured) -> tuple[str, str, str]:
    """(mapping, filtering, allocation) as the probe saw them, in
    NatKind's terms."""
    local = m.result["local"]
    mapped = list(m.result["mapped"].values())
    ips = {text.rpartition(":")[0] for text in mapped}
    ports = [int(text.rpartition(":")[2]) for text in mapped]
    if mapped == [f"{m.client_ip}:{local}"] * 4:
        mapping, allocation = "no-nat", "none"
    elif ips != {m.public_ip}:
        return f"mapped to {ips}", "?", "?"
    elif len(set(ports)) == 1:
        mapping = "endpoint-independent"
        allocation = "preserving" if ports[0] == local else f"port {ports[0]} for {local}"
    elif len(set(ports)) == len(ports):
        mapping = "endpoint-dependent"
        later = ports + [int(m.result["unsolicited_first"]["mapped"].rpartition(":")[2])]
        steps = {b - a for a, b in zip(later, later[1:])}
        allocation = "sequential" if steps == {1} else "random"
    else:
        return f"ports {ports}", "?", "?"
    admitted = set(m.result["pokes"])
    other_port = f"{RESP_IPS[0]}:{PORTS[1]}"
    other_ip = {f"{RESP_IPS[1]}:{port}" for port in PORTS}
    if mapping == "no-nat" and admitted == other_ip | {other_port}:
        filtering = "no-nat"
    elif admitted == other_ip | {other_port}:
        filtering = "endpoint-independent"
    elif admitted == {other_port}:
        filtering = "address-dependent"
    elif not admitted:
        filtering = "address-and-port-dependent"
    else:
        filtering = f"admitted {sorted(admitted)}"
    return mapping, filtering, allocation


@pytest.fixture(scope="module")
def measured() -> dict[NatKind, Measured]:
    """One lab with a peer behind each kind; every probe runs at once."""
    check_lab(CONNTRACK)
    with Lab() as lab:
        topo = build_matrix_topology(lab, list(NatKind))
        resp = topo.add_public_host(lab, "resp", RESP_IPS[0])
        start_responder(lab, resp)
        probes = [(peer, lab.popen(peer.client, [
            sys.executable, PROBE, "behaviour", peer.client_ip, *RESP_IPS,
            *(str(p) for p in PORTS)])) for peer in topo.peers]
        out = {}
        for peer, proc in probes:
            line = proc.wait_for_line(lambda text: text.startswith("{"), PROBE_TIMEOUT)
            out[peer.kind] = Measured(peer.kind, peer.client_ip, peer.public_ip,
                                      json.loads(line), conntrack_mappings(lab, peer.nat))
        return out


@pytest.mark.parametrize("kind", list(NatKind), ids=lambda k: k.value)
def test_nat_kind_behaves_as_named(measured: dict[NatKind, Measured], kind: NatKind) -> None:
    m = measured[kind]
    assert classify(m) == (kind.mapping, kind.filtering, kind.allocation), m.result
    if kind is NatKind.SYMMETRIC_SEQUENTIAL:
        ports = [int(text.rpartition(":")[2]) for text in m.result["mapped"].values()]
        assert SEQUENTIAL_PORT_BASE <= min(ports) <= max(ports) \
            < SEQUENTIAL_PORT_BASE + SEQUENTIAL_PORT_SPAN, ports


@pytest.mark.parametrize("kind", list(NatKind), ids=lambda k: k.value)
def test_mappings_match_conntrack(measured: dict[NatKind, Measured], kind: NatKind) -> None:
    m = measured[kind]
    flows = {(m.client_ip, m.result["local"], *server.rpartition(":")[::2]): mapped
             for server, mapped in m.result["mapped"].items()}
    late = m.result["unsolicited_first"]
    flows[(m.client_ip, late["local"], RESP_IPS[1], str(PORTS[1]))] = late["mapped"]
    if not kind.translates:
        # Nothing translates, so nothing is tracked for these flows.
        assert m.conntrack == {}, m.conntrack
        return
    for (ip, port, server_ip, server_port), mapped in flows.items():
        key = (ip, port, server_ip, int(server_port))
        assert m.conntrack.get(key) == mapped, (key, mapped, m.conntrack)


def test_unsolicited_packet_first_keeps_the_cone_mapping(measured: dict[NatKind, Measured],
                                                         lab: Lab) -> None:
    """The cone kinds, and the plain masquerade of the older ``NatMode.CONE``:
    an unsolicited packet that arrives before the inside host sends (the
    other side of a hole punch) does not move the port the host then gets.
    Before the NATs dropped such packets in their input hook, masquerade
    picked a new port here."""
    for kind in (NatKind.FULL_CONE, NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE):
        late = measured[kind].result["unsolicited_first"]
        assert late["mapped"] == f"{measured[kind].public_ip}:{late['local']}", kind
        assert late["poked"] is False
    topo = build_nat_topology(lab, nat_mode=NatMode.CONE)
    lab.ip(topo.server, "addr", "add", f"{RESP_IPS[0]}/24", "dev", "public")
    start_responder(lab, topo.server)
    done = lab.run(topo.client, [sys.executable, PROBE, "behaviour", topo.client_ip, *RESP_IPS,
                                 *(str(p) for p in PORTS)], timeout=PROBE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["mapped"].values()) == {f"{topo.nat1_public_ip}:{result['local']}"}
    late = result["unsolicited_first"]
    assert late["mapped"] == f"{topo.nat1_public_ip}:{late['local']}", result


ONE_FLOW = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0)); s.settimeout(1)
for attempt in range(5):
    s.sendto(json.dumps({"op": "map", "id": 1}).encode(), (sys.argv[2], int(sys.argv[3])))
    try:
        print(s.getsockname()[1], json.loads(s.recv(2048))["addr"][1], flush=True)
        break
    except socket.timeout:
        continue
else:
    sys.exit("no answer")
"""


def test_udp_timeouts_are_per_namespace_and_expire_mappings(lab: Lab) -> None:
    """nf_conntrack_udp_timeout{,_stream} set in the NAT's namespace only;
    a one-exchange flow's conntrack entry goes after ``unreplied`` seconds,
    the restricted cone's DNAT entry after ``stream``."""
    root = Path("/proc/sys/net/netfilter/nf_conntrack_udp_timeout")
    root_before = root.read_text()
    timeouts = UdpTimeouts(unreplied=2, stream=4)
    topo = build_matrix_topology(lab, [NatKind.RESTRICTED_CONE], udp_timeouts=timeouts)
    [peer] = topo.peers
    assert read_udp_timeouts(lab, peer.nat) == timeouts
    assert read_udp_timeouts(lab, topo.introducer) == UdpTimeouts(30, 120)  # kernel defaults
    assert root.read_text() == root_before
    resp = topo.add_public_host(lab, "resp", RESP_IPS[0])
    start_responder(lab, resp)

    done = lab.run(peer.client, [sys.executable, "-c", ONE_FLOW, peer.client_ip, RESP_IPS[0],
                                 str(PORTS[0])])
    sent_at = time.monotonic()
    assert done.returncode == 0, done.stderr
    local, public_port = (int(word) for word in done.stdout.split())
    assert local == public_port
    flow = (peer.client_ip, local, RESP_IPS[0], PORTS[0])

    def dnat_entry() -> bool:
        listed = lab.run(peer.nat, ["nft", "list", "map", "ip", "lab_nat", "inside"])
        assert listed.returncode == 0, listed.stderr
        return f"{public_port} expires" in listed.stdout

    assert flow in conntrack_mappings(lab, peer.nat) and dnat_entry()
    gone: dict[str, float] = {}
    deadline = sent_at + 15
    while len(gone) < 2 and time.monotonic() < deadline:
        now = time.monotonic() - sent_at
        if "conntrack" not in gone and flow not in conntrack_mappings(lab, peer.nat):
            gone["conntrack"] = now
        if "dnat" not in gone and not dnat_entry():
            gone["dnat"] = now
        time.sleep(0.1)  # pacing of a bounded poll, not synchronisation
    assert set(gone) == {"conntrack", "dnat"}, gone
    # Expiry is checked lazily: allow the garbage collector some slack.
    assert timeouts.unreplied - 0.5 <= gone["conntrack"] <= timeouts.unreplied + 3, gone
    assert timeouts.stream - 0.5 <= gone["dnat"] <= timeouts.stream + 3, gone


def test_wan_delay_gives_the_configured_rtt(lab: Lab) -> None:
    """20 ms on each WAN link: 40 ms RTT from a peer to a public host, 80 ms
    between two peers (two links each way).  The forwarder only adds, so
    no sample may be faster; the median gets a margin for a busy machine."""
    delay = 20.0
    topo = build_matrix_topology(lab, [NatKind.PORT_RESTRICTED_CONE, NatKind.NONE],
                                 wan_delay_ms=delay)
    behind, public_peer = topo.peers
    resp = topo.add_public_host(lab, "resp", RESP_IPS[0])
    start_responder(lab, resp)
    echo = lab.popen(public_peer.client, [sys.executable, RESPONDER, public_peer.client_ip,
                                          "--ports", str(PORTS[0])])
    echo.wait_for_line(lambda line: line == "ready", START_TIMEOUT)
    def rtt(node: Node, local_ip: str, target_ip: str) -> Any:
        return lab.popen(node, [sys.executable, PROBE, "rtt", local_ip, target_ip,
                                str(PORTS[0]), "--count", "30"])

    runs = [
        (2 * delay, rtt(behind.client, behind.client_ip, RESP_IPS[0])),  # nat1's link
        (2 * delay, rtt(resp, RESP_IPS[0], public_peer.client_ip)),  # nat2's link
        # Peer to peer: behind → nat1 → public switch → nat2 → public_peer.
        (4 * delay, rtt(behind.client, behind.client_ip, public_peer.client_ip)),
    ]
    for expected, proc in runs:
        result = json.loads(proc.wait_for_line(lambda t: t.startswith("{"), PROBE_TIMEOUT))
        samples = result["rtt_ms"]
        assert result["lost"] == 0 and len(samples) == 30, result
        assert min(samples) >= expected - 0.5, (expected, result)
        assert statistics.median(samples) <= expected + 15, (expected, result)
    for peer in topo.peers:
        assert peer.wan is not None
        counters = peer.wan.stop()
        assert counters["a>b"]["forwarded"] > 0 and counters["a>b"]["send_errors"] == 0, counters
        assert peer.wan.process.returncode == 0


PUNCH_PORT = 40000


def test_cones_punch_even_when_one_side_starts_late(lab: Lab) -> None:
    """A bare UDP punch between two cones at 20 ms per WAN link, the second
    side starting 300 ms late, so the first side's packets reach its NAT
    before it sends.  With port preservation each side's public address is
    known in advance.  Without the NATs' input drop (natkinds.py) this
    failed both ways: the late side's NAT moved its port."""
    kinds = [NatKind.PORT_RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE,
             NatKind.RESTRICTED_CONE, NatKind.FULL_CONE]
    topo = build_matrix_topology(lab, kinds, wan_delay_ms=20)
    pairs = [(topo.peers[0], topo.peers[1]), (topo.peers[2], topo.peers[3])]
    runs = []
    for early, late in pairs:
        for me, peer, start in ((early, late, 0.0), (late, early, 0.3)):
            runs.append((me.kind, lab.popen(me.client, [
                sys.executable, PROBE, "punch", me.client_ip, str(PUNCH_PORT), peer.public_ip,
                str(PUNCH_PORT), "--start-after", str(start), "--seconds", "1.5"])))
    for kind, proc in runs:
        result = json.loads(proc.wait_for_line(lambda t: t.startswith("{"), PROBE_TIMEOUT))
        assert result["received"] > 0, (kind, result, proc.describe())


SINK = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9000))
print("ready", flush=True)
s.settimeout(10); n = 0
try:
    while True:
        if s.recv(64) == b"end":
            break
        n += 1
        s.settimeout(2)
except socket.timeout:
    pass
print("received", n, flush=True)
"""
SOURCE = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"%d" % i, (sys.argv[1], 9000))
    time.sleep(0.0002)  # paced so that no queue but the forwarder's loss drops
for _ in range(20):
    s.sendto(b"end", (sys.argv[1], 9000))
"""


def test_link_loss_drops_the_configured_share(lab: Lab) -> None:
    left, right = lab.host("left"), lab.host("right")
    link = delayed_link(lab, left, right, "192.0.2.1/24", "192.0.2.2/24", delay_ms=1.0,
                        loss=0.25, seed=7, a_ifname="lan", b_ifname="lan")
    # Static neighbours: a lost ARP request would stall the first datagrams
    # for a second and overflow the neighbour queue.
    for node, peer, peer_ip in ((left, right, "192.0.2.2"), (right, left, "192.0.2.1")):
        [info] = json.loads(lab.ip(peer, "-j", "link", "show", "lan"))
        lab.ip(node, "neigh", "replace", peer_ip, "lladdr", info["address"], "dev", "lan",
               "nud", "permanent")
    sink = lab.popen(right, [sys.executable, "-c", SINK, "192.0.2.2"])
    sink.wait_for_line(lambda line: line == "ready", START_TIMEOUT)
    count = 1000
    sent = lab.run(left, [sys.executable, "-c", SOURCE, "192.0.2.2", str(count)], timeout=30)
    assert sent.returncode == 0, sent.stderr
    received = int(sink.wait_for_line(lambda line: line.startswith("received"), 20).split()[1])
    # Binomial(1000, 0.75): mean 750, sd 13.7; the band is ±7 sd.
    assert 650 <= received <= 850, received
    counters = link.stop()
    lost = counters["a>b"]["lost"]
    # The forwarder's own count: every datagram it dropped, plus some of
    # the 20 "end" markers.
    assert count - received <= lost <= count - received + 20, counters
