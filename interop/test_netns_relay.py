"""Circuit relay v2 across the lab's NATs: two nodes behind different NATs
reach each other through an introducer.

    server  203.0.113.10  introducer (`overlay daemon --introducer`)
      │ public switch
    nat1 203.0.113.1 (cone)      ── client  10.0.1.10  `--relay <introducer>`
    nat2 203.0.113.2 (symmetric) ── client2 10.0.2.10  `--relay <introducer>`

Neither client can dial the other (no route to a private LAN, and the
NATs admit only replies), so everything between them goes through the
introducer's relay: each holds a reservation there and advertises
`…/p2p/<introducer>/p2p-circuit`.  The daemons are the real CLI with their
own --home; the tests poll `overlay relay status --json`, never sleep.

Needs root and the Debian packages iproute2 and nftables; without root the
tests skip.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, NatMode, NatTopology, Node, build_nat_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    START_TIMEOUT,
    Daemon,
    lab_for_test,
    overlay,
    overlay_argv,
    overlay_json,
    poll_json,
    wait_reserved,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

CLI_TIMEOUT = 30.0
POLL_TRIES = 60


def start_daemon(lab: Lab, node: Node, ip: str, *extra: str,
                 relay_limits: dict[str, Any] | None = None, name: str | None = None,
                 autonat_lab: bool = False) -> Daemon:
    """``autonat_lab``: AutoNAT may dial back documentation-range addresses
    in the lab."""
    return daemons.start_daemon(
        lab, node, ip, "--dns", "off", "--no-mdns", *extra, name=name,
        config=AUTONAT_LAB_CONFIG if autonat_lab else None,
        settings=None if relay_limits is None else {"relay_limits": relay_limits},
        cli_timeout=CLI_TIMEOUT)


def reserved(lab: Lab, daemon: Daemon) -> dict[str, Any]:
    """`relay status` once the daemon holds a reservation."""
    return wait_reserved(lab, daemon, POLL_TRIES)


def serve_echo(lab: Lab, daemon: Daemon) -> None:
    """`overlay serve /test/echo/1.0.0 -- cat` on ``daemon``, once serving."""
    serve = lab.popen(daemon.node, overlay_argv(["--home", str(daemon.home), "serve",
                                                 "/test/echo/1.0.0", "--", "cat"]))
    serve.wait_for_line(lambda text: text.startswith("serving"), START_TIMEOUT)


def name_connect(daemon: Daemon, name: str, payload: bytes,
                 *flags: str) -> subprocess.CompletedProcess[bytes]:
    """`overlay name connect NAME /test/echo/1.0.0` from ``daemon``'s
    namespace with ``payload`` on its stdin."""
    return subprocess.run(
        ["ip", "netns", "exec", daemon.node.namespace,
         *overlay_argv(["--home", str(daemon.home), "name", "connect", name,
                        "/test/echo/1.0.0", *flags])],
        input=payload, capture_output=True, timeout=60, check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


@pytest.fixture
def topo(lab: Lab) -> NatTopology:
    return build_nat_topology(lab, second_lan=True, nat_mode=NatMode.CONE,
                              nat2_mode=NatMode.FULLY_RANDOM)


def start_three(lab: Lab, topo: NatTopology, relay_limits: dict[str, Any] | None = None
                ) -> tuple[Daemon, Daemon, Daemon]:
    """The introducer, then a client behind each NAT that reserves on it
    and bootstraps from it."""
    assert topo.client2 is not None
    intro = start_daemon(lab, topo.server, topo.server_ip, "--introducer",
                         relay_limits=relay_limits)
    a = start_daemon(lab, topo.client, topo.client_ip, "--relay", intro.addr,
                     "--bootstrap", intro.addr)
    b = start_daemon(lab, topo.client2, topo.client2.address(), "--relay", intro.addr,
                     "--bootstrap", intro.addr)
    return intro, a, b


def test_nat_to_nat_ping_through_the_introducer(lab: Lab, topo: NatTopology) -> None:
    intro, a, b = start_three(lab, topo)
    a_status, b_status = reserved(lab, a), reserved(lab, b)
    assert a_status["reservations"][0]["relay"] == intro.peer_id
    a_circuit = a_status["advertised"][0]
    assert a_circuit == f"{intro.addr}/p2p-circuit/p2p/{a.peer_id}"
    assert b_status["advertised"][0] == f"{intro.addr}/p2p-circuit/p2p/{b.peer_id}"

    # The cone side reaches the symmetric side and back, through the relay.
    pinged = overlay_json(lab, b, "ping", a_circuit, "--count", "2", "--interval", "0")
    assert pinged["peer_id"] == a.peer_id and pinged["count"] == 2, pinged
    assert pinged["path"] == "relayed", pinged
    pinged = overlay_json(lab, a, "ping", b_status["advertised"][0], "--count", "1")
    assert pinged["peer_id"] == b.peer_id, pinged

    server = overlay_json(lab, intro, "relay", "status")["server"]
    assert server["reservations_held"] == 2
    assert server["circuits_active"] >= 1 and server["circuits_total"] >= 1
    assert server["limits"]["data_bytes"] == 128 * 1024
    text = overlay(lab, intro, "relay", "status")
    assert text.returncode == 0 and "relay service: 2 reservations held" in text.stdout


def test_dht_name_resolve_and_10_mb_name_connect_through_the_relay(
        lab: Lab, topo: NatTopology) -> None:
    """A network that relays data (``relay_limits.data`` raised): B, behind
    the symmetric NAT, resolves A's name to A's circuit address and sends
    10 MB to a `cat` A serves; every byte comes back."""
    intro, a, b = start_three(lab, topo, relay_limits={"data": 64_000_000})
    a_circuit = reserved(lab, a)["advertised"][0]
    reserved(lab, b)

    value = f"from behind the symmetric NAT {secrets.token_hex(8)}"
    put = overlay_json(lab, b, "dht", "put", value)
    assert overlay_json(lab, a, "dht", "get", put["key"])["value"] == value

    registered = overlay_json(lab, a, "name", "register", "relayed.ovl")
    assert registered, registered
    resolved = overlay(lab, b, "name", "resolve", "relayed.ovl", "--json")
    assert resolved.returncode == 0, resolved.stderr
    assert a_circuit.removesuffix(f"/p2p/{a.peer_id}") in resolved.stdout, resolved.stdout

    serve_echo(lab, a)
    payload = hashlib.shake_256(secrets.token_bytes(16)).digest(10 * 1000 * 1000)
    done = name_connect(b, "relayed.ovl", payload, "--json")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    line = json.loads(done.stderr.decode().splitlines()[0])
    assert line["peer_id"] == a.peer_id and "/p2p-circuit" in line["addr"], line
    assert len(done.stdout) == len(payload)
    assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(payload).digest()

    server = overlay_json(lab, intro, "relay", "status")["server"]
    assert server["limits"]["data_bytes"] == 64_000_000
    assert server["circuits_total"] >= 1 and server["circuits_cut_by_limit"] == 0


def test_default_limits_cut_a_large_transfer_and_are_reported(
        lab: Lab, topo: NatTopology) -> None:
    """Under the spec's default (128 KiB per direction) 1 MB does not pass:
    the relay resets the circuit, `name connect` fails, the cut is counted."""
    intro, a, b = start_three(lab, topo)
    reserved(lab, a)
    assert reserved(lab, b)["reservations"][0]["limit"] == {"duration_s": 120.0,
                                                             "data_bytes": 131072}
    overlay_json(lab, a, "name", "register", "limited.ovl")
    serve_echo(lab, a)
    payload = secrets.token_bytes(1 << 20)
    done = name_connect(b, "limited.ovl", payload)
    assert done.returncode != 0 and len(done.stdout) < 131072, (done.returncode,
                                                                len(done.stdout))
    assert payload.startswith(done.stdout)
    server = poll_json(lab, intro, ["relay", "status"],
                       lambda r: bool(r["server"]["circuits_cut_by_limit"]),
                       tries=POLL_TRIES)["server"]
    assert server["circuits_cut_by_limit"] == 1, server
    text = overlay(lab, intro, "relay", "status").stdout
    assert "1 cut by a limit" in text and "131072 bytes" in text, text


def test_autonat_private_node_reserves_by_itself(lab: Lab) -> None:
    """No --relay: AutoNAT (two public servers) finds the node behind the
    NAT private, and auto-relay reserves on the introducer it bootstrapped
    from; a public node that never met it pings it at the advertised
    circuit address."""
    topo = build_nat_topology(lab)
    intro = start_daemon(lab, topo.server, topo.server_ip, "--introducer", name="intro",
                         autonat_lab=True)
    c = start_daemon(lab, topo.server, topo.server_ip, "--bootstrap", intro.addr, name="c",
                     autonat_lab=True)
    b = start_daemon(lab, topo.client, topo.client_ip, "--bootstrap", intro.addr,
                     "--bootstrap", c.addr, autonat_lab=True)
    status = poll_json(lab, b, ["relay", "status"],
                       lambda r: bool(r["reservations"] and r["advertised"]),
                       tries=POLL_TRIES * 2)
    assert status["private"] is True and status["static_relays"] == [], status
    assert [r["relay"] for r in status["reservations"]] == [intro.peer_id], status
    circuit = status["advertised"][0]
    assert circuit == f"{intro.addr}/p2p-circuit/p2p/{b.peer_id}"
    # c already holds b's outbound (direct) connection; a newcomer has none.
    d = start_daemon(lab, topo.server, topo.server_ip, name="d")
    pinged = overlay_json(lab, d, "ping", circuit, "--count", "1")
    assert pinged["peer_id"] == b.peer_id and pinged["path"] == "relayed", pinged
