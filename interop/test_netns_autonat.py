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

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, Node, build_nat_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    Daemon,
    bare,
    lab_for_test,
    overlay_json,
    poll_json,
    stop_daemons,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

VERDICT_TIMEOUT = 60.0
"""Probes start when identify lists a server; a refutation behind a
filtering NAT waits out the server's 10 s dial timeout."""


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


def start_daemon(lab: Lab, node: Node, name: str, ip: str,
                 bootstrap: Sequence[str] = ()) -> Daemon:
    flags = [flag for addr in bootstrap for flag in ("--bootstrap", addr)]
    return daemons.start_daemon(lab, node, ip, "--dns", "off", *flags, name=name,
                                config=AUTONAT_LAB_CONFIG + "mdns = false\n")


def test_natted_node_is_private_and_public_nodes_are_public(lab: Lab) -> None:
    topo = build_nat_topology(lab)
    a = start_daemon(lab, topo.server, "a", topo.server_ip)
    c = start_daemon(lab, topo.server, "c", topo.server_ip, [a.addr])
    b = start_daemon(lab, topo.client, "b", topo.client_ip, [a.addr, c.addr])

    b_status = poll_json(lab, b, ["id"], lambda r: r["reachability"] == "private"
                         and len(r["reachability_reasons"]) >= 2, timeout=VERDICT_TIMEOUT)
    detail = overlay_json(lab, b, "id")
    a_id = poll_json(lab, a, ["id"], lambda r: r["reachability"] == "public",
                     timeout=VERDICT_TIMEOUT)
    c_id = poll_json(lab, c, ["id"], lambda r: r["reachability"] == "public",
                     timeout=VERDICT_TIMEOUT)

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
    stop_daemons(b, c, a)
