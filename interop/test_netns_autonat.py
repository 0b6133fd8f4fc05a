"""AutoNAT v2 across the lab's NAT: real daemons with ``autonat = "lab"``.

    server 203.0.113.10   daemons A and C (public)
      │ public switch
    nat1 203.0.113.1 ── client 10.0.1.10   daemon B (port-restricted cone)

B bootstraps from A and C.  Each node asks the others to dial its
candidates back.  A and C, on the public segment, confirm each other's
listen address: public.  B's candidates are its LAN address (no route to
it from the public side; another IP than the one A sees, so B pays dial
data first) and the mapping the NAT gave it, which A and C observed; the
NAT filters the dial-back from a fresh source port, so both are refuted:
private, and neither is advertised.

The lab config (``autonat = "lab"``) is what lets documentation and 10.x
addresses be tested at all; on the Internet they are never dialled.
Needs root, iproute2 and nftables; without root the tests skip.
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
VERDICT_TIMEOUT = 60.0
"""Probes start when identify lists a server; a refutation behind a
filtering NAT waits out the server's 10 s dial timeout."""


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


def start_daemon(lab: Lab, node: Node, name: str, ip: str,
                 bootstrap: Sequence[str] = ()) -> Daemon:
    home = lab.workdir / name
    home.mkdir(parents=True)
    # init keeps an existing config, so the lab switch is in place before
    # the daemon's first start.
    (home / "config.toml").write_text('version = 1\nautonat = "lab"\nmdns = false\n')
    argv = ["daemon", "--home", str(home), "--json", "--listen", f"/ip4/{ip}/udp/0/quic-v1",
            "--dns", "off"]
    for addr in bootstrap:
        argv += ["--bootstrap", addr]
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
    deadline = time.monotonic() + VERDICT_TIMEOUT
    while True:
        reply = overlay_json(lab, daemon, *args)
        if until(reply) or time.monotonic() > deadline:
            return reply


def bare(addr: str) -> str:
    return addr.split("/p2p/")[0]


def test_natted_node_is_private_and_public_nodes_are_public(lab: Lab) -> None:
    topo = build_nat_topology(lab)
    a = start_daemon(lab, topo.server, "a", topo.server_ip)
    c = start_daemon(lab, topo.server, "c", topo.server_ip, [a.addr])
    b = start_daemon(lab, topo.client, "b", topo.client_ip, [a.addr, c.addr])

    b_status = poll(lab, b, ["id"],
                    lambda r: r["reachability"] == "private" and len(r["reachability_reasons"]) >= 2)
    detail = overlay_json(lab, b, "id")
    a_id = poll(lab, a, ["id"], lambda r: r["reachability"] == "public")
    c_id = poll(lab, c, ["id"], lambda r: r["reachability"] == "public")

    b_listen = bare(b.addr)
    assert b_status["reachability"] == "private", b_status
    reasons = " | ".join(b_status["reachability_reasons"])
    assert f"{b_listen} not reachable" in reasons, reasons
    mapped = [r for r in b_status["reachability_reasons"]
              if r.startswith(f"/ip4/{topo.nat1_public_ip}/")]
    assert mapped and "not reachable" in mapped[0], reasons
    # Nothing refuted is advertised: not the LAN address, not the mapping.
    advertised = {bare(x) for x in detail["addrs"]}
    assert b_listen not in advertised
    assert not any(x.startswith(f"/ip4/{topo.nat1_public_ip}/") for x in advertised)

    for node, reply in ((a, a_id), (c, c_id)):
        assert reply["reachability"] == "public", reply
        assert any(r.startswith(bare(node.addr)) and "dialled back" in r
                   for r in reply["reachability_reasons"]), reply
        assert bare(node.addr) in {bare(x) for x in reply["addrs"]}
    for daemon in (b, c, a):
        assert daemon.proc.stop() == 0, daemon.proc.describe()
