"""DCUtR with py-libp2p across the lab's NATs, in both roles.

    server  203.0.113.10  overlay introducer (relay)
      │ public switch
    nat1 203.0.113.1  restricted cone ── client   10.0.1.10  overlay daemon, --relay
    nat2 203.0.113.2  port-restr. cone ── client2  10.0.2.10  py-libp2p 0.8.1
                                                  (interop/pylibp2p_dcutr_peer.py)

py-libp2p dials QUIC from a fresh socket each time, never from its
listening one, so its NAT never maps the port it advertises and nobody can
reach it there.  What can punch is its dial: it leaves py-libp2p's NAT on a
new mapping, and gets through our NAT once we have sent something to
py-libp2p's IP, which an address-dependent (restricted cone) filter needs
and a port-restricted one does not accept.  Hence the NAT kinds above.
Stock py-libp2p puts only TCP predictions (observed IP, listen port) in
its CONNECT; a QUIC-only host sends its 10.x listen address, which we
drop.  The peer script applies the same prediction to QUIC
(``--predict-quic``): the port it names is never mapped, but its IP is
what our punch packets need.  Identify still advertises the LAN address,
so our unilateral dial has nothing to try and only DCUtR opens our NAT.

- overlay starts (py-libp2p dials our circuit address, we are the spec's
  B): CONNECT / CONNECT / SYNC on the wire, py-libp2p dials us at the
  address our CONNECT named, our punch packets have opened our NAT to its
  IP, and the connection is direct and punched on both sides.
- With our NAT port-restricted too, its dial never gets in; it also shows
  that py-libp2p answers one CONNECT per stream, not the spec's retries.
- py-libp2p starts (we dial its circuit address): the exchange completes
  and its QUIC dial reaches us through both NATs, but py-libp2p 0.8.1's
  ``dial_addr_as_responder`` refuses QUIC ("pre-multiplexed transports")
  and closes the connection it just made; our dial to the address it
  advertised dies at its NAT.  The connection stays relayed.

Needs root, iproute2 and nftables (else skipped) and py-libp2p's
virtualenv (``interop/setup.sh``, built by the ``pylibp2p_python`` fixture).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, LabError, LabProcess, NatKind, NatTopology, build_nat_topology  # noqa: E402
from netns import daemons  # noqa: E402
from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    Daemon,
    api_call,
    lab_for_test,
    overlay_json,
    poll,
    udp_port,
    wait_reserved,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]

PEER_SCRIPT = HERE / "pylibp2p_dcutr_peer.py"
CLI_TIMEOUT = 30.0
POLL_TRIES = 80
START_TIMEOUT = 60.0
EVENT_TIMEOUT = 45.0
"""py-libp2p's DCUtR starts within 2 s (its auto-drive loop) but may first
spend its 10 s unilateral dial; its rounds take 5 s each."""


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test()


def start_daemon(lab: Lab, topo: NatTopology, *extra: str, server: bool = False) -> Daemon:
    node, ip = (topo.server, topo.server_ip) if server else (topo.client, topo.client_ip)
    return daemons.start_daemon(lab, node, ip, "--dns", "off", "--no-mdns", *extra,
                                config=AUTONAT_LAB_CONFIG, cli_timeout=CLI_TIMEOUT)


def _topology(lab: Lab) -> NatTopology:
    return build_nat_topology(lab, second_lan=True, nat_mode=NatKind.RESTRICTED_CONE,
                              nat2_mode=NatKind.PORT_RESTRICTED_CONE)


def start_pylibp2p(lab: Lab, topo: NatTopology, python: str, relay: Daemon,
                   *args: str) -> tuple[LabProcess, dict[str, Any]]:
    assert topo.client2 is not None and topo.nat2 is not None
    proc = lab.popen(topo.client2, [
        python, str(PEER_SCRIPT), "--listen", f"/ip4/{topo.client2.address()}/udp/0/quic-v1",
        "--relay", relay.addr, "--predict-quic", "--wan-ip", topo.nat2.address("public"),
        *args])
    return proc, event(proc, "ready", timeout=START_TIMEOUT)


def event(proc: LabProcess, name: str, check: Callable[[dict[str, Any]], bool] = lambda e: True,
          timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
    """The first ``name`` event the peer printed (so far or within
    ``timeout``) that passes ``check``."""
    def matches(line: str) -> bool:
        if not line.startswith("{"):
            return False
        found = json.loads(line)
        return bool(found.get("event") == name and check(found))

    for line in proc.lines:
        if matches(line):
            return dict(json.loads(line))
    return dict(json.loads(proc.wait_for_line(matches, timeout)))


def events(proc: LabProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in (json.loads(line) for line in proc.lines if line.startswith("{"))
            if e.get("event") == name]


def with_context(lab: Lab, daemon: Daemon, py: LabProcess,
                 wait: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``wait()``; if it fails, fail with what our side says as well."""
    try:
        return wait()
    except LabError as exc:
        status = api_call(lab, daemon, "holepunch_status")
        pytest.fail(f"{exc}\n\nour holepunch_status: {json.dumps(status)}\n"
                    f"our daemon's log:\n{daemon.proc.stderr_text()[-4000:]}")


def _peer(lab: Lab, daemon: Daemon, peer_id: str) -> dict[str, Any]:
    peers = {p["peer_id"]: p for p in overlay_json(lab, daemon, "peers")["peers"]}
    return dict(peers.get(peer_id, {}))


def _quic(ip: str, port: int) -> str:
    return f"/ip4/{ip}/udp/{port}/quic-v1"


def test_overlay_initiates_and_pylibp2p_punches_through_to_it(
        lab: Lab, pylibp2p_python: str) -> None:
    topo = _topology(lab)
    intro = start_daemon(lab, topo, "--introducer", server=True)
    ours = start_daemon(lab, topo, "--relay", intro.addr)
    circuit = str(wait_reserved(lab, ours, POLL_TRIES)["advertised"][0])
    py, ready = start_pylibp2p(lab, topo, pylibp2p_python, intro, "--dial-circuit", circuit)
    py_id = ready["peer_id"]
    py_port = udp_port(ready["addrs"][0])
    ours_public = _quic("203.0.113.1", ours.port)
    py_announced = _quic("203.0.113.2", py_port)

    dialed = event(py, "dialed")
    assert "error" not in dialed and dialed["peer_id"] == ours.peer_id, py.describe()
    # The exchange as py-libp2p saw it: our CONNECT names the address our NAT
    # maps for our listening socket (as the relay observed it).
    connect = event(py, "recv", lambda e: e["type"] == "CONNECT")
    assert ours_public in connect["addrs"], (connect, py.describe())
    answer = event(py, "sent", lambda e: e["type"] == "CONNECT")
    assert answer["addrs"] == [py_announced], answer
    with_context(lab, ours, py, lambda: event(py, "recv", lambda e: e["type"] == "SYNC"))
    # On SYNC py-libp2p dials every address we sent, as the QUIC client; the
    # public one gets through our NAT because our punch packets went to
    # py-libp2p's IP first.
    won = event(py, "dial", lambda e: e["ok"] and e["addr"].startswith(ours_public))
    assert won["as_responder"] is False, won
    assert event(py, "predicted")["addrs"] == [py_announced]
    pinged = event(py, "ping", lambda e: e["peer"] == ours.peer_id)
    assert "error" not in pinged and pinged["rtt_ms"] > 0, (pinged, py.describe())
    assert any(a.startswith(ours_public) for a in pinged["addrs"]), pinged

    to_py = poll(lambda: _peer(lab, ours, py_id), lambda p: bool(p.get("punched")),
                 tries=POLL_TRIES)
    status = api_call(lab, ours, "holepunch_status")
    assert to_py.get("path") == "direct" and to_py.get("punched") is True, (to_py, status)
    done = status["recent"][-1]
    assert done["role"] == "initiator" and done["ok"] and done["how"] == "punched", status
    # It arrived from py-libp2p's NAT, on the mapping of the socket it dialled
    # from: not the port it listens on, which its NAT never mapped.
    direct = [c["addr"] for c in to_py["connections"] if c["path"] == "direct"]
    assert len(direct) == 1 and direct[0].startswith("/ip4/203.0.113.2/udp/"), to_py
    assert udp_port(direct[0]) != py_port, to_py
    again = overlay_json(lab, ours, "ping", f"/p2p/{py_id}", "--count", "2", "--interval", "0")
    assert again["path"] == "direct" and again["punched"] is True, again
    print(f"\npy-libp2p answered, overlay initiated: punched on attempt {done['attempts']}, "
          f"{done['exchange_ms']} ms after our CONNECT (relayed RTT {done['rtt_ms']} ms); "
          f"py-libp2p's ping over it {pinged['rtt_ms']:.1f} ms")


def test_pylibp2p_initiates_its_quic_dial_reaches_us_and_it_closes_it(
        lab: Lab, pylibp2p_python: str) -> None:
    topo = _topology(lab)
    intro = start_daemon(lab, topo, "--introducer", server=True)
    ours = start_daemon(lab, topo, "--relay", intro.addr)
    wait_reserved(lab, ours, POLL_TRIES)
    py, ready = start_pylibp2p(lab, topo, pylibp2p_python, intro, "--reserve")
    assert event(py, "reserved")["status"] == 100
    py_id = ready["peer_id"]
    py_announced = _quic("203.0.113.2", udp_port(ready["addrs"][0]))
    ours_public = _quic("203.0.113.1", ours.port)

    connected = overlay_json(lab, ours, "connect", f"{intro.addr}/p2p-circuit/p2p/{py_id}")
    assert connected["path"] == "relayed", connected
    # py-libp2p's auto-drive loop starts DCUtR on the relayed connection.
    sent = with_context(lab, ours, py, lambda: event(py, "sent", lambda e: e["type"] == "CONNECT"))
    assert sent["addrs"] == [py_announced], sent
    answer = event(py, "recv", lambda e: e["type"] == "CONNECT")
    assert ours_public in answer["addrs"], answer
    event(py, "sent", lambda e: e["type"] == "SYNC")
    # Its dial as the spec's B: the QUIC handshake with us completes through
    # both NATs (our own dial to its IP opened ours), and then py-libp2p
    # closes the connection: it upgrades hole-punched dials "as responder",
    # which it cannot do for QUIC.
    refused = with_context(lab, ours, py, lambda: event(
        py, "dial", lambda e: e["as_responder"] and e["addr"].startswith(ours_public)
        and "pre-multiplexed" in e.get("error", "")))
    assert refused["ok"] is False, refused
    # Our dial towards the address it advertised dies at its NAT, so the
    # connection stays relayed, and our responder says so: a direct
    # connection counts only once it stayed open (confirm_wait), and
    # py-libp2p closes its own at once (docs/nat.md, "DCUtR interop").
    status = poll(lambda: api_call(lab, ours, "holepunch_status"),
                  lambda s: any(r["role"] == "responder" for r in s["recent"]), timeout=60)
    first = next(r for r in status["recent"] if r["role"] == "responder")
    assert not first["ok"], status
    to_py = _peer(lab, ours, py_id)
    assert to_py["path"] == "relayed" and to_py["punched"] is False, (to_py, status)
    assert not [e for e in events(py, "dial") if e["ok"]], py.describe()
    print(f"\npy-libp2p initiated: its dial to {refused['addr']} ended {refused['error']!r}; "
          f"we say: {first['how']}")


def test_behind_a_port_restricted_cone_pylibp2p_cannot_punch_to_us(
        lab: Lab, pylibp2p_python: str) -> None:
    """Our NAT now filters by port too: py-libp2p's dial from a fresh port
    is dropped whatever we send to the port it advertised.  It also shows
    how py-libp2p retries: it keeps dialling on its own for three rounds
    (about 21 s) without reading the stream, so our second CONNECT on that
    stream, as the spec has retries, goes unanswered."""
    topo = build_nat_topology(lab, second_lan=True, nat_mode=NatKind.PORT_RESTRICTED_CONE,
                              nat2_mode=NatKind.PORT_RESTRICTED_CONE)
    intro = start_daemon(lab, topo, "--introducer", server=True)
    ours = start_daemon(lab, topo, "--relay", intro.addr)
    circuit = str(wait_reserved(lab, ours, POLL_TRIES)["advertised"][0])
    py, ready = start_pylibp2p(lab, topo, pylibp2p_python, intro, "--dial-circuit", circuit)
    py_id = ready["peer_id"]
    ours_public = _quic("203.0.113.1", ours.port)
    assert "error" not in event(py, "dialed"), py.describe()
    with_context(lab, ours, py, lambda: event(py, "recv", lambda e: e["type"] == "SYNC"))
    # Our punch window (5 s), back-off (1 s), then CONNECT again and 10 s
    # for the answer.
    status = poll(lambda: api_call(lab, ours, "holepunch_status"),
                  lambda s: bool(s["recent"]), timeout=60)
    done = status["recent"][-1]
    assert done["role"] == "initiator" and not done["ok"], status
    assert done["attempts"] == 2 and "did not answer CONNECT" in done["how"], status
    assert status["counters"]["punch_packets"] > 0, status
    # py-libp2p read one CONNECT and one SYNC; its dials to our public
    # address never connected (each round cancels them after 5 s).
    assert len([e for e in events(py, "recv") if e["type"] == "CONNECT"]) == 1, py.describe()
    event(py, "dial", lambda e: e["addr"].startswith(ours_public))  # read up to it
    tried = [e for e in events(py, "dial") if e["addr"].startswith(ours_public)]
    assert tried and not any(e["ok"] for e in tried), py.describe()
    to_py = _peer(lab, ours, py_id)
    assert to_py["path"] == "relayed" and to_py["punched"] is False, to_py
    print(f"\nport-restricted on our side: {len(tried)} py-libp2p dial(s) to us failed; "
          f"we say: {done['how']} (attempt {done['attempts']})")
