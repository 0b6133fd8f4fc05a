"""DCUtR hole punching across the lab's NATs, with real daemons.

    server  203.0.113.10  introducer (`overlay daemon --introducer`, relay)
      │ public switch
    nat1 203.0.113.1 ── client  10.0.1.10  `--relay <introducer>`
    nat2 203.0.113.2 ── client2 10.0.2.10  `--relay <introducer>`

A dials B at B's circuit address through the introducer; B (dialled
through the relay) starts DCUtR.  Behind two port-restricted cones (the
default `masquerade`) the punch succeeds and `overlay peers --json` shows
`path: direct, punched: true`; the time from the relayed connection to the
direct one is measured.  With B behind a symmetric NAT (`random-fully`)
the punch cannot work (B's mapping towards A is not the one the relay saw):
the connection stays relayed and `holepunch_status` says why.

Both clients run with `autonat = "lab"`: the lab's Internet is the
documentation range 203.0.113.0/24, which only the lab flag lets DCUtR
punch.  Needs root, iproute2 and nftables; without root the tests skip.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import (  # noqa: E402
    PUBLIC_NET,
    Lab,
    NatKind,
    NatMode,
    NatTopology,
    Node,
    UdpTimeouts,
    build_nat_topology,
    delayed_link,
)
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    Daemon,
    api_call,
    lab_for_test,
    overlay_json,
    poll,
    wait_reserved,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CLI_TIMEOUT = 30.0
POLL_TRIES = 80

def start_daemon(lab: Lab, node: Node, ip: str, *extra: str) -> Daemon:
    return daemons.start_daemon(lab, node, ip, "--dns", "off", "--no-mdns", *extra,
                                config=AUTONAT_LAB_CONFIG, cli_timeout=CLI_TIMEOUT)


def holepunch_status(lab: Lab, daemon: Daemon) -> Any:
    return api_call(lab, daemon, "holepunch_status")


def reserved(lab: Lab, daemon: Daemon) -> str:
    """The daemon's circuit address once it holds a reservation."""
    return str(wait_reserved(lab, daemon, POLL_TRIES)["advertised"][0])


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


def _three(lab: Lab, topo: NatTopology) -> tuple[Daemon, Daemon, Daemon, str]:
    assert topo.client2 is not None
    intro = start_daemon(lab, topo.server, topo.server_ip, "--introducer")
    # No --bootstrap: through the DHT the two would find and dial each other
    # by themselves; here the relayed connection starts at `overlay connect`.
    a = start_daemon(lab, topo.client, topo.client_ip, "--relay", intro.addr)
    b = start_daemon(lab, topo.client2, topo.client2.address(), "--relay", intro.addr)
    reserved(lab, a)
    return intro, a, b, reserved(lab, b)


def _peer(lab: Lab, daemon: Daemon, peer_id: str) -> dict[str, Any]:
    peers = {p["peer_id"]: p for p in overlay_json(lab, daemon, "peers")["peers"]}
    return dict(peers.get(peer_id, {}))


def test_two_port_restricted_cones_punch_from_relayed_to_direct(lab: Lab) -> None:
    topo = build_nat_topology(lab, second_lan=True, nat_mode=NatMode.CONE)
    _, a, b, b_circuit = _three(lab, topo)
    connected = overlay_json(lab, a, "connect", b_circuit)
    started = time.monotonic()
    assert connected["path"] == "relayed" and connected["punched"] is False, connected
    to_b = poll(lambda: _peer(lab, a, b.peer_id), lambda p: bool(p.get("punched")),
                tries=POLL_TRIES)
    seen_after = time.monotonic() - started
    assert to_b.get("path") == "direct" and to_b.get("punched") is True, (
        to_b, holepunch_status(lab, b), holepunch_status(lab, a))
    # The direct connection leads to B's NAT, not to its LAN address.
    assert "/ip4/203.0.113.2/udp/" in to_b["connections"][0]["addr"], to_b
    pinged = overlay_json(lab, a, "ping", f"/p2p/{b.peer_id}", "--count", "3",
                          "--interval", "0")
    assert pinged["path"] == "direct" and pinged["punched"] is True, pinged
    b_status = holepunch_status(lab, b)
    a_status = holepunch_status(lab, a)
    done = b_status["recent"][-1]
    assert done["role"] == "initiator" and done["ok"] and done["how"] == "punched", b_status
    assert a_status["recent"][-1]["role"] == "responder" and a_status["recent"][-1]["ok"]
    print(f"\nrelayed -> direct: initiator {done['elapsed_ms']} ms after the relayed "
          f"connection arrived, {done['exchange_ms']} ms after its CONNECT "
          f"(relayed RTT {done['rtt_ms']} ms, attempt {done['attempts']}, "
          f"{b_status['counters']['punch_packets']} punch packets); "
          f"seen by `overlay peers` {seen_after * 1000:.0f} ms after `overlay connect`")
    # The relayed connection closes once idle.
    to_b = poll(lambda: _peer(lab, a, b.peer_id),
                lambda p: [c["path"] for c in p.get("connections", [])] == ["direct"],
                tries=POLL_TRIES)
    assert [c["path"] for c in to_b["connections"]] == ["direct"], to_b


def test_a_symmetric_nat_stays_relayed_and_says_why(lab: Lab) -> None:
    topo = build_nat_topology(lab, second_lan=True, nat_mode=NatMode.CONE,
                              nat2_mode=NatMode.FULLY_RANDOM)
    _, a, b, b_circuit = _three(lab, topo)
    connected = overlay_json(lab, a, "connect", b_circuit)
    assert connected["path"] == "relayed"
    # Three attempts take about 17 s (5 s punch windows, 1 s and 2 s
    # back-off); each poll is one short process.
    status = poll(lambda: holepunch_status(lab, b), lambda s: bool(s["recent"]), timeout=60)
    assert status["recent"], status
    done = status["recent"][-1]
    assert not done["ok"] and done["attempts"] == 3, status
    assert "no direct connection after 3 attempts" in done["how"], status
    print(f"\nsymmetric NAT: still relayed after {done['elapsed_ms']} ms: {done['how']}")
    to_b = _peer(lab, a, b.peer_id)
    assert to_b["path"] == "relayed" and to_b["punched"] is False, to_b
    pinged = overlay_json(lab, a, "ping", f"/p2p/{b.peer_id}", "--count", "1")
    assert pinged["path"] == "relayed", pinged


UPLINK_DELAY_MS = 20.0
"""One way, on each NAT's public link: 80 ms between the two clients
directly and through the introducer alike."""
SHORT_UDP = UdpTimeouts(unreplied=20, stream=20)
"""Mappings expire 20 s after the last packet: above QUIC's 15 s keep-alive."""


def _delayed_topology(lab: Lab) -> NatTopology:
    public = lab.switch("public")
    server = lab.host("server")
    lab.link(server, public, "203.0.113.10/24", a_ifname="public")
    nodes: list[Node] = []
    for index in (1, 2):
        nat = lab.router(f"nat{index}")
        client = lab.host("client" if index == 1 else f"client{index}")
        delayed_link(lab, nat, public, f"203.0.113.{index}/24", delay_ms=UPLINK_DELAY_MS,
                     a_ifname="public", name=f"dnat{index}")
        lab.link(client, nat, f"10.0.{index}.10/24", f"10.0.{index}.1/24",
                 a_ifname="lan", b_ifname="lan")
        lab.route(client, PUBLIC_NET, via=f"10.0.{index}.1")
        lab.nat(nat, "public", NatKind.PORT_RESTRICTED_CONE, udp_timeouts=SHORT_UDP)
        nodes += [nat, client]
    return NatTopology(public, server, nodes[0], nodes[1], nodes[2], nodes[3])


def test_with_delay_the_punch_is_timed_and_keep_alive_outlives_the_nat_timeout(
        lab: Lab) -> None:
    topo = _delayed_topology(lab)
    _, a, b, b_circuit = _three(lab, topo)
    overlay_json(lab, a, "connect", b_circuit)
    to_b = poll(lambda: _peer(lab, a, b.peer_id), lambda p: bool(p.get("punched")),
                tries=POLL_TRIES)
    assert to_b.get("punched") is True, (to_b, holepunch_status(lab, b))
    done = holepunch_status(lab, b)["recent"][-1]
    assert done["ok"] and done["how"] == "punched"
    # The relayed RTT crosses both delayed uplinks twice.
    assert done["rtt_ms"] >= 4 * UPLINK_DELAY_MS, done
    direct_addr = [c["addr"] for c in to_b["connections"] if c["path"] == "direct"]
    print(f"\ndelayed uplinks ({UPLINK_DELAY_MS:g} ms each way): relayed -> direct "
          f"{done['elapsed_ms']} ms after the relayed connection, {done['exchange_ms']} ms "
          f"after CONNECT (relayed RTT "
          f"{done['rtt_ms']} ms, attempt {done['attempts']})")
    # Idle for longer than the NATs keep a mapping: only QUIC's keep-alive
    # holds it open.  Waiting out the timeout is what this test is about.
    time.sleep(SHORT_UDP.stream + 6)
    pinged = overlay_json(lab, a, "ping", f"/p2p/{b.peer_id}", "--count", "2",
                          "--interval", "0")
    assert pinged["path"] == "direct" and pinged["punched"] is True, pinged
    after = _peer(lab, a, b.peer_id)
    assert [c["addr"] for c in after["connections"] if c["path"] == "direct"] == direct_addr
    assert min(pinged["rtts_ms"]) >= 4 * UPLINK_DELAY_MS, pinged
