"""Multi-host tests in network namespaces: real `overlay` daemons on a
"public" segment (203.0.113.0/24) and behind an nftables NAT.

    server 203.0.113.10 ── public switch ── nat1 203.0.113.1 ── client 10.0.1.10

Each test builds its own lab (``interop/netns``) and deletes it afterwards,
so nothing reaches the root namespace.  The daemons are the real CLI
(``python -m overlay.cli daemon``) with their own ``--home``; the tests wait
for each daemon's ``ready`` line, never sleep.

Needs root and the Debian packages iproute2 and nftables: a missing tool
fails the tests with the package to install; without root they skip.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, NatMode, NatTopology, Node, build_nat_topology, lab_namespaces  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    CLI_TIMEOUT,
    START_TIMEOUT,
    Daemon,
    ip_of,
    lab_for_test,
    overlay,
    overlay_json,
    poll_json,
    stop_daemons,
    udp_port,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(30)]

PROBE = HERE / "netns" / "identify_probe.py"
DIAL_FAILURE_BOUND = 20.0
"""An unanswered dial ends after the transport's handshake timeout (10 s)."""


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


@pytest.fixture
def topo(lab: Lab) -> NatTopology:
    return build_nat_topology(lab)


def start_daemon(lab: Lab, node: Node, ip: str, *, bootstrap: Sequence[str] = ()) -> Daemon:
    flags = [flag for addr in bootstrap for flag in ("--bootstrap", addr)]
    return daemons.start_daemon(lab, node, ip, *flags)


POLL_TRIES = 40
POLL_TIMEOUT = 10.0
"""`overlay` polls: at most POLL_TRIES CLI runs or POLL_TIMEOUT seconds."""


# -- the lab itself -----------------------------------------------------------

UDP_ECHO = """
import socket, sys
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 0))
    socks.append(s)
print("ports", *(s.getsockname()[1] for s in socks), flush=True)
for s in socks:
    s.settimeout(10)
    data, peer = s.recvfrom(64)
    print("from", peer[0], peer[1], flush=True)
    s.sendto(data, peer)
"""

UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(5)
for port in sys.argv[3:]:
    s.sendto(b"hello", (sys.argv[2], int(port)))
    assert s.recvfrom(64)[0] == b"hello"
print("local", s.getsockname()[1], flush=True)
"""


@pytest.mark.parametrize("mode", list(NatMode), ids=lambda m: m.name.lower())
def test_nat_maps_one_socket_to_public_ports(lab: Lab, mode: NatMode) -> None:
    """Plain masquerade keeps one public port per private socket; the
    random variants give each destination its own (a symmetric NAT)."""
    topo = build_nat_topology(lab, nat_mode=mode)
    echo = lab.popen(topo.server, [sys.executable, "-c", UDP_ECHO, topo.server_ip])
    ports = echo.wait_for_line(lambda line: line.startswith("ports "), START_TIMEOUT).split()[1:]

    sent = lab.run(topo.client, [sys.executable, "-c", UDP_SEND, topo.client_ip,
                                 topo.server_ip, *ports])
    assert sent.returncode == 0, sent.stderr
    local_port = int(sent.stdout.split()[1])
    seen = [echo.wait_for_line(lambda text: text.startswith("from "), START_TIMEOUT)
            for _ in ports]
    observed = [(words[1], int(words[2])) for words in (line.split() for line in seen)]
    assert [ip for ip, _ in observed] == [topo.nat1_public_ip] * 2
    if mode is NatMode.CONE:
        assert [port for _, port in observed] == [local_port] * 2
    else:
        assert observed[0][1] != observed[1][1], observed


def test_public_host_cannot_reach_private_lan(lab: Lab, topo: NatTopology) -> None:
    """No route from the public side to a private LAN, and the lab adds
    nothing to the root namespace."""
    done = lab.run(topo.server, [sys.executable, "-c",
                                 "import socket; s = socket.socket(socket.AF_INET, "
                                 "socket.SOCK_DGRAM); s.sendto(b'x', (%r, 9))" % topo.client_ip])
    assert done.returncode != 0 and "Network is unreachable" in done.stderr
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                check=True, timeout=10).stdout
    for node in lab.nodes.values():
        for ifname in node.interfaces:
            assert f" {ifname}@" not in root_links and f" {ifname}:" not in root_links


def test_lab_teardown_after_failure_removes_everything(lab: Lab) -> None:
    """A lab left by an exception still stops its processes and deletes its
    namespaces (and with them the veths and nftables tables)."""
    with pytest.raises(RuntimeError, match="boom"):
        with Lab() as inner:
            topo = build_nat_topology(inner, second_lan=True)
            sleeper = inner.popen(topo.client, [
                sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"])
            sleeper.wait_for_line(lambda line: line == "up", START_TIMEOUT)
            assert sleeper.returncode is None
            names = [node.namespace for node in inner.nodes.values()]
            assert set(names) <= set(lab_namespaces())
            raise RuntimeError("boom")
    assert sleeper.returncode == -signal.SIGTERM
    assert not set(names) & set(lab_namespaces())


def test_stale_namespaces_of_dead_runs_are_cleaned(lab: Lab) -> None:
    """A namespace named after a process that no longer exists (a crashed
    run) is deleted when the next lab starts; live runs' are kept."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=CLI_TIMEOUT)
    stale_run = f"{lab.prefix}-{int(gone.stdout)}-{secrets.token_hex(3)}"
    stale = f"{stale_run}-stale"
    stale_dir = Path(tempfile.gettempdir()) / stale_run
    stale_dir.mkdir()
    (stale_dir / "left-over").write_text("from a crashed run")
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=CLI_TIMEOUT)
    try:
        with Lab() as fresh:
            fresh.host("probe")
            assert stale not in lab_namespaces()
            assert not stale_dir.exists()
            assert lab.workdir.is_dir()
            # The outer lab's process is alive, so its namespaces stay.
            assert lab.host("alive").namespace in lab_namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True, timeout=CLI_TIMEOUT,
                       check=False)
        shutil.rmtree(stale_dir, ignore_errors=True)


# -- daemons across the NAT ----------------------------------------------------


def test_client_behind_nat_pings_public_server(lab: Lab, topo: NatTopology) -> None:
    server = start_daemon(lab, topo.server, topo.server_ip)
    client = start_daemon(lab, topo.client, topo.client_ip)

    done = overlay(lab, client, "ping", server.addr, "-n", "3", "-i", "0")
    assert done.returncode == 0, done.stderr
    pongs = [line for line in done.stdout.splitlines() if line.startswith("pong from ")]
    assert len(pongs) == 3
    assert all(line.startswith(f"pong from {server.peer_id}: seq=") for line in pongs)
    assert f"3 pings to {server.peer_id}" in done.stdout

    # SIGTERM stops each daemon cleanly, taking its API socket with it.
    stop_daemons(client, server)
    for daemon in (client, server):
        assert not daemon.api_socket.exists()


def test_identify_across_nat_reports_public_address(lab: Lab, topo: NatTopology) -> None:
    server = start_daemon(lab, topo.server, topo.server_ip)
    client = start_daemon(lab, topo.client, topo.client_ip)

    connected = overlay_json(lab, client, "connect", server.addr)
    assert connected["peer_id"] == server.peer_id and connected["direction"] == "outbound"

    # The server sees the connection coming from the NAT's public address.
    # Its identify of the client runs on its own after the connection is up.
    peers = poll_json(lab, server, ("peers",),
                      lambda reply: any(p["agent_version"] for p in reply["peers"]),
                      timeout=POLL_TIMEOUT, tries=POLL_TRIES)["peers"]
    assert [p["peer_id"] for p in peers] == [client.peer_id]
    seen = peers[0]
    assert seen["direction"] == "inbound"
    (remote,) = seen["connected_addrs"]
    assert ip_of(remote) == topo.nat1_public_ip, remote
    # The server identified the client: it advertises its private address.
    assert seen["agent_version"].startswith("overlay/")
    assert client.addr.split("/p2p/")[0] in seen["addrs"]

    # What the server's identify tells the client: its observed address is
    # the NAT's public address and mapped port, not 10.0.1.10.
    probe = lab.run(topo.client, [sys.executable, str(PROBE),
                                  str(client.api_socket), server.peer_id])
    assert probe.returncode == 0, probe.stdout + probe.stderr
    told = json.loads(probe.stdout)
    assert told["agent_version"].startswith("overlay/")
    assert told["observed_addr"] == remote, (told, remote)
    # Plain masquerade keeps the daemon's listen port.
    assert udp_port(told["observed_addr"]) == udp_port(client.addr)
    # `overlay id` shows the same observed address the server reported.
    ident = poll_json(lab, client, ("id",), lambda reply: bool(reply["observed_addrs"]),
                      timeout=POLL_TIMEOUT, tries=POLL_TRIES)
    assert [o["addr"] for o in ident["observed_addrs"]] == [remote], ident
    assert ip_of(ident["observed_addrs"][0]["addr"]) == topo.nat1_public_ip

    # The client's own view: connected out to the server's public address.
    (mine,) = overlay_json(lab, client, "peers")["peers"]
    assert mine["peer_id"] == server.peer_id and mine["direction"] == "outbound"
    assert mine["connected_addrs"] == [server.addr.split("/p2p/")[0]]

    # The NAT mapping carries traffic back: the server pings the client at
    # the address it observed (over the live connection).
    back = overlay(lab, server, "ping", f"{remote}/p2p/{client.peer_id}", "-n", "2", "-i", "0")
    assert back.returncode == 0, back.stderr
    assert back.stdout.count(f"pong from {client.peer_id}") == 2


@pytest.mark.parametrize("server_route", [False, True], ids=["no-route", "route-via-nat"])
def test_server_cannot_dial_client_private_address(
        lab: Lab, topo: NatTopology, server_route: bool) -> None:
    """Without a route the packets never leave; with a route to the NAT, its
    firewall drops the unsolicited flow.  Either way the dial fails in
    bounded time with a clear error, and the client sees nothing."""
    if server_route:
        lab.route(topo.server, "10.0.1.0/24", via=topo.nat1_public_ip)
    server = start_daemon(lab, topo.server, topo.server_ip)
    client = start_daemon(lab, topo.client, topo.client_ip)

    started = time.monotonic()
    done = overlay(lab, server, "ping", client.addr, "-n", "1", timeout=DIAL_FAILURE_BOUND + 5)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "pong" not in done.stdout
    assert done.stderr.startswith("overlay ping: ") and "[dial_failed]" in done.stderr, done.stderr
    assert elapsed < DIAL_FAILURE_BOUND, elapsed
    assert overlay_json(lab, client, "peers")["peers"] == []
    assert overlay_json(lab, server, "peers")["peers"] == []


def test_two_nated_clients_need_more_than_a_direct_dial(lab: Lab) -> None:
    """Two LANs, the second behind a symmetric (random-port) NAT: the server
    sees each client at its own NAT's public address, and a direct dial
    from one client to the other's public mapping is dropped by that NAT.
    This is the starting point that hole punching has to beat."""
    topo = build_nat_topology(lab, second_lan=True, nat2_mode=NatMode.RANDOM)
    assert topo.client2 is not None and topo.nat2 is not None
    server = start_daemon(lab, topo.server, topo.server_ip)
    client = start_daemon(lab, topo.client, topo.client_ip)
    client2 = start_daemon(lab, topo.client2, topo.client2.address())
    for daemon in (client, client2):
        assert overlay_json(lab, daemon, "connect", server.addr)["peer_id"] == server.peer_id

    peers = {p["peer_id"]: p for p in overlay_json(lab, server, "peers")["peers"]}
    assert set(peers) == {client.peer_id, client2.peer_id}
    (seen1,) = peers[client.peer_id]["connected_addrs"]
    (seen2,) = peers[client2.peer_id]["connected_addrs"]
    assert ip_of(seen1) == topo.nat1_public_ip and udp_port(seen1) == udp_port(client.addr)
    assert ip_of(seen2) == topo.nat2.address("public")
    # A symmetric NAT does not keep the port (1 in ~28,000 chance it does).
    assert udp_port(seen2) != udp_port(client2.addr), (seen2, client2.addr)

    started = time.monotonic()
    done = overlay(lab, client, "ping", f"{seen2}/p2p/{client2.peer_id}", "-n", "1",
                   timeout=DIAL_FAILURE_BOUND + 5)
    assert done.returncode == 1 and "[dial_failed]" in done.stderr, (done.stdout, done.stderr)
    assert time.monotonic() - started < DIAL_FAILURE_BOUND
    assert [p["peer_id"] for p in overlay_json(lab, client2, "peers")["peers"]] == [server.peer_id]


# -- the DHT across the NAT ----------------------------------------------------

def wait_for_dht_peer(lab: Lab, daemon: Daemon) -> None:
    """Until ``daemon``'s routing table holds a peer (bounded)."""
    table = poll_json(lab, daemon, ("dht", "table"), lambda reply: reply["size"] >= 1,
                      timeout=POLL_TIMEOUT, tries=POLL_TRIES)
    assert table["size"] >= 1, f"{daemon.node.name}'s table: {table}"


def test_dht_values_cross_the_nat(lab: Lab, topo: NatTopology) -> None:
    """The client behind the NAT bootstraps from the public server; a value
    put on either side is read on the other."""
    server = start_daemon(lab, topo.server, topo.server_ip)
    client = start_daemon(lab, topo.client, topo.client_ip, bootstrap=[server.addr])
    wait_for_dht_peer(lab, client)

    for writer, reader in ((client, server), (server, client)):
        value = f"from {writer.node.name} {secrets.token_hex(8)}"
        put = overlay_json(lab, writer, "dht", "put", value)
        assert put["key"] == "/v/" + hashlib.sha256(value.encode()).hexdigest()
        assert put["replicas"] >= 1, put
        got = overlay_json(lab, reader, "dht", "get", put["key"])
        assert got["value"] == value, got
