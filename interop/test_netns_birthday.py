"""Birthday punching across the lab's NATs, with real daemons.

    public switch 203.0.113.0/24
      ├── intro   203.0.113.10   introducer, relay, STUN on its QUIC port
      ├── intro2  203.0.113.11   introducer (a second STUN server on another IP)
      ├── nat1    203.0.113.101  port-restricted cone ── peer1 10.0.1.10  (A)
      └── nat2    203.0.113.102  symmetric (random or counting up) ── peer2 10.0.2.10  (B)

Both peers ask both introducers for STUN, so each knows its NAT's mapping
behaviour (one public port towards both, or one each).  A dials B at B's
circuit address; B (dialled through the relay) starts the upgrade and,
since B's NAT is symmetric, speaks ``/ovl/birthday/1.0.0`` before DCUtR:
B opens 256 sockets that each send to A's public endpoint, A probes B's
NAT's ports (the predicted ones first), and the socket a probe reaches
dials A over QUIC.  `overlay peers --json` on A then shows `path: direct,
punched: true`.  Two symmetric NATs stay relayed, and `holepunch_status`
says why.  Needs root, iproute2 and nftables; without root the tests skip.
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

from netns import Lab, NatKind, build_matrix_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    Daemon,
    api_call,
    lab_for_test,
    overlay_json,
    poll,
    poll_json,
    wait_reserved,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]

CLI_TIMEOUT = 30.0
POLL_TRIES = 80
INTRO2_IP = "203.0.113.11"
DIRECT_WITHIN = 20.0
"""The issue's bound: relayed to direct within 20 s."""


def start_daemon(lab: Lab, node: Any, ip: str, *extra: str) -> Daemon:
    return daemons.start_daemon(lab, node, ip, "--dns", "off", "--no-mdns", *extra,
                                config=AUTONAT_LAB_CONFIG, cli_timeout=CLI_TIMEOUT)


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


def _peer(lab: Lab, daemon: Daemon, peer_id: str) -> dict[str, Any]:
    peers = {p["peer_id"]: p for p in overlay_json(lab, daemon, "peers")["peers"]}
    return dict(peers.get(peer_id, {}))


def _setup(lab: Lab, kind_a: NatKind, kind_b: NatKind,
           wan_delay_ms: float = 0.0) -> tuple[Daemon, Daemon, str]:
    """Introducers, A behind ``kind_a`` and B behind ``kind_b``, both with
    a relay reservation and a STUN verdict; returns (A, B, B's circuit address)."""
    topo = build_matrix_topology(lab, [kind_a, kind_b], wan_delay_ms=wan_delay_ms)
    intro2_node = topo.add_public_host(lab, "intro2", INTRO2_IP)
    intro = start_daemon(lab, topo.introducer, topo.introducer_ip, "--introducer")
    intro2 = start_daemon(lab, intro2_node, INTRO2_IP, "--introducer")
    stun = ["--stun", f"{topo.introducer_ip}:{intro.port}", "--stun", f"{INTRO2_IP}:{intro2.port}"]
    peer_a, peer_b = topo.peers
    a = start_daemon(lab, peer_a.client, peer_a.client_ip, "--relay", intro.addr, *stun)
    b = start_daemon(lab, peer_b.client, peer_b.client_ip, "--relay", intro.addr, *stun)
    wait_reserved(lab, a, POLL_TRIES)
    b_circuit = str(wait_reserved(lab, b, POLL_TRIES)["advertised"][0])
    for daemon, kind in ((a, kind_a), (b, kind_b)):
        want = "symmetric" if kind.mapping != "endpoint-independent" else "port-restricted cone"
        reply = poll_json(lab, daemon, ["nat"],
                          lambda r, w=want: r.get("nat_type") == w
                          or (w != "symmetric" and "cone" in str(r.get("nat_type"))),
                          tries=POLL_TRIES)
        assert reply["nat_type"] == want or "cone" in reply["nat_type"], reply
    return a, b, b_circuit


def _birthday_against_cone(lab: Lab, hard: NatKind, *, hard_dials: bool = False,
                           wan_delay_ms: float = 0.0) -> dict[str, Any]:
    """B is the symmetric side, or A (the one that dials through the relay)
    with ``hard_dials``."""
    kinds = (hard, NatKind.PORT_RESTRICTED_CONE) if hard_dials else (
        NatKind.PORT_RESTRICTED_CONE, hard)
    a, b, b_circuit = _setup(lab, *kinds, wan_delay_ms=wan_delay_ms)
    connected = overlay_json(lab, a, "connect", b_circuit)
    started = time.monotonic()
    assert connected["path"] == "relayed" and connected["punched"] is False, connected
    to_b = poll(lambda: _peer(lab, a, b.peer_id), lambda p: bool(p.get("punched")),
                timeout=DIRECT_WITHIN + 10)
    seen_after = time.monotonic() - started
    b_status = api_call(lab, b, "holepunch_status")
    a_status = api_call(lab, a, "holepunch_status")
    assert to_b.get("path") == "direct" and to_b.get("punched") is True, (
        to_b, b_status, a_status)
    assert seen_after <= DIRECT_WITHIN, (seen_after, b_status)
    # The direct connection leads to B's NAT, on the port of the socket
    # that won, not to B's listening port's mapping.
    direct = [c for c in to_b["connections"] if c["path"] == "direct"]
    assert direct and "/ip4/203.0.113.102/udp/" in direct[0]["addr"], to_b
    hard_status, easy_status = (a_status, b_status) if hard_dials else (b_status, a_status)
    hard_done = hard_status["birthday"]["recent"][-1]
    easy_done = easy_status["birthday"]["recent"][-1]
    assert hard_done["ok"] and hard_done["role"] == "hard", b_status
    assert easy_done["ok"] and easy_done["role"] == "easy", a_status
    # Inside the bounds: 256 sockets, 2048 probes.
    assert hard_status["birthday"]["counters"]["sockets_opened"] <= 256
    assert easy_status["birthday"]["counters"]["probes_sent"] <= 2048
    dcutr_done = b_status["recent"][-1]  # B, dialled through the relay, ran it
    side = "easy" if hard_dials else "hard"
    assert dcutr_done["ok"] and dcutr_done["how"].startswith(f"birthday ({side} side"), b_status
    pinged = overlay_json(lab, a, "ping", f"/p2p/{b.peer_id}", "--count", "3",
                          "--interval", "0")
    assert pinged["path"] == "direct" and pinged["punched"] is True, pinged
    delay = f", {wan_delay_ms:g} ms on each WAN link" if wan_delay_ms else ""
    print(f"\n{hard.value}{' (dialling)' if hard_dials else ''} vs port-restricted cone"
          f"{delay}: direct {seen_after * 1000:.0f} ms after "
          f"`overlay connect` (B's session {dcutr_done['elapsed_ms']} ms, birthday "
          f"exchange {hard_done['elapsed_ms']} ms); {easy_done['packets']} probes, "
          f"{hard_done['packets']} sockets, winning public port {easy_done['port']} "
          f"(probe #{easy_done['probe_index']}); READY ranges "
          f"{hard_status['birthday'].get('last_ready')}")
    return {"seen_after": seen_after, "probes": easy_done["packets"],
            "port": easy_done["port"]}


def test_symmetric_random_against_port_restricted_cone_goes_direct(lab: Lab) -> None:
    _birthday_against_cone(lab, NatKind.SYMMETRIC_RANDOM)


def test_symmetric_sequential_against_port_restricted_cone_is_predicted(lab: Lab) -> None:
    result = _birthday_against_cone(lab, NatKind.SYMMETRIC_SEQUENTIAL)
    # The counting-up NAT's ports are in the predicted range: found among
    # the first probes (256 kept-port guesses, then the range after the
    # highest port observed), not by the random spray.
    assert result["probes"] <= 256 + 512 + 16, result


def test_a_symmetric_dialler_against_a_cone_goes_direct(lab: Lab) -> None:
    _birthday_against_cone(lab, NatKind.SYMMETRIC_RANDOM, hard_dials=True)


def test_with_wan_delay_the_spray_still_wins_within_the_bound(lab: Lab) -> None:
    """80 ms between the peers (20 ms on each of the four WAN crossings of a
    round trip): probes in flight when the winner is found are wasted, and
    the handshake takes a round trip more."""
    _birthday_against_cone(lab, NatKind.SYMMETRIC_RANDOM, wan_delay_ms=20.0)


def test_symmetric_against_symmetric_stays_relayed_and_says_why(lab: Lab) -> None:
    a, b, b_circuit = _setup(lab, NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_RANDOM)
    connected = overlay_json(lab, a, "connect", b_circuit)
    assert connected["path"] == "relayed"
    status = poll(lambda: api_call(lab, b, "holepunch_status"), lambda s: bool(s["recent"]),
                  timeout=30)
    done = status["recent"][-1]
    assert not done["ok"] and "both sides are behind symmetric NATs" in done["how"], status
    a_status = api_call(lab, a, "holepunch_status")
    assert a_status["birthday"]["counters"]["probes_sent"] == 0, a_status
    assert status["birthday"]["counters"]["sockets_opened"] == 0, status
    print(f"\nsymmetric vs symmetric: still relayed after {done['elapsed_ms']} ms: "
          f"{done['how']}")
    to_b = _peer(lab, a, b.peer_id)
    assert to_b["path"] == "relayed" and to_b["punched"] is False, to_b
