"""Re-punching across the lab's NATs when a mapping changes, with real daemons.

    server  203.0.113.10  introducer (`overlay daemon --introducer`, relay)
      │ public switch
    nat1 203.0.113.1 ── client  10.0.1.10  A, `--relay <introducer>`
    nat2 203.0.113.2 ── client2 10.0.2.10  B, `--relay <introducer>`

A dials B at its circuit address; DCUtR punches (A, the responder, is the
QUIC client of the direct connection, B its server).  Then one NAT changes
its mapping:

- a cone NAT "reboots" onto other ports (its UDP masquerade moves to
  10000-10999, below the ephemeral ports, and its conntrack table is
  flushed): the punched path dies,
  since the other cone only lets in the old port.  While A keeps pinging B
  (the peer matters), the re-punch service notices the silence, redials
  through the relay and DCUtR punches again; every ping is answered;
- the same, with nobody using the connection: nothing re-punches;
- a symmetric NAT on A's side (the QUIC client) flushed in front of a full
  cone: A's next packets leave from a new port and B's QUIC follows them
  (connection migration): the connection lives, nothing is re-punched.

Needs root, iproute2, nftables and conntrack; without root the tests skip.
"""

from __future__ import annotations

import json
import subprocess
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

from netns import Lab, NatKind, NatTopology, Node, build_nat_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    Daemon,
    api_call,
    lab_for_test,
    overlay,
    overlay_json,
    poll,
    udp_port,
    wait_reserved,
)

pytestmark = [pytest.mark.netns]

CLI_TIMEOUT = 30.0
POLL_TRIES = 80
DIRECT_AGAIN_WITHIN = 45.0
"""Seconds from the mapping change to a direct connection again: detection
(6 s of silence) plus the relay dial and a punch, with room for DCUtR's
retries on a loaded machine."""
IDLE_WITHIN = 120.0
"""Seconds to wait until neither side counts the other as busy (no stream
open, no data for the re-punch service's 30 s ``busy_window``)."""
MOVED_PORTS = (10000, 10999)
"""Where a "rebooted" NAT maps UDP flows: below the kernel's ephemeral
range (32768-60999), so never a daemon's own port.  Masquerade keeps the
inside port when the range holds it: with a range inside the ephemeral one
(40000-40999 before) a daemon listening there kept its public port, the
mapping did not move at all, and nothing had to be re-punched."""


def start_daemon(lab: Lab, node: Node, ip: str, *extra: str) -> Daemon:
    return daemons.start_daemon(lab, node, ip, "--dns", "off", "--no-mdns", *extra,
                                config=AUTONAT_LAB_CONFIG, cli_timeout=CLI_TIMEOUT)


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test([("conntrack", "conntrack")])


@dataclass(frozen=True)
class Pair:
    topo: NatTopology
    a: Daemon
    b: Daemon


def punched_pair(lab: Lab, kind1: NatKind, kind2: NatKind) -> Pair:
    """A and B behind their NATs, connected through the introducer and then
    directly (punched, or B's unilateral dial)."""
    topo = build_nat_topology(lab, second_lan=True, nat_mode=kind1, nat2_mode=kind2)
    assert topo.client2 is not None
    intro = start_daemon(lab, topo.server, topo.server_ip, "--introducer")
    a = start_daemon(lab, topo.client, topo.client_ip, "--relay", intro.addr)
    b = start_daemon(lab, topo.client2, topo.client2.address(), "--relay", intro.addr)
    wait_reserved(lab, a, POLL_TRIES)
    b_circuit = str(wait_reserved(lab, b, POLL_TRIES)["advertised"][0])
    assert overlay_json(lab, a, "connect", b_circuit)["path"] == "relayed"
    to_b = poll(lambda: peer_entry(lab, a, b.peer_id),
                lambda p: [c["path"] for c in p.get("connections", [])] == ["direct"],
                tries=POLL_TRIES)
    assert [c["path"] for c in to_b["connections"]] == ["direct"], (
        to_b, api_call(lab, b, "holepunch_status"))
    return Pair(topo, a, b)


def peer_entry(lab: Lab, daemon: Daemon, peer_id: str) -> dict[str, Any]:
    peers = {p["peer_id"]: p for p in overlay_json(lab, daemon, "peers")["peers"]}
    return dict(peers.get(peer_id, {}))


def repunch_stats(lab: Lab, daemon: Daemon) -> dict[str, int]:
    return dict(overlay_json(lab, daemon, "stats")["repunch"])


def move_cone_ports(lab: Lab, nat: Node, inside: Daemon) -> None:
    """The NAT comes back with its UDP mappings on other ports (a reboot);
    ``inside``, the daemon behind it, must then get a new public port."""
    low, high = MOVED_PORTS
    assert not low <= udp_port(inside.addr) <= high, inside.addr
    rules = [["nft", "flush", "chain", "ip", "lab_nat", "postrouting"],
             ["nft", "add", "rule", "ip", "lab_nat", "postrouting", "oifname", "public",
              "meta", "l4proto", "udp", "masquerade", "to", f":{low}-{high}"],
             ["nft", "add", "rule", "ip", "lab_nat", "postrouting", "oifname", "public",
              "masquerade"]]
    for argv in rules:
        done = lab.run(nat, argv)
        assert done.returncode == 0, (argv, done.stderr)
    flush_conntrack(lab, nat)


def flush_conntrack(lab: Lab, nat: Node) -> None:
    done = lab.run(nat, ["conntrack", "-F"])
    assert done.returncode == 0, done.stderr


@dataclass(frozen=True)
class Ping:
    at: float
    """Seconds after the mapping change that the ping was asked for."""
    took: float
    ok: bool
    path: str | None
    punched: bool
    error: str


def ping(lab: Lab, a: Daemon, b: Daemon, since: float) -> Ping:
    asked = time.monotonic()
    try:
        done = overlay(lab, a, "ping", f"/p2p/{b.peer_id}", "--json")
    except subprocess.TimeoutExpired:
        return Ping(asked - since, time.monotonic() - asked, False, None, False, "timed out")
    took = time.monotonic() - asked
    if done.returncode != 0:
        return Ping(asked - since, took, False, None, False, done.stderr.strip()[-300:])
    reply = json.loads(done.stdout)
    return Ping(asked - since, took, True, reply["path"], bool(reply["punched"]), "")


def ping_until_repunched(lab: Lab, pair: Pair) -> tuple[list[Ping], dict[str, Any], float]:
    """Ping B from A (one CLI run after the other) until A reports a
    re-punch that ended direct again; returns the pings, A's ``repunch``
    entry for B, and when `overlay peers` first showed it."""
    pings: list[Ping] = []
    since = time.monotonic()
    entry: dict[str, Any] = {}
    while time.monotonic() - since < DIRECT_AGAIN_WITHIN:
        pings.append(ping(lab, pair.a, pair.b, since))
        entry = peer_entry(lab, pair.a, pair.b.peer_id)
        repunch = entry.get("repunch") or {}
        if repunch.get("last_outcome") == "direct again" and entry.get("path") == "direct":
            break
    return pings, entry, time.monotonic() - since


def logs(daemon: Daemon) -> list[str]:
    """What the daemon logged about punching and re-punching."""
    return [line for line in daemon.proc.stderr_text().splitlines()
            if "punch" in line or "DCUtR" in line or "direct connection" in line]


def show(pings: list[Ping]) -> str:
    return "; ".join(f"{p.at:.1f}s {'ok ' + str(p.path) if p.ok else p.error} ({p.took:.1f}s)"
                     for p in pings)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("side", [1, 2], ids=["client-side-nat", "server-side-nat"])
def test_a_cone_that_moves_its_ports_is_repunched_while_pings_continue(
        lab: Lab, side: int) -> None:
    pair = punched_pair(lab, NatKind.PORT_RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE)
    first = ping(lab, pair.a, pair.b, time.monotonic())
    assert first.ok and first.path == "direct" and first.punched, first
    nat = pair.topo.nat1 if side == 1 else pair.topo.nat2
    assert nat is not None
    move_cone_ports(lab, nat, pair.a if side == 1 else pair.b)
    pings, entry, seen_after = ping_until_repunched(lab, pair)
    repunch = entry.get("repunch") or {}
    assert repunch.get("last_outcome") == "direct again", (
        repunch, entry.get("connections"), show(pings), logs(pair.a), logs(pair.b))
    assert entry["path"] == "direct" and entry["punched"] is True, entry
    # Every ping was answered: the first ones waited for the new path.
    assert all(p.ok for p in pings), show(pings)
    after = ping(lab, pair.a, pair.b, time.monotonic())
    assert after.ok and after.path == "direct" and after.punched, after
    stats_a, stats_b = repunch_stats(lab, pair.a), repunch_stats(lab, pair.b)
    assert stats_a["dead"] + stats_b["dead"] >= 1, (stats_a, stats_b)
    assert stats_a["direct_again"] >= 1, stats_a
    print(f"\nport-restricted cones, nat{side} moved its ports: dead after "
          f"{repunch['detect_ms']} ms of silence ({repunch['last_reason']}), direct again "
          f"{repunch['direct_again_ms']} ms after that; `overlay peers` showed it "
          f"{seen_after:.1f} s after the change; pings: {show(pings)}; "
          f"A {stats_a}, B {stats_b}")


@pytest.mark.timeout(180)
def test_nothing_is_repunched_for_an_idle_peer(lab: Lab) -> None:
    pair = punched_pair(lab, NatKind.PORT_RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE)
    # Nobody uses the connection: once the last data (identify, pushes of
    # our changing addresses) is older than the busy window on both sides,
    # the peer does not matter.  Each poll is two short CLI runs.
    idle = poll(lambda: [repunch_stats(lab, d) for d in (pair.a, pair.b)],
                lambda both: all(s["watching"] == 1 and s["busy"] == 0 for s in both),
                timeout=IDLE_WITHIN)
    assert all(s["watching"] == 1 and s["busy"] == 0 for s in idle), idle
    move_cone_ports(lab, pair.topo.nat1, pair.a)
    time.sleep(15.0)  # past the 6 s a re-punch would need to start
    for daemon, before in zip((pair.a, pair.b), idle):
        stats = repunch_stats(lab, daemon)
        # Not even probed: a quiet path to an idle peer is QUIC's business.
        assert stats["probes"] == before["probes"], (before, stats)
        assert stats["dead"] == 0 and stats["repunches"] == 0, stats
        assert stats["peer_redialled"] == 0, stats
        sessions = api_call(lab, daemon, "holepunch_status")["counters"]["sessions"]
        assert sessions == 1, sessions  # the first punch only
    entry = peer_entry(lab, pair.a, pair.b.peer_id)
    assert "repunch" not in entry, entry


@pytest.mark.timeout(120)
def test_quic_migration_keeps_a_symmetric_clients_path_to_a_full_cone(lab: Lab) -> None:
    pair = punched_pair(lab, NatKind.SYMMETRIC_RANDOM, NatKind.FULL_CONE)
    before = peer_entry(lab, pair.b, pair.a.peer_id)
    flush_conntrack(lab, pair.topo.nat1)
    since = time.monotonic()
    pings = [ping(lab, pair.a, pair.b, since) for _ in range(3)]
    assert all(p.ok and p.path == "direct" for p in pings), show(pings)
    after = peer_entry(lab, pair.b, pair.a.peer_id)
    # B (the QUIC server) now sends to A's new public port.
    assert [c["addr"] for c in after["connections"]] != [c["addr"] for c in before["connections"]]
    stats_a, stats_b = repunch_stats(lab, pair.a), repunch_stats(lab, pair.b)
    assert stats_b["migrated"] == 1 and stats_b["repunches"] == 0, stats_b
    assert stats_a["repunches"] == 0 and stats_a["dead"] == 0, stats_a
    print(f"\nsymmetric client vs full cone, nat1 flushed: QUIC migrated "
          f"({before['connections'][0]['addr']} -> {after['connections'][0]['addr']}); "
          f"pings {show(pings)}")
