"""STUN on the QUIC socket across the lab's NATs, checked against conntrack.

    server 203.0.113.10  introducer (`overlay daemon --introducer`)
           203.0.113.11  coturn, primary address (`turnserver --stun-only`)
           203.0.113.12  coturn, other address (RFC 5780)
      │ public switch
    nat1 203.0.113.1 ── client 10.0.1.10 (`overlay daemon --stun … --stun …`)

The client's daemon asks the introducer's QUIC port and coturn from its own
QUIC socket; what they report must be what the NAT really did, as
`conntrack -L` in the NAT's namespace shows.  Behind plain masquerade (a
port-restricted cone) every server sees one mapping; behind `masquerade
fully-random` (symmetric) each gets its own port.

Needs root and the Debian packages iproute2, nftables, coturn and conntrack
(scripts/test.sh installs them); without root the tests skip.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, LabProcess, NatMode, NatTopology, Node, build_nat_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    START_TIMEOUT,
    Daemon,
    lab_for_test,
    overlay,
    overlay_json,
    poll_json,
)
from netns.natkinds import conntrack_udp_flows  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

CLI_TIMEOUT = 30.0
ROUND_TIMEOUT = 40.0
"""The first STUN round: the servers, then the filtering tests (7.5 s of
silence behind a filtering NAT), then the mapping test to coturn's other IP."""
COTURN_IPS = ("203.0.113.11", "203.0.113.12")
COTURN_PORT = 3478

PROBE = r"""
import os, socket, sys, time
from overlay.nat.stun import decode_stun, encode_binding_request
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    s.sendto(encode_binding_request(os.urandom(12)), (sys.argv[1], int(sys.argv[2])))
    try:
        print("mapped", *decode_stun(s.recvfrom(2048)[0]).mapped, flush=True)
        break
    except socket.timeout:
        continue
else:
    sys.exit("no STUN answer")
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test(tools=(("turnserver", "coturn"), ("conntrack", "conntrack")))


def start_daemon(lab: Lab, node: Node, ip: str, *extra: str) -> Daemon:
    return daemons.start_daemon(lab, node, ip, "--dns", "off", *extra, cli_timeout=CLI_TIMEOUT)


def start_coturn(lab: Lab, server: Node) -> LabProcess:
    """coturn on two addresses, so it answers RFC 5780 change requests;
    returns once it answers a binding request."""
    for ip in COTURN_IPS:
        lab.ip(server, "addr", "add", f"{ip}/24", "dev", "public")
    work = lab.workdir
    argv = ["turnserver", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "-n",
            "-p", str(COTURN_PORT), "--pidfile", str(work / "turnserver.pid"),
            "--db", str(work / "turndb"), "--log-file", str(work / "turnserver.log"),
            "--no-stdout-log"]
    for ip in COTURN_IPS:
        argv += ["-L", ip]
    proc = lab.popen(server, argv)
    ready = lab.run(server, [sys.executable, "-c", PROBE, COTURN_IPS[0], str(COTURN_PORT),
                             str(START_TIMEOUT)], timeout=START_TIMEOUT + 5)
    assert ready.returncode == 0, f"coturn does not answer: {ready.stderr}\n{proc.describe()}"
    return proc


def conntrack_mappings(lab: Lab, nat: Node, inside: tuple[str, int]) -> dict[tuple[str, int],
                                                                            tuple[str, int]]:
    """What the NAT did to the flows from ``inside``: destination → the
    public address replies are sent to (conntrack's reply-direction dst)."""
    return {(dst, dport): (reply[2], reply[3])
            for (src, sport, dst, dport), reply in conntrack_udp_flows(lab, nat)
            if (src, sport) == inside}


def wait_for_round(lab: Lab, daemon: Daemon) -> Any:
    """`overlay nat --json` once the first STUN round has finished."""
    return poll_json(lab, daemon, ["nat"], lambda r: r["last_round_age_s"] is not None,
                     timeout=ROUND_TIMEOUT)


def addr_of(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def run_scenario(lab: Lab, mode: NatMode) -> tuple[NatTopology, Daemon, Daemon, Any]:
    topo = build_nat_topology(lab, nat_mode=mode)
    start_coturn(lab, topo.server)
    intro = start_daemon(lab, topo.server, topo.server_ip, "--introducer")
    node = start_daemon(lab, topo.client, topo.client_ip,
                        "--stun", f"{topo.server_ip}:{intro.port}",
                        "--stun", f"{COTURN_IPS[0]}:{COTURN_PORT}")
    return topo, intro, node, wait_for_round(lab, node)


def check_against_conntrack(lab: Lab, topo: NatTopology, node: Daemon,
                            reply: Any) -> dict[tuple[str, int], tuple[str, int]]:
    [sock] = reply["sockets"]
    seen = {addr_of(obs["server"]): addr_of(obs["mapped"]) for obs in sock["observations"]}
    truth = conntrack_mappings(lab, topo.nat1, (topo.client_ip, node.port))
    for server, mapped in seen.items():
        assert truth.get(server) == mapped, (server, mapped, truth)
    assert all(ip == topo.nat1_public_ip for ip, _ in seen.values())
    return seen


def test_cone_nat_mapping_matches_conntrack(lab: Lab) -> None:
    topo, intro, node, reply = run_scenario(lab, NatMode.CONE)
    seen = check_against_conntrack(lab, topo, node, reply)
    assert set(seen) == {(topo.server_ip, intro.port), (COTURN_IPS[0], COTURN_PORT),
                         (COTURN_IPS[1], COTURN_PORT)}, reply
    # Plain masquerade keeps the port: one mapping for every server.
    assert set(seen.values()) == {(topo.nat1_public_ip, node.port)}
    assert reply["mapping"]["behaviour"] == "endpoint-independent"
    # conntrack admits replies only: coturn's answers from its other
    # address or port are filtered.
    assert reply["filtering"]["behaviour"] == "address-and-port-dependent", reply
    assert reply["nat_type"] == "port-restricted cone"
    sources = reply["public_addrs"][0]["sources"]
    assert reply["public_addrs"][0]["addr"] == f"{topo.nat1_public_ip}:{node.port}"
    assert f"stun {topo.server_ip}:{intro.port}" in sources
    assert f"stun {COTURN_IPS[0]}:{COTURN_PORT}" in sources

    # QUIC still works on the sockets STUN shares, and identify agrees.
    done = overlay(lab, node, "ping", "-n", "1", intro.addr)
    assert done.returncode == 0, done.stderr
    served = overlay_json(lab, intro, "nat")
    assert served["introducer"] is True and served["stun_answered"] >= 1
    status = overlay_json(lab, node, "status")
    assert status["nat"] == f"port-restricted cone, public {topo.nat1_public_ip}:{node.port}"


def test_symmetric_nat_gives_each_server_its_own_port(lab: Lab) -> None:
    topo, intro, node, reply = run_scenario(lab, NatMode.FULLY_RANDOM)
    seen = check_against_conntrack(lab, topo, node, reply)
    ports = [port for _, port in seen.values()]
    assert len(seen) == 3 and len(set(ports)) == 3, reply
    assert reply["mapping"]["behaviour"] == "endpoint-dependent", reply
    assert reply["nat_type"] == "symmetric"
    assert reply["filtering"]["behaviour"] == "address-and-port-dependent", reply
