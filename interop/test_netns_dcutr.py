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

import json
import sys
import time
from collections.abc import Iterator, Sequence
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
    NatMode,
    NatTopology,
    Node,
    ToolMissing,
    build_nat_topology,
    lab_namespaces,
    require_lab,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

START_TIMEOUT = 15.0
CLI_TIMEOUT = 30.0
POLL_TRIES = 80

_STATUS = """
import asyncio, json, sys
from overlay.daemon.client import ApiClient
async def main():
    async with await ApiClient.connect(sys.argv[1]) as api:
        print(json.dumps(await api.call("holepunch_status")))
asyncio.run(main())
"""


@dataclass(frozen=True)
class Daemon:
    node: Node
    home: Path
    peer_id: str
    addr: str
    proc: LabProcess


def _overlay(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "overlay.cli", *args]


def start_daemon(lab: Lab, node: Node, ip: str, *extra: str, name: str | None = None,
                 autonat_lab: bool = True) -> Daemon:
    home = lab.workdir / (name or node.name)
    if autonat_lab:
        home.mkdir(parents=True)
        (home / "config.toml").write_text('version = 1\nautonat = "lab"\n')
    argv = ["daemon", "--home", str(home), "--json", "--listen", f"/ip4/{ip}/udp/0/quic-v1",
            "--dns", "off", "--no-mdns", *extra]
    proc = lab.popen(node, _overlay(argv))
    line = proc.wait_for_line(lambda text: text.startswith("{") and '"ready"' in text,
                              START_TIMEOUT)
    ready = json.loads(line)
    return Daemon(node, home, ready["peer_id"], ready["addrs"][0], proc)


def overlay_json(lab: Lab, daemon: Daemon, *args: str) -> Any:
    done = lab.run(daemon.node, _overlay(["--home", str(daemon.home), *args, "--json"]),
                   timeout=CLI_TIMEOUT)
    assert done.returncode == 0, f"overlay {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return json.loads(done.stdout)


def holepunch_status(lab: Lab, daemon: Daemon) -> Any:
    done = lab.run(daemon.node, [sys.executable, "-c", _STATUS, str(daemon.home / "api.sock")],
                   timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def reserved(lab: Lab, daemon: Daemon) -> str:
    """The daemon's circuit address once it holds a reservation."""
    reply: dict[str, Any] = {}
    for _ in range(POLL_TRIES):
        reply = overlay_json(lab, daemon, "relay", "status")
        if reply["reservations"] and reply["advertised"]:
            return str(reply["advertised"][0])
    raise AssertionError(f"no reservation: {reply}\n{daemon.proc.describe()}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    missing: ToolMissing | None = None
    try:
        require_lab()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    except ToolMissing as exc:
        missing = exc
    if missing is not None:
        pytest.fail(str(missing), pytrace=False)
    with Lab() as built:
        yield built
    left = [name for name in lab_namespaces() if name.startswith(built.run_id)]
    assert not left, f"namespaces left behind: {left}"


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
    to_b: dict[str, Any] = {}
    for _ in range(POLL_TRIES):
        to_b = _peer(lab, a, b.peer_id)
        if to_b.get("punched"):
            break
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
          f"connection arrived (relayed RTT {done['rtt_ms']} ms, attempt {done['attempts']}, "
          f"{b_status['counters']['punch_packets']} punch packets); "
          f"seen by `overlay peers` {seen_after * 1000:.0f} ms after `overlay connect`")
    # The relayed connection closes once idle.
    for _ in range(POLL_TRIES):
        to_b = _peer(lab, a, b.peer_id)
        if [c["path"] for c in to_b.get("connections", [])] == ["direct"]:
            break
    assert [c["path"] for c in to_b["connections"]] == ["direct"], to_b


def test_a_symmetric_nat_stays_relayed_and_says_why(lab: Lab) -> None:
    topo = build_nat_topology(lab, second_lan=True, nat_mode=NatMode.CONE,
                              nat2_mode=NatMode.FULLY_RANDOM)
    _, a, b, b_circuit = _three(lab, topo)
    connected = overlay_json(lab, a, "connect", b_circuit)
    assert connected["path"] == "relayed"
    status: dict[str, Any] = {}
    for _ in range(POLL_TRIES):
        status = holepunch_status(lab, b)
        if status["recent"]:
            break
    done = status["recent"][-1]
    assert not done["ok"] and done["attempts"] == 3, status
    assert "no direct connection after 3 attempts" in done["how"], status
    print(f"\nsymmetric NAT: still relayed after {done['elapsed_ms']} ms: {done['how']}")
    to_b = _peer(lab, a, b.peer_id)
    assert to_b["path"] == "relayed" and to_b["punched"] is False, to_b
    pinged = overlay_json(lab, a, "ping", f"/p2p/{b.peer_id}", "--count", "1")
    assert pinged["path"] == "relayed", pinged
