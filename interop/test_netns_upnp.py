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

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, Node, build_nat_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    START_TIMEOUT,
    Daemon,
    bare,
    lab_for_test,
    overlay_json,
    poll_json,
    stop_daemons,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

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
    yield from lab_for_test()


def start_daemon(lab: Lab, node: Node, name: str, ip: str, *extra: str) -> Daemon:
    return daemons.start_daemon(lab, node, ip, "--dns", "off", *extra, name=name,
                                config=AUTONAT_LAB_CONFIG + "mdns = false\n")


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
    b_port = b.port

    status = poll_json(lab, b, ["nat"],
                       lambda r: (r.get("upnp") or {}).get("mapping") is not None,
                       timeout=MAP_TIMEOUT)
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
    b_id = poll_json(lab, b, ["id"], lambda r: r["reachability"] == "public",
                     timeout=MAP_TIMEOUT)
    assert b_id["reachability"] == "public", b_id
    assert any(r.startswith(mapped) and "dialled back" in r
               for r in b_id["reachability_reasons"]), b_id
    assert mapped in {bare(x) for x in b_id["addrs"]}, b_id

    # C, on the public side and never connected to B, dials the NAT's WAN
    # address straight through the mapping.
    c = start_daemon(lab, topo.server, "c", topo.server_ip)
    pinged = overlay_json(lab, c, "ping", f"{mapped}/p2p/{b.peer_id}", "--count", "2",
                          "--interval", "0")
    assert pinged["path"] == "direct", pinged
    peers = {p["peer_id"]: p for p in overlay_json(lab, c, "peers")["peers"]}
    assert peers[b.peer_id]["connections"][0]["addr"].startswith(mapped), peers

    stop_daemons(b)
    igd.wait_for_line(lambda text: text == f"unmapped UDP {b_port}", 5)
    assert "dnat" not in igd_rules(lab, topo.nat1)
    stop_daemons(c, a)
    assert igd.stop() == 0, igd.describe()
    assert igd_rules(lab, topo.nat1) == ""
