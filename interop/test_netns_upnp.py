"""UPnP IGD across the lab's NAT: a real daemon maps its QUIC port on the
lab's test IGD and a public peer then dials it directly.

    server 203.0.113.10   daemons A (B's AutoNAT server) and C (public)
      │ public switch
    nat1 203.0.113.1 ── client 10.0.1.10   daemon B (port-restricted cone)
         └ igd_server.py (SSDP on the LAN, SOAP → nftables DNAT)

The IGD is ``netns/igd_server.py`` (async-upnp-client's server support),
not miniupnpd: miniupnpd refuses a TEST-NET WAN address (docs/nat.md,
"UPnP").  B gets a default route via nat1 so the daemon's rule (private
default gateway) lets UPnP run; nat1 itself has no route out, so nothing
leaves the lab.  The router's forward chain admits DNATed flows, as a home
router's UPnP hook does.  Needs root, iproute2 and nftables.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import (  # noqa: E402
    Lab,
    LabProcess,
    LabUnavailable,
    Node,
    ToolMissing,
    build_nat_topology,
    require_lab,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

START_TIMEOUT = 15.0
CLI_TIMEOUT = 15.0
MAP_TIMEOUT = 30.0
IGD = HERE / "netns" / "igd_server.py"
WAN_SEARCH = """
import asyncio, sys
from overlay.nat.upnp import IgdNotFound, discover_igd
try:
    print(asyncio.run(discover_igd(sys.argv[1], 2.0)))
except IgdNotFound:
    print("IgdNotFound")
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    missing: ToolMissing | None = None
    try:
        require_lab()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    except ToolMissing as exc:
        missing = exc
    if missing is not None:  # outside the except block: one clear line
        pytest.fail(str(missing), pytrace=False)
    with Lab() as built:
        yield built


@dataclass(frozen=True)
class Daemon:
    node: Node
    home: Path
    peer_id: str
    addr: str
    proc: LabProcess


def _overlay(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "overlay.cli", *args]


def start_daemon(lab: Lab, node: Node, name: str, ip: str, *extra: str) -> Daemon:
    home = lab.workdir / name
    home.mkdir(parents=True)
    (home / "config.toml").write_text('version = 1\nautonat = "lab"\nmdns = false\n')
    argv = ["daemon", "--home", str(home), "--json", "--listen", f"/ip4/{ip}/udp/0/quic-v1",
            "--dns", "off", *extra]
    proc = lab.popen(node, _overlay(argv))
    line = proc.wait_for_line(lambda text: text.startswith("{") and '"ready"' in text,
                              START_TIMEOUT)
    ready = json.loads(line)
    [addr] = ready["addrs"]
    return Daemon(node, home, ready["peer_id"], addr, proc)


def overlay_json(lab: Lab, daemon: Daemon, *args: str) -> Any:
    done = lab.run(daemon.node, _overlay(["--home", str(daemon.home), *args, "--json"]),
                   timeout=CLI_TIMEOUT)
    assert done.returncode == 0, f"overlay {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return json.loads(done.stdout)


def poll(lab: Lab, daemon: Daemon, args: Sequence[str], until: Callable[[Any], bool]) -> Any:
    """Repeat an `overlay … --json` command until ``until(reply)``; each try
    is a whole CLI run (about half a second), so the loop paces itself."""
    deadline = time.monotonic() + MAP_TIMEOUT
    while True:
        reply = overlay_json(lab, daemon, *args)
        if until(reply) or time.monotonic() > deadline:
            return reply


def igd_rules(lab: Lab, nat: Node) -> str:
    done = lab.run(nat, ["nft", "list", "table", "ip", "igd"], timeout=10)
    return done.stdout if done.returncode == 0 else ""


def test_upnp_maps_the_quic_port_and_a_public_peer_dials_it_directly(lab: Lab) -> None:
    topo = build_nat_topology(lab)
    lan_gw = topo.nat1.address("lan")
    # The home router's UPnP hook: forward what its DNAT rules let in.
    lab.run(topo.nat1, ["nft", "insert", "rule", "ip", "lab_nat", "forward",
                        "iifname", "public", "ct", "status", "dnat", "accept"], timeout=10)
    # A home LAN's default route; nat1 has none, so nothing goes further.
    added = lab.run(topo.client, ["ip", "route", "add", "default", "via", lan_gw], timeout=10)
    assert added.returncode == 0, added.stderr
    igd = lab.popen(topo.nat1, [sys.executable, str(IGD), "--lan-ip", lan_gw,
                                "--lan-net", "10.0.1.0/24", "--wan-ip", topo.nat1_public_ip,
                                "--wan-if", "public"])
    igd.wait_for_line(lambda text: text.startswith("ready "), START_TIMEOUT)

    # SSDP is answered on the LAN only: a search from the public side finds nothing.
    wan_search = lab.run(topo.server, [sys.executable, "-c", WAN_SEARCH, topo.server_ip],
                         timeout=20)
    assert wan_search.stdout.strip() == "IgdNotFound", (wan_search.stdout, wan_search.stderr)

    a = start_daemon(lab, topo.server, "a", topo.server_ip)
    b = start_daemon(lab, topo.client, "b", topo.client_ip, "--bootstrap", a.addr)
    b_port = int(b.addr.split("/udp/")[1].split("/")[0])

    status = poll(lab, b, ["nat"], lambda r: (r.get("upnp") or {}).get("mapping") is not None)
    upnp = status.get("upnp")
    assert upnp and upnp["running"] and upnp["mapping"], (status, igd.describe())
    mapped = f"/ip4/{topo.nat1_public_ip}/udp/{b_port}/quic-v1"
    assert upnp["mapping"]["multiaddr"] == mapped, upnp
    assert upnp["igd"].startswith(f"http://{lan_gw}:"), upnp
    assert {"addr": f"{topo.nat1_public_ip}:{b_port}", "multiaddr": mapped,
            "sources": ["upnp"]} in status["public_addrs"], status
    igd.wait_for_line(lambda text: text.startswith("mapped UDP"), 5)
    assert f"dnat to {topo.client_ip}:{b_port}" in igd_rules(lab, topo.nat1)
    # The mapping is an AutoNAT candidate: A dials it back, so B is public
    # through it and advertises it.
    b_id = poll(lab, b, ["id"], lambda r: r["reachability"] == "public")
    assert b_id["reachability"] == "public", b_id
    assert any(r.startswith(mapped) and "dialled back" in r
               for r in b_id["reachability_reasons"]), b_id
    assert mapped in {x.split("/p2p/")[0] for x in b_id["addrs"]}, b_id

    # C, on the public side and never connected to B, dials the NAT's WAN
    # address straight through the mapping.
    c = start_daemon(lab, topo.server, "c", topo.server_ip)
    pinged = overlay_json(lab, c, "ping", f"{mapped}/p2p/{b.peer_id}", "--count", "2",
                          "--interval", "0")
    assert pinged["path"] == "direct", pinged
    peers = {p["peer_id"]: p for p in overlay_json(lab, c, "peers")["peers"]}
    assert peers[b.peer_id]["connections"][0]["addr"].startswith(mapped), peers

    assert b.proc.stop() == 0, b.proc.describe()
    igd.wait_for_line(lambda text: text == f"unmapped UDP {b_port}", 5)
    assert "dnat" not in igd_rules(lab, topo.nat1)
    for daemon in (c, a):
        assert daemon.proc.stop() == 0, daemon.proc.describe()
    assert igd.stop() == 0, igd.describe()
    assert igd_rules(lab, topo.nat1) == ""
