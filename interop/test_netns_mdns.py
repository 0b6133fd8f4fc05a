"""mDNS discovery between namespaces on one bridge: no bootstrap, no
addresses given, the nodes find each other on the LAN.

    lan switch (bridge) 10.0.7.0/24
      ├── peera  10.0.7.1
      ├── peerb  10.0.7.2
      └── peerc  10.0.7.3   (the witness of the --no-mdns test)

Every multicast stays inside the lab: the namespaces have no route out and
the root namespace holds no end of any veth.  Each test builds its own lab
and deletes it afterwards; waits are bounded polls, never sleeps.

Needs root and iproute2 (`ip`); without root the tests skip.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, Node  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    START_TIMEOUT,
    Daemon,
    lab_for_test,
    overlay,
    overlay_json,
    stop_daemons,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

PROBE = HERE / "netns" / "mdns_probe.py"
DISCOVERY_BUDGET = 20.0
"""Seconds two nodes get to find and connect to each other; it takes about
one to two here (zeroconf probes its name for 0.75 s, then announces)."""
LAN = "10.0.7"

RUST_STYLE_RESPONDER = r"""
# Answers `_p2p._udp.local PTR` as rust-libp2p does: the PTR in the answers,
# then one TXT record per address (cache-flush class) in the additionals,
# no SRV and no A record.
import socket, struct, sys
from dnslib import CLASS, DNSHeader, DNSRecord, PTR, QTYPE, RR, TXT
ip, peer, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
name = "r" * 40 + "._p2p._udp.local"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("", 5353))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.0.0.251") + socket.inet_aton(ip))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
print("listening", flush=True)
while True:
    data, src = s.recvfrom(9000)
    try:
        query = DNSRecord.parse(data)
    except Exception:
        continue
    if query.header.qr or not any(str(q.qname).rstrip(".") == "_p2p._udp.local"
                                  and q.qtype == QTYPE.PTR for q in query.questions):
        continue
    reply = DNSRecord(DNSHeader(id=query.header.id, qr=1, aa=1))
    reply.add_answer(RR("_p2p._udp.local", QTYPE.PTR, rdata=PTR(name), ttl=360))
    for port in ports:
        text = f"dnsaddr=/ip4/{ip}/udp/{port}/quic-v1/p2p/{peer}"
        reply.add_ar(RR(name, QTYPE.TXT, rclass=0x8001, rdata=TXT(text), ttl=360))
    s.sendto(reply.pack(), ("224.0.0.251", 5353))
    print("answered", flush=True)
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


def build_lan(lab: Lab, count: int) -> list[Node]:
    switch = lab.switch("lan")
    nodes = []
    for index in range(count):
        node = lab.host(f"peer{'abc'[index]}")
        lab.link(node, switch, f"{LAN}.{index + 1}/24", a_ifname="lan")
        nodes.append(node)
    return nodes


def start_daemon(lab: Lab, node: Node, *extra: str, wildcard: bool = False) -> Daemon:
    """A daemon listening on the node's LAN address, or on 0.0.0.0 (which
    also covers 127.0.0.1) with ``wildcard``."""
    return daemons.start_daemon(lab, node, node.address("lan"), "--dns", "off",
                                "--log-level", "info", *extra,
                                listen_ip="0.0.0.0" if wildcard else None)


def peer_ids(lab: Lab, daemon: Daemon) -> set[str]:
    return {p["peer_id"] for p in overlay_json(lab, daemon, "peers")["peers"]}


def test_zeroconf_driver_finds_the_other_namespace_and_leaves_no_task(lab: Lab) -> None:
    a, b = build_lan(lab, 2)
    probes = [lab.popen(node, [sys.executable, str(PROBE), node.address("lan"),
                               str(DISCOVERY_BUDGET + 10)]) for node in (a, b)]
    ups = [json.loads(p.wait_for_line(lambda line: '"up"' in line, START_TIMEOUT))
           for p in probes]
    founds = [json.loads(p.wait_for_line(lambda line: '"found"' in line, DISCOVERY_BUDGET))
              for p in probes]
    for probe in probes:
        probe.popen.send_signal(signal.SIGTERM)
    dones = [json.loads(p.wait_for_line(lambda line: '"done"' in line, START_TIMEOUT))
             for p in probes]
    for up, node in zip(ups, (a, b)):
        assert up["active"] and up["interfaces"] == [node.address("lan")]
        assert up["zeroconf_tasks"] > 0  # the leak check below is not vacuous
        label = up["name"].split(".")[0]
        assert 32 <= len(label) <= 63 and up["peer_id"] not in up["name"]
    assert founds[0]["peer_id"] == ups[1]["peer_id"]
    assert founds[0]["addrs"] == [f"/ip4/{b.address('lan')}/udp/4001/quic-v1"]
    assert founds[1]["peer_id"] == ups[0]["peer_id"]
    assert dones[0]["found"] == [ups[1]["peer_id"]]
    assert dones[1]["found"] == [ups[0]["peer_id"]]
    assert [d["zeroconf_tasks"] for d in dones] == [0, 0]
    for probe in probes:
        assert probe.popen.wait(START_TIMEOUT) == 0, probe.describe()


def test_driver_reads_every_txt_record_of_a_rust_style_answer(lab: Lab) -> None:
    """rust-libp2p sends one TXT record per address and no SRV or A: the
    driver must still see the peer, with every address."""
    a, b = build_lan(lab, 2)
    rust_peer = "12D3KooWKKoR1MYRykr9UzjXG6UHBSgYhYDDSraCcBauSQpSxuew"
    responder = lab.popen(b, [sys.executable, "-c", RUST_STYLE_RESPONDER, b.address("lan"),
                              rust_peer, "4001", "4002"])
    responder.wait_for_line(lambda line: line == "listening", START_TIMEOUT)
    probe = lab.popen(a, [sys.executable, str(PROBE), a.address("lan"),
                          str(DISCOVERY_BUDGET + 10)])
    found = json.loads(probe.wait_for_line(lambda line: '"found"' in line, DISCOVERY_BUDGET))
    assert found["peer_id"] == rust_peer
    assert sorted(found["addrs"]) == [f"/ip4/{b.address('lan')}/udp/{port}/quic-v1"
                                      for port in (4001, 4002)]
    probe.popen.send_signal(signal.SIGTERM)
    done = json.loads(probe.wait_for_line(lambda line: '"done"' in line, START_TIMEOUT))
    assert done["zeroconf_tasks"] == 0


def test_two_daemons_on_one_lan_find_each_other(lab: Lab) -> None:
    a_node, b_node = build_lan(lab, 2)
    a = start_daemon(lab, a_node, wildcard=True)  # mDNS on 10.0.7.1 only, not on lo
    b = start_daemon(lab, b_node)

    assert wait_until(lambda: b.peer_id in peer_ids(lab, a) and a.peer_id in peer_ids(lab, b),
                      DISCOVERY_BUDGET), f"{a.proc.describe()}\n{b.proc.describe()}"
    done = overlay(lab, a, "ping", f"/p2p/{b.peer_id}", "-n", "2", "-i", "0")
    assert done.returncode == 0, done.stderr
    assert f"2 pings to {b.peer_id}" in done.stdout
    # identify told the DHT: each has the other in its routing table.
    assert wait_until(lambda: all(overlay_json(lab, d, "status")["dht"]["table_size"] == 1
                                  for d in (a, b)), DISCOVERY_BUDGET)
    status = overlay_json(lab, a, "status")
    assert status["mdns"] == "on (1 peer found)"
    assert "/ip4/127.0.0.1/" in " ".join(status["listen_addrs"])
    (seen_a,) = overlay_json(lab, b, "peers")["peers"]
    assert all(addr.startswith(f"/ip4/{a_node.address('lan')}/")
               for addr in seen_a["connected_addrs"]), seen_a
    for log in stop_daemons(a, b):
        assert "Task was destroyed" not in log


def test_no_mdns_on_one_side_keeps_the_nodes_apart(lab: Lab) -> None:
    """`--no-mdns` neither announces nor browses: within the budget in which
    a witness with mDNS finds the other node, the silent one finds nobody
    and nobody finds it."""
    a_node, b_node, c_node = build_lan(lab, 3)
    silent = start_daemon(lab, a_node, "--no-mdns")
    b = start_daemon(lab, b_node)
    witness = start_daemon(lab, c_node)
    started = time.monotonic()
    assert wait_until(lambda: witness.peer_id in peer_ids(lab, b), DISCOVERY_BUDGET)
    # The silent node gets twice what the witness needed (at least 3 s),
    # checked all along: nobody may connect to it in that window.
    window_end = started + max(3.0, 2 * (time.monotonic() - started))
    checks = 0
    while time.monotonic() < window_end:  # each check is a CLI run: it paces itself
        assert peer_ids(lab, silent) == set()
        checks += 1
    assert checks >= 1 and peer_ids(lab, silent) == set()
    assert silent.peer_id not in peer_ids(lab, b) | peer_ids(lab, witness)
    assert overlay_json(lab, silent, "status")["mdns"] == "off"
    stop_daemons(silent, b, witness)
